"""``python -m examples.chat`` as a newcomer meets it: help, bad settings, a busy port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from .conftest import ROOT, SECRET

PROG = "python -m examples.chat"


def run_chat(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "CHAT_SECRET": SECRET, **env}
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "examples.chat", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class TestHelp:
    def test_help_says_how_to_run_and_configure_it(self) -> None:
        """--help lists the options and the CHAT_* settings, not the server's internals."""
        done = run_chat("--help")
        assert 0 == done.returncode
        for expected in ("--host", "--port", "--log-level", "CHAT_SECRET", "ENGINESCOPE_"):
            assert expected in done.stdout
        assert "uvicorn.Server" not in done.stdout
        assert "subclass" not in done.stdout


class TestBadSettings:
    def test_a_short_secret_is_one_line_and_exit_2(self) -> None:
        """CHAT_SECRET=short: exit 2 with one line naming the variable; no traceback."""
        done = run_chat(CHAT_SECRET="short")  # noqa: S106 - the bad value under test
        assert (2, "") == (done.returncode, done.stdout)
        assert 1 == len(done.stderr.splitlines()), done.stderr
        assert done.stderr.startswith(f"{PROG}: CHAT_SECRET must be at least 32 characters")

    def test_a_bad_engine_setting_is_named_too(self) -> None:
        """A bad ENGINESCOPE_* variable is refused the same way, before anything starts."""
        done = run_chat(ENGINESCOPE_MAX_ENGINES_PER_USER="many")
        assert 2 == done.returncode
        assert [f"{PROG}: ENGINESCOPE_MAX_ENGINES_PER_USER"] == [
            line.split(":", 2)[0] + ":" + line.split(":", 2)[1] for line in done.stderr.splitlines()
        ]


class TestBusyPort:
    def test_a_port_in_use_is_said_before_any_url(self) -> None:
        """With the port taken, exit 1 saying so; the URL is never printed."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            done = run_chat("--port", str(port))
        assert (1, "") == (done.returncode, done.stdout)
        assert f"{PROG}: 127.0.0.1:{port} is already in use; choose another with --port\n" == (
            done.stderr
        )
