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

    def test_runs_as_a_script(self) -> None:
        """python examples/console_demo.py exits 0 and prints the metrics."""
        done = subprocess.run(  # noqa: S603 - our own example, run with this interpreter
            [sys.executable, str(DEMO)], capture_output=True, text=True, timeout=60, check=False
        )
        assert 0 == done.returncode, done.stderr
        assert '"total_engines_cleaned": 3' in done.stdout
