"""The chat example's pydantic-ai agent: offline by default, any model by CHAT_MODEL."""

from __future__ import annotations

import pytest
from enginescope.engines import (
    AgentRegistry,
    UserExecutionContext,
    UserExecutionEngine,
    UserWebSocketEmitter,
)
from enginescope.engines.testing import RecordingBridge

from examples.chat.agent import AGENT_NAME
from examples.chat.app import build_agent_registry
from examples.chat.settings import ChatSettings

DIVISION = "Division by zero is undefined."
FIVE = ["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]


def engine_for(registry: AgentRegistry, bridge: RecordingBridge) -> UserExecutionEngine:
    ctx = UserExecutionContext(user_id="u-1", thread_id="t-1", run_id="r-1")
    emitter = UserWebSocketEmitter(ctx.user_id, ctx.thread_id, ctx.run_id, bridge)
    return UserExecutionEngine(ctx, emitter, agents=registry)


@pytest.mark.parametrize(
    ("message", "tool", "reply"),
    [
        ("what is (2 + 3) * 7?", "calculator", "(2 + 3) * 7 = 35"),
        (
            "the cat and the hat",
            "word_statistics",
            "5 words, 4 unique; most common: the, cat, and.",
        ),
        (
            "what is 1/0 + 1?",
            "calculator",
            "I could not calculate 1/0 + 1: Division by zero is undefined.",
        ),
    ],
)
async def test_the_offline_agent_thinks_calls_a_tool_and_streams_its_reply(
    message: str, tool: str, reply: str
) -> None:
    """Without CHAT_MODEL the agent thinks, calls one tool and streams its reply, which
    the text deltas spell out; a calculator error is reported and answered."""
    bridge = RecordingBridge()
    registry = build_agent_registry(ChatSettings(tool_delay_seconds=0))
    result = await engine_for(registry, bridge).execute_agent(AGENT_NAME, message)
    events = bridge.events_for("u-1")
    deltas = [e["data"]["delta"] for e in events if e["type"] == "agent_text_delta"]
    assert FIVE == [e["type"] for e in events if e["type"] != "agent_text_delta"]
    assert (reply, reply) == (result.result, "".join(deltas))
    assert tool == events[2]["data"]["tool_name"]
    assert (tool == "calculator" and "1/0" in message) == (events[3]["data"]["error"] is not None)


async def test_chat_model_names_the_pydantic_ai_model() -> None:
    """CHAT_MODEL=test runs pydantic-ai's TestModel, which calls both tools (the offline
    model calls one); its made-up expression gets the calculator's error."""
    bridge = RecordingBridge()
    registry = build_agent_registry(ChatSettings(model="test", tool_delay_seconds=0))
    result = await engine_for(registry, bridge).execute_agent(AGENT_NAME, "hi")
    tools = {
        e["data"]["tool_name"] for e in bridge.events_for("u-1") if e["type"] == "tool_executing"
    }
    errors = {
        e["data"]["tool_name"]: e["data"]["error"]
        for e in bridge.events_for("u-1")
        if e["type"] == "tool_completed"
    }
    assert {"calculator", "word_statistics"} == tools
    assert errors["calculator"] is not None
    assert errors["word_statistics"] is None
    assert result.error_type in {None, "UnexpectedModelBehavior"}
