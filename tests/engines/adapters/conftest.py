"""Helpers for the adapter tests: an engine per user on one recording bridge."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from enginescope.engines import (
    Agent,
    AgentRegistry,
    UserExecutionContext,
    UserExecutionEngine,
    UserWebSocketEmitter,
)
from enginescope.engines.testing import RecordingBridge

MakeEngine = Callable[..., UserExecutionEngine]


@pytest.fixture
def make_engine(bridge: RecordingBridge) -> MakeEngine:
    """``make_engine(agent, user_id=..., **emitter_options)``: an engine that runs
    ``agent`` under the name ``"agent"``, sending to the test's recording bridge."""

    def make(agent: Agent, user_id: str = "user-1", **emitter: Any) -> UserExecutionEngine:
        agents = AgentRegistry()
        agents.register("agent", agent)
        ctx = UserExecutionContext(user_id=user_id, thread_id="thread-1", run_id="run-1")
        events = UserWebSocketEmitter(ctx.user_id, ctx.thread_id, ctx.run_id, bridge, **emitter)
        return UserExecutionEngine(ctx, events, agents=agents)

    return make


def deltas(bridge: RecordingBridge, user_id: str = "user-1") -> str:
    """The run's streamed text: its agent_text_delta events joined."""
    return "".join(
        event["data"]["delta"]
        for event in bridge.events_for(user_id)
        if event["type"] == "agent_text_delta"
    )


def without_deltas(types: list[str]) -> list[str]:
    """Event types with each run of agent_text_delta folded into one."""
    folded: list[str] = []
    for kind in types:
        if not (kind == "agent_text_delta" and folded and folded[-1] == kind):
            folded.append(kind)
    return folded
