"""examples/console_demo.py: what scripts/demo --console runs."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

DEMO = Path(__file__).resolve().parents[2] / "examples" / "console_demo.py"
FIVE = ["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]


def load_demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("console_demo", DEMO)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestConsoleDemo:
    async def test_each_socket_gets_only_its_users_five_events(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Three users run at once; each socket holds exactly its own five events."""
        outcome = await load_demo().main()
        for user_id, events in outcome["sockets"].items():
            assert FIVE == [event["type"] for event in events]
            assert {user_id} == {event["user_id"] for event in events}
        assert (3, 3, 0) == (
            outcome["metrics"]["total_engines_created"],
            outcome["metrics"]["total_engines_cleaned"],
            outcome["metrics"]["active_engines_count"],
        )
        assert "== events on alice's socket" in capsys.readouterr().out

    def test_long_values_are_cut_with_an_ellipsis(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A value longer than the line's width ends in an ellipsis; shorter ones are whole."""
        demo = load_demo()
        assert "short" == demo.shorten("short", 10)
        assert "123456789…" == demo.shorten("1234567890X", 10)
        assert "1234567890" == demo.shorten("1234567890", 10)

    async def test_no_printed_value_is_cut_silently(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Every event line shows its whole data or ends in an ellipsis, and one does."""
        demo = load_demo()
        await demo.main()
        lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  #")]
        data = [line.split(None, 2)[2] for line in lines]
        assert all(len(text) <= demo.WIDTH for text in data)
        cut = [text for text in data if text.endswith("…")]
        assert cut
        assert all(len(text) == demo.WIDTH for text in cut)
        whole = [text for text in data if not text.endswith("…")]
        assert all(text.endswith(("}", "]", '"', "null")) for text in whole)

    def test_runs_as_a_script(self) -> None:
        """python examples/console_demo.py exits 0 and prints the metrics."""
        done = subprocess.run(  # noqa: S603 - our own example, run with this interpreter
            [sys.executable, str(DEMO)], capture_output=True, text=True, timeout=60, check=False
        )
        assert 0 == done.returncode, done.stderr
        assert '"total_engines_cleaned": 3' in done.stdout
