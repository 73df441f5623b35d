"""The cost of value redaction per event: the emitter building a run's five events with
every free-text field and every string value checked for credentials (ours), side by side
with the same emitter and the value rule switched off (baseline: key redaction, truncation
and the envelope only).

Two payloads: plain text, as most events carry, where each string costs a few substring
tests; and text full of cues (separators, key words, a URL, a bearer header), where the
patterns run and replace. The bridge accepts each event and keeps nothing.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import pytest
from enginescope.engines import UserWebSocketEmitter

# The module, not the function of the same name that enginescope.engines re-exports.
sanitize_module = importlib.import_module("enginescope.engines.sanitize")

RUNS = 1000
EVENTS_PER_RUN = 5
PLAIN = {
    "message": "Can you summarise the refund policy for me?",
    "thought": "Reading your message and looking up the policy.",
    "parameters": {"query": "refund policy", "limit": 5},
    "result": ["Refunds are accepted within 30 days.", "Keep your receipt."],
    "answer": "Refunds are accepted within 30 days of purchase; keep your receipt.",
}
# Split so that no complete credential sits in this file's source.
_TOKEN = "9b8a7c6d" + "5e4f3a2b1c0d"
CUED = {
    "message": "Connect to postgres://app:pw-123@db:5432/prod and report: status",
    "thought": f"Calling the API with Authorization: Bearer {_TOKEN} (timeout=30)",
    "parameters": {"url": "https://api.example.com/v1?key=value", "header": f"Bearer {_TOKEN}"},
    "result": ["status: ok, password=hunter2", "user_id=42; session: fine"],
    "answer": "Done: the database at postgres://app:pw-123@db/prod answered in 12 ms.",
}


class NullBridge:
    """Accepts every event for one connection and keeps nothing."""

    async def send_to_user(self, user_id: str, event: Mapping[str, Any]) -> int:
        return 1


async def five_events(emitter: UserWebSocketEmitter, payload: Mapping[str, Any]) -> int:
    reached = await emitter.notify_agent_started("assistant", message=payload["message"])
    reached += await emitter.notify_agent_thinking("assistant", payload["thought"], step=1)
    reached += await emitter.notify_tool_executing("assistant", "search", payload["parameters"])
    reached += await emitter.notify_tool_completed(
        "assistant", "search", payload["result"], duration_ms=3.5
    )
    reached += await emitter.notify_agent_completed("assistant", payload["answer"], duration_ms=9.0)
    return reached


def emit_runs(bench: Any, payload: Mapping[str, Any], role: str, **extra: Any) -> None:
    emitters = [
        UserWebSocketEmitter(f"user-{i}", "thread-1", f"run-{i}", NullBridge()) for i in range(RUNS)
    ]

    async def batch() -> int:
        reached = 0
        for emitter in emitters:
            reached += await five_events(emitter, payload)
        return reached

    reached = bench.batches(batch, ops=RUNS * EVENTS_PER_RUN, rounds=30, role=role, **extra)

    assert RUNS * EVENTS_PER_RUN == reached


@pytest.fixture
def without_value_redaction(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sanitiser with the value rule replaced by the identity (keys still redacted)."""
    monkeypatch.setattr(sanitize_module, "redact_credentials", lambda text: text)


@pytest.mark.benchmark(group="event with value redaction: plain text")
def test_events_with_value_redaction_plain(bench: Any) -> None:
    """Five events per run, every string checked for credentials; none found."""
    emit_runs(bench, PLAIN, "ours", targets={"max_ratio": 1.3})
    assert PLAIN["thought"] == sanitize_module.redact_text(PLAIN["thought"])


@pytest.mark.benchmark(group="event with value redaction: plain text")
@pytest.mark.usefixtures("without_value_redaction")
def test_events_without_value_redaction_plain(bench: Any) -> None:
    """Baseline: the same events with the value rule off."""
    emit_runs(bench, PLAIN, "baseline")


@pytest.mark.benchmark(group="event with value redaction: text with credentials")
def test_events_with_value_redaction_cued(bench: Any) -> None:
    """Five events per run whose texts hold URLs, separators and bearer tokens."""
    emit_runs(bench, CUED, "ours", targets={"max_ratio": 3.5})
    assert _TOKEN not in sanitize_module.redact_text(CUED["thought"])


@pytest.mark.benchmark(group="event with value redaction: text with credentials")
@pytest.mark.usefixtures("without_value_redaction")
def test_events_without_value_redaction_cued(bench: Any) -> None:
    """Baseline: the same events with the value rule off (the tokens go out)."""
    emit_runs(bench, CUED, "baseline")
    assert _TOKEN in sanitize_module.redact_text(CUED["thought"])
