"""Fixtures for the end-to-end tests: a real uvicorn server running the chat example."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the example is a folder of the repository, not installed
    sys.path.insert(0, str(ROOT))

SECRET = "e2e-secret-that-is-long-enough-for-the-chat-app"  # noqa: S105 - a test key
STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ChatServer:
    """``python -m examples.chat`` in a subprocess on a free port of 127.0.0.1."""

    def __init__(self, log_path: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"
        self.log_path = log_path
        self._log = log_path.open("wb")
        environment = {**os.environ, "CHAT_SECRET": SECRET, "PYTHONUNBUFFERED": "1", **env}
        command = [sys.executable, "-m", "examples.chat", "--port", str(self.port)]
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            command, cwd=ROOT, env=environment, stdout=self._log, stderr=subprocess.STDOUT
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"chat server exited with {self.process.returncode}:\n{self.log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        pytest.fail(f"chat server not healthy after {STARTUP_TIMEOUT}s:\n{self.log}")

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode

    def login(self, name: str) -> dict[str, str]:
        response = httpx.post(f"{self.url}/login", json={"name": name}, timeout=5)
        response.raise_for_status()
        return dict(response.json())


StartServer = Callable[..., ChatServer]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """``start_server(CHAT_TOOL_DELAY_SECONDS="1", ...)``: a healthy server, stopped after."""
    servers: list[ChatServer] = []

    def start(**env: str) -> ChatServer:
        server = ChatServer(tmp_path / f"server-{len(servers)}.log", env)
        servers.append(server)
        server.wait_healthy()
        return server

    yield start
    for server in servers:
        server.terminate()


@pytest.fixture(scope="module")
def chat_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatServer]:
    """One server shared by a module's tests: short tool delay and auth timeout."""
    log_path = tmp_path_factory.mktemp("chat") / "server.log"
    server = ChatServer(
        log_path,
        {
            "CHAT_TOOL_DELAY_SECONDS": "0.05",
            "CHAT_AUTH_TIMEOUT_SECONDS": "1",
            "CHAT_LOGIN_ATTEMPTS_PER_MINUTE": "1000",  # the module logs in more than 20 times
        },
    )
    try:
        server.wait_healthy()
        yield server
    finally:
        server.terminate()
