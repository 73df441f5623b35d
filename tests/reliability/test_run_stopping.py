"""Stopping a run: any mix of the caller's cancellation, an enclosing deadline and cleanup,
against agents that stop, swallow, fail or stop slowly."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from enginescope.engines import (
    AgentRegistry,
    AgentRun,
    UserExecutionContext,
    UserExecutionEngine,
    UserWebSocketEmitter,
)
from enginescope.engines.testing import RecordingBridge
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def make_engine(
    bridge: RecordingBridge, agents: AgentRegistry, user_id: str
) -> UserExecutionEngine:
    ctx = UserExecutionContext(user_id=user_id, thread_id="thread-1", run_id="run-1")
    emitter = UserWebSocketEmitter(ctx.user_id, ctx.thread_id, ctx.run_id, bridge)
    return UserExecutionEngine(ctx, emitter, agents=agents)


class TestStoppingARun:
    @settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        agent=st.sampled_from(["waits", "swallows", "raises", "stops_slowly"]),
        steps=st.lists(
            st.tuples(st.sampled_from(["cancel", "expire", "cleanup"]), st.integers(0, 3)),
            max_size=4,
        ),
        nested=st.booleans(),
    )
    def test_any_mix_of_cancel_deadline_and_cleanup_ends_the_run_cleanly(
        self, agent: str, steps: list[tuple[str, int]], nested: bool
    ) -> None:
        """Whatever mix of the caller's cancellation, an enclosing deadline and cleanup of
        either engine reaches a run (nested in another engine's run or not), and whatever
        the agent does with it: the caller's cancellation propagates, the deadline raises
        TimeoutError, a run stopped only by cleanup returns leaving no cancellation behind,
        every run ends with one final event and no run stays registered."""
        asyncio.run(_stop_a_run(agent, steps, nested=nested))


_FINAL_EVENTS = {"agent_completed", "agent_error", "agent_stopped"}


def _mixed_agent(kind: str, started: asyncio.Event) -> Callable[[AgentRun], Awaitable[str]]:
    async def agent(run: AgentRun) -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if kind == "swallows":
                return "swallowed"
            if kind == "raises":
                raise RuntimeError("stopped badly") from None
            if kind == "stops_slowly":
                await asyncio.sleep(0)
                await asyncio.sleep(0)
            raise
        return "unreachable"

    return agent


async def _stop_a_run(kind: str, steps: list[tuple[str, int]], *, nested: bool) -> None:
    bridge, agents, started = RecordingBridge(), AgentRegistry(), asyncio.Event()
    agents.register("inner", _mixed_agent(kind, started))
    inner = make_engine(bridge, agents, "user-2")

    async def outer_agent(run: AgentRun) -> bool:
        return (await inner.execute_agent("inner", "hi")).success

    agents.register("outer", outer_agent)
    engine = make_engine(bridge, agents, "user-1")
    deadlines: list[asyncio.Timeout] = []
    timeouts: list[asyncio.Timeout] = []

    async def call() -> int:
        async with asyncio.timeout(None) as deadline:
            deadlines.append(deadline)
            timeouts.append(deadline)
            await engine.execute_agent("outer" if nested else "inner", "hi")
            deadlines.clear()  # out of the block: the deadline can no longer be moved
        await asyncio.sleep(0)  # a cancellation left behind would be raised here
        return asyncio.current_task().cancelling()  # type: ignore[union-attr]

    caller = asyncio.create_task(call())
    await started.wait()
    cancelled = expired = False
    cleanups = []
    for action, pause in steps:
        if caller.done():
            break
        if action == "cancel":
            cancelled = caller.cancel()
        elif action == "expire" and not expired and deadlines:
            deadlines[0].reschedule(asyncio.get_running_loop().time())
            expired = True
        elif action == "cleanup":
            target = inner if nested and pause % 2 else engine
            cleanups.append(asyncio.create_task(target.cleanup()))
        for _ in range(pause):
            await asyncio.sleep(0)
    if not (cancelled or expired or cleanups):  # nothing stopped the run: its owner does
        cancelled = caller.cancel()
    outcome = await asyncio.gather(caller, return_exceptions=True)
    await asyncio.gather(*cleanups)

    if timeouts[0].expired():
        assert isinstance(outcome[0], TimeoutError | asyncio.CancelledError)
    elif cancelled:
        assert isinstance(outcome[0], asyncio.CancelledError)
    else:
        assert [0] == outcome
    assert (0, 0) == (engine.active_runs, inner.active_runs)
    types = [event["type"] for user in ("user-1", "user-2") for event in bridge.events_for(user)]
    assert types.count("agent_started") == sum(t in _FINAL_EVENTS for t in types)
