"""UserExecutionEngine: running agents, their events, limits and cleanup."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from datetime import datetime

import pytest
from enginescope.engines import (
    AgentNotFoundError,
    AgentRegistry,
    AgentRun,
    EngineBusyError,
    EngineClosedError,
    ExecutionEngineFactory,
    UserExecutionContext,
    UserExecutionEngine,
    UserWebSocketEmitter,
)
from enginescope.engines.testing import RecordingBridge, demo_agent

from tests.support import Gate

pytestmark = pytest.mark.asyncio

FIVE_EVENTS = [
    "agent_started",
    "agent_thinking",
    "tool_executing",
    "tool_completed",
    "agent_completed",
]

CURRENT_USER: contextvars.ContextVar[str] = contextvars.ContextVar("CURRENT_USER", default="nobody")


def make_engine(
    bridge: RecordingBridge, agents: AgentRegistry, user_id: str = "user-1", **options: object
) -> UserExecutionEngine:
    ctx = UserExecutionContext(user_id=user_id, thread_id="thread-1", run_id="run-1")
    emitter = UserWebSocketEmitter(ctx.user_id, ctx.thread_id, ctx.run_id, bridge)
    return UserExecutionEngine(ctx, emitter, agents=agents, **options)  # type: ignore[arg-type]


class TestExecuteAgent:
    async def test_five_events_in_order_with_envelope(
        self, bridge: RecordingBridge, registry: AgentRegistry
    ) -> None:
        """A demo run sends the five events, in order, each addressed to its own run."""
        engine = make_engine(bridge, registry)
        result = await engine.execute_agent("demo", "hello there world")
        events = bridge.events_for("user-1")
        assert [event["type"] for event in events] == FIVE_EVENTS
        assert [event["seq"] for event in events] == [1, 2, 3, 4, 5]
        for event in events:
            assert (
                event["user_id"],
                event["thread_id"],
                event["run_id"],
                event["agent_name"],
            ) == ("user-1", "thread-1", "run-1", "demo")
            assert datetime.fromisoformat(event["timestamp"]).tzinfo is not None
        assert events[0]["data"]["message"] == "hello there world"
        assert result.result == events[-1]["data"]["result"]
        assert (result.success, result.agent_name, result.error) == (True, "demo", None)
        assert result.duration_ms >= 0

    async def test_agent_exception_becomes_failed_result_and_error_event(
        self, bridge: RecordingBridge
    ) -> None:
        """An agent that raises gives agent_error and a failed result; the engine stays usable."""
        agents = AgentRegistry()

        async def broken(run: AgentRun) -> None:
            raise KeyError("missing thing")

        agents.register("broken", broken)
        agents.register("demo", demo_agent)
        engine = make_engine(bridge, agents)
        result = await engine.execute_agent("broken", "hi")
        assert (
            result.success,
            result.error_type,
            result.error,
        ) == (False, "KeyError", "'missing thing'")
        error = bridge.events_for("user-1")[-1]
        assert (error["type"], error["data"]["error_type"]) == ("agent_error", "KeyError")
        assert engine.is_active()
        assert (await engine.execute_agent("demo", "again")).success

    async def test_unknown_agent_raises_before_any_event(
        self, bridge: RecordingBridge, registry: AgentRegistry
    ) -> None:
        """An unknown agent name raises AgentNotFoundError and sends nothing."""
        engine = make_engine(bridge, registry)
        with pytest.raises(AgentNotFoundError, match="'nope'"):
            await engine.execute_agent("nope", "hi")
        assert bridge.events_for("user-1") == []
        assert engine.active_runs == 0

    async def test_message_must_be_text(
        self, bridge: RecordingBridge, registry: AgentRegistry
    ) -> None:
        """A non-string message is refused with a TypeError naming its type."""
        with pytest.raises(TypeError, match="dict"):
            await make_engine(bridge, registry).execute_agent("demo", {"x": 1})  # type: ignore[arg-type]

    @pytest.mark.parametrize("timeout", [0, -1])
    async def test_bad_timeout_is_refused(
        self, bridge: RecordingBridge, registry: AgentRegistry, timeout: float
    ) -> None:
        """A zero or negative timeout is a clear error."""
        with pytest.raises(ValueError, match="timeout"):
            await make_engine(bridge, registry).execute_agent("demo", "x", timeout=timeout)

    async def test_timeout_cancels_the_run(self, bridge: RecordingBridge) -> None:
        """A run over its timeout is cancelled, ends with agent_stopped and a failed result."""
        gate, agents = Gate(), AgentRegistry()
        agents.register("slow", gate)
        engine = make_engine(bridge, agents)
        result = await engine.execute_agent("slow", "hi", timeout=0.01)
        assert (result.success, result.error_type) == (False, "TimeoutError")
        assert gate.cancelled
        assert bridge.types_for("user-1") == ["agent_started", "agent_stopped"]
        assert "timeout" == bridge.events_for("user-1")[-1]["data"]["reason"]
        assert "timed out" in bridge.events_for("user-1")[-1]["data"]["message"]
        assert engine.active_runs == 0
        assert engine.get_user_execution_stats()["runs_timed_out"] == 1

    async def test_default_timeout_from_the_engine(self, bridge: RecordingBridge) -> None:
        """agent_timeout_seconds applies when execute_agent gets no timeout."""
        gate, agents = Gate(), AgentRegistry()
        agents.register("slow", gate)
        engine = make_engine(bridge, agents, agent_timeout_seconds=0.01)
        assert (await engine.execute_agent("slow", "hi")).error_type == "TimeoutError"

    async def test_concurrent_run_cap(self, bridge: RecordingBridge) -> None:
        """More concurrent runs than max_concurrent_runs are refused with EngineBusyError."""
        gate, agents = Gate(), AgentRegistry()
        agents.register("slow", gate)
        engine = make_engine(bridge, agents, max_concurrent_runs=1)
        running = asyncio.create_task(engine.execute_agent("slow", "one"))
        await gate.started.wait()
        with pytest.raises(EngineBusyError) as caught:
            await engine.execute_agent("slow", "two")
        assert "(1/1)" in str(caught.value)
        gate.release.set()
        assert (await running).success

    async def test_caller_cancellation_cancels_the_run(self, bridge: RecordingBridge) -> None:
        """Cancelling the caller cancels its run, reports it and propagates."""
        gate, agents = Gate(), AgentRegistry()
        agents.register("slow", gate)
        engine = make_engine(bridge, agents)
        caller = asyncio.create_task(engine.execute_agent("slow", "hi"))
        await gate.started.wait()
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert gate.cancelled
        assert engine.active_runs == 0
        stopped = bridge.events_for("user-1")[-1]
        assert ("agent_stopped", "cancelled") == (stopped["type"], stopped["data"]["reason"])
        assert "cancelled by the caller" == stopped["data"]["message"]


class TestEngineCleanup:
    async def test_cleanup_cancels_runs_and_closes(self, bridge: RecordingBridge) -> None:
        """cleanup() cancels a running agent, whose caller gets a failed result."""
        gate, agents = Gate(), AgentRegistry()
        agents.register("slow", gate)
        engine = make_engine(bridge, agents)
        caller = asyncio.create_task(engine.execute_agent("slow", "hi"))
        await gate.started.wait()
        await engine.cleanup()
        result = await caller
        assert (result.success, result.error) == (False, "engine closed")
        assert gate.cancelled
        assert not engine.is_active()
        assert engine.websocket_emitter.is_closed
        assert bridge.types_for("user-1") == ["agent_started", "agent_stopped"]
        assert "engine_closed" == bridge.events_for("user-1")[-1]["data"]["reason"]

    async def test_cleanup_is_idempotent_and_concurrent_safe(
        self, bridge: RecordingBridge, registry: AgentRegistry
    ) -> None:
        """cleanup() twice, or from two tasks at once, closes once and tells the factory once."""
        closed: list[str] = []

        async def on_closed(engine: UserExecutionEngine) -> None:
            closed.append(engine.engine_id)

        engine = make_engine(bridge, registry, on_closed=on_closed)
        await asyncio.gather(engine.cleanup(), engine.cleanup())
        await engine.cleanup()
        assert [engine.engine_id] == closed

    async def test_closed_engine_refuses_runs(
        self, bridge: RecordingBridge, registry: AgentRegistry
    ) -> None:
        """A closed engine raises EngineClosedError naming itself."""
        engine = make_engine(bridge, registry)
        await engine.cleanup()
        with pytest.raises(EngineClosedError, match=engine.engine_id):
            await engine.execute_agent("demo", "hi")

    async def test_factory_is_told_even_when_emitter_close_fails(
        self, bridge: RecordingBridge, registry: AgentRegistry
    ) -> None:
        """A failing emitter close still marks the engine inactive and tells the factory."""
        closed: list[str] = []

        async def on_closed(engine: UserExecutionEngine) -> None:
            closed.append(engine.engine_id)

        class BrokenEmitter(UserWebSocketEmitter):
            async def close(self) -> None:
                raise OSError("socket gone")

        ctx = UserExecutionContext(user_id="user-1", thread_id="thread-1", run_id="run-1")
        emitter = BrokenEmitter(ctx.user_id, ctx.thread_id, ctx.run_id, bridge)
        engine = UserExecutionEngine(ctx, emitter, agents=registry, on_closed=on_closed)
        with pytest.raises(OSError, match="socket gone"):
            await engine.cleanup()
        assert [engine.engine_id] == closed
        assert not engine.is_active()


class TestAgentsRegisteredLater:
    async def test_an_empty_registry_passed_in_is_the_one_used(
        self, bridge: RecordingBridge
    ) -> None:
        """A registry empty when the engine is built is still its registry: an agent
        registered on it afterwards runs."""
        agents = AgentRegistry()
        engine = make_engine(bridge, agents)
        agents.register("late", lambda run: _answer("here"))

        result = await engine.execute_agent("late", "hi")

        assert (True, "here") == (result.success, result.result)


async def _answer(text: str) -> str:
    return text


class TestStoppingARunAndItsCaller:
    """Cleanup stops a run; its caller sees a failed result and only its own cancellation."""

    async def test_cleanup_leaves_the_caller_uncancelled(self, bridge: RecordingBridge) -> None:
        """The caller of a run stopped by cleanup gets a failed result and is not cancelled."""
        gate, agents = Gate(), AgentRegistry()
        agents.register("slow", gate)
        engine = make_engine(bridge, agents)

        async def call() -> tuple[str | None, int]:
            result = await engine.execute_agent("slow", "hi")
            await asyncio.sleep(0)  # a cancellation left behind would be raised here
            return result.error, asyncio.current_task().cancelling()  # type: ignore[union-attr]

        caller = asyncio.create_task(call())
        await gate.started.wait()
        await engine.cleanup()

        assert ("engine closed", 0) == await caller
        assert 0 == engine.active_runs

    async def test_the_callers_own_cancellation_still_propagates(
        self, bridge: RecordingBridge
    ) -> None:
        """Cancelled by its owner and by cleanup at once, the caller is cancelled."""
        gate, agents = Gate(), AgentRegistry()
        agents.register("slow", gate)
        engine = make_engine(bridge, agents)
        caller = asyncio.create_task(engine.execute_agent("slow", "hi"))
        await gate.started.wait()

        caller.cancel()
        await engine.cleanup()

        with pytest.raises(asyncio.CancelledError):
            await caller
        assert ["agent_started", "agent_stopped"] == bridge.types_for("user-1")

    async def test_an_agent_swallowing_the_stop_leaves_the_caller_uncancelled(
        self, bridge: RecordingBridge
    ) -> None:
        """An agent that ignores cleanup's cancellation still ends the run with a failed
        result, and its caller carries no cancellation on."""
        started, agents = asyncio.Event(), AgentRegistry()
        agents.register("stubborn", _swallow_once(started))
        engine = make_engine(bridge, agents)

        async def call() -> tuple[bool, int]:
            result = await engine.execute_agent("stubborn", "hi")
            await asyncio.sleep(0)
            return result.success, asyncio.current_task().cancelling()  # type: ignore[union-attr]

        caller = asyncio.create_task(call())
        await started.wait()
        await engine.cleanup()

        assert (False, 0) == await caller
        assert "agent_stopped" == bridge.types_for("user-1")[-1]

    async def test_a_timeout_around_the_run_still_times_out(self, bridge: RecordingBridge) -> None:
        """asyncio.timeout around a run stopped by cleanup at the same time still raises
        TimeoutError: the engine takes back only its own cancellation."""
        gate, agents = Gate(), AgentRegistry()
        agents.register("slow", gate)
        engine = make_engine(bridge, agents)

        caller, deadline = _under_a_deadline(engine, "slow")
        await gate.started.wait()
        deadline.reschedule(asyncio.get_running_loop().time())  # due with the cleanup
        await engine.cleanup()

        with pytest.raises(TimeoutError):
            await caller

    async def test_the_callers_cancellation_propagates_when_the_agent_swallows_it(
        self, bridge: RecordingBridge
    ) -> None:
        """Cancelled by its owner while its agent swallows the cancellation, the caller is
        still cancelled once the run ends, as when the run had a task of its own."""
        started, agents = asyncio.Event(), AgentRegistry()
        agents.register("swallow", _swallow_once(started))
        engine = make_engine(bridge, agents)
        caller = asyncio.create_task(engine.execute_agent("swallow", "hi"))
        await started.wait()

        caller.cancel()

        with pytest.raises(asyncio.CancelledError):
            await caller
        assert "agent_stopped" == bridge.types_for("user-1")[-1]

    async def test_a_timeout_around_a_swallowing_agent_still_times_out(
        self, bridge: RecordingBridge
    ) -> None:
        """asyncio.timeout around a run whose agent swallows the timeout's cancellation
        still raises TimeoutError."""
        started, agents = asyncio.Event(), AgentRegistry()
        agents.register("swallow", _swallow_once(started))
        engine = make_engine(bridge, agents)
        caller, deadline = _under_a_deadline(engine, "swallow")
        await started.wait()
        deadline.reschedule(asyncio.get_running_loop().time())

        with pytest.raises(TimeoutError):
            await caller

    async def test_context_variables_an_agent_sets_stay_in_its_run(
        self, bridge: RecordingBridge
    ) -> None:
        """A context variable one user's agent sets is not seen by its caller, nor by the
        next user's agent run from the same task (as when each run had its own task)."""
        seen: list[str] = []
        agents = AgentRegistry()

        async def remember_user(run: AgentRun) -> None:
            seen.append(CURRENT_USER.get())
            CURRENT_USER.set(run.context.user_id)

        agents.register("remember", remember_user)
        for user_id in ("user-a", "user-b"):
            await make_engine(bridge, agents, user_id=user_id).execute_agent("remember", "hi")

        assert (["nobody", "nobody"], "nobody") == (seen, CURRENT_USER.get())


def _under_a_deadline(
    engine: UserExecutionEngine, agent_name: str
) -> tuple[asyncio.Task[None], asyncio.Timeout]:
    """A task running ``agent_name`` inside ``asyncio.timeout(None)``, and that timeout (to
    reschedule)."""
    deadline = asyncio.timeout(None)

    async def call() -> None:
        async with deadline:
            await engine.execute_agent(agent_name, "hi")

    return asyncio.create_task(call()), deadline


def _swallow_once(started: asyncio.Event) -> Callable[[AgentRun], Awaitable[str]]:
    """An agent that swallows the first cancellation it gets and then returns."""

    async def agent(run: AgentRun) -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "swallowed"
        return "unreachable"

    return agent


class TestEngineIdentity:
    async def test_ids_are_unique_and_not_time_based(
        self, factory: ExecutionEngineFactory, make_context: Callable[..., UserExecutionContext]
    ) -> None:
        """Engines created in the same instant still get distinct ids."""
        engines = [make_engine(RecordingBridge(), AgentRegistry()) for _ in range(1000)]
        assert len({engine.engine_id for engine in engines}) == 1000

    async def test_an_idle_engine_counts_zero_runs_of_its_own(
        self, bridge: RecordingBridge, registry: AgentRegistry
    ) -> None:
        """An engine that never ran reports every run counter as 0, whatever others ran."""
        busy, idle = make_engine(bridge, registry), make_engine(bridge, registry)
        await busy.execute_agent("demo", "hi")
        counters = ("runs_started", "runs_succeeded", "runs_failed")
        assert [(1, 1, 0), (0, 0, 0)] == [
            tuple(engine.get_user_execution_stats()[name] for name in counters)
            for engine in (busy, idle)
        ]

    async def test_stats_and_repr(self, bridge: RecordingBridge, registry: AgentRegistry) -> None:
        """Stats describe the engine and its runs; the repr names the user."""
        engine = make_engine(bridge, registry, user_id="u-42")
        await engine.execute_agent("demo", "hi")
        stats = engine.get_user_execution_stats()
        assert (engine.engine_id, "u-42", True, 0, 1, 1) == (
            stats["engine_id"],
            stats["user_id"],
            stats["is_active"],
            stats["active_runs"],
            stats["runs_started"],
            stats["runs_succeeded"],
        )
        assert "user_id='u-42'" in repr(engine)
        assert engine.context is engine.get_user_context()
