"""An adapted pydantic-ai agent next to a hand-written agent that sends the same events.

Both run through a real engine and emitter to a bridge that only counts, so the time per
event is the adapter's overhead (pydantic-ai's graph and event stream, our mapping) on top
of the same event work. The pydantic-ai model is a ``FunctionModel``: no network, and the
model's own time is a few Python calls.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from enginescope.engines import (
    AgentRegistry,
    AgentRun,
    UserExecutionContext,
    UserExecutionEngine,
    UserWebSocketEmitter,
)
from enginescope.engines.adapters.pydantic_ai import from_pydantic_ai
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelRequest, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, DeltaThinkingPart, DeltaToolCall, FunctionModel

REPLY = ("The ", "sum ", "is ", "5.")
EVENTS_PER_RUN = 9  # started, tool_executing, tool_completed, thinking, 4 deltas, completed
FULL_RUNS, QUICK_RUNS = 200, 3


class CountingBridge:
    """A bridge that reaches one connection and only counts the events."""

    def __init__(self) -> None:
        self.events = 0

    async def send_to_user(self, user_id: str, event: Mapping[str, Any]) -> int:
        self.events += 1
        return 1


async def add(a: int, b: int) -> int:
    return a + b


async def _stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
    last = messages[-1]
    if isinstance(last, ModelRequest) and any(isinstance(p, ToolReturnPart) for p in last.parts):
        yield {0: DeltaThinkingPart(content="adding up")}
        for piece in REPLY:
            yield piece
        return
    yield {0: DeltaToolCall(name="add", json_args='{"a": 2, "b": 3}', tool_call_id="c1")}


def adapted_agent() -> Any:
    agent = Agent(FunctionModel(stream_function=_stream))
    agent.tool_plain(add)
    return from_pydantic_ai(agent)


async def hand_written(run: AgentRun) -> str:
    await run.use_tool("add", add, a=2, b=3)
    await run.think("adding up")
    for piece in REPLY:
        await run.stream_text(piece)
    return "".join(REPLY)


def _engine(agent: Any, bridge: CountingBridge) -> UserExecutionEngine:
    agents = AgentRegistry()
    agents.register("agent", agent)
    ctx = UserExecutionContext(user_id="bench-user", thread_id="t-1", run_id="r-1")
    emitter = UserWebSocketEmitter(  # every piece its own event, so both sides send 9
        ctx.user_id, ctx.thread_id, ctx.run_id, bridge, text_delta_interval_seconds=0
    )
    return UserExecutionEngine(ctx, emitter, agents=agents)


@pytest.mark.benchmark(group="agent run, per event")
@pytest.mark.parametrize(
    ("kind", "role"), [("pydantic-ai adapter", "ours"), ("hand-written", "baseline")]
)
def test_cost_per_event(bench: Any, kind: str, role: str) -> None:
    """Time per event of a run with a tool call, a thought and four text pieces."""
    bridge = CountingBridge()
    engine = _engine(adapted_agent() if role == "ours" else hand_written, bridge)
    runs = FULL_RUNS if bench.full else QUICK_RUNS

    async def batch() -> int:
        succeeded = 0
        for _ in range(runs):
            succeeded += (await engine.execute_agent("agent", "what is 2 + 3?")).success
        return succeeded

    succeeded = bench.batches(
        batch,
        ops=runs * EVENTS_PER_RUN,
        rounds=20,
        role=role,
        note=f"{kind}: {EVENTS_PER_RUN} events a run, {runs} runs a round",
    )
    assert runs == succeeded
    assert 0 == bridge.events % (runs * EVENTS_PER_RUN)


async def _drain(ctx: Any, events: AsyncIterator[Any]) -> None:
    async for _ in events:
        pass


@pytest.mark.benchmark(group="pydantic-ai run, adapter overhead")
@pytest.mark.parametrize(("kind", "role"), [("adapter", "ours"), ("pydantic-ai alone", "baseline")])
def test_adapter_overhead_over_pydantic_ai(bench: Any, kind: str, role: str) -> None:
    """The same pydantic-ai run through the adapter and engine, and on its own with an
    event handler that only drains the stream: what the adapter adds to the framework."""
    bridge = CountingBridge()
    engine = _engine(adapted_agent(), bridge)
    agent = Agent(FunctionModel(stream_function=_stream))
    agent.tool_plain(add)
    runs = FULL_RUNS if bench.full else QUICK_RUNS

    async def one_run() -> bool:
        if role == "ours":
            return (await engine.execute_agent("agent", "what is 2 + 3?")).success
        return (await agent.run("what is 2 + 3?", event_stream_handler=_drain)).output == "".join(
            REPLY
        )

    async def batch() -> int:
        return sum([await one_run() for _ in range(runs)])

    succeeded = bench.batches(
        batch, ops=runs * EVENTS_PER_RUN, rounds=20, role=role, note=f"{kind}, per event"
    )
    assert runs == succeeded
