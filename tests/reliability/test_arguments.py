"""Bad arguments to execute_agent are refused at the door: a timeout that is not a positive
real number (or None) and an agent name that is not a registered string each get an
EngineScopeError that names them, before any event is sent or any run is started."""

from __future__ import annotations

import asyncio
import math
from fractions import Fraction
from typing import Any

import pytest
from enginescope.engines import (
    AgentNotFoundError,
    AgentRegistry,
    AgentRun,
    EngineScopeError,
    InvalidTimeoutError,
    InvalidTimeoutTypeError,
    UserExecutionContext,
    UserExecutionEngine,
    UserWebSocketEmitter,
)
from enginescope.engines.testing import RecordingBridge

USER = "user-args"


async def echo(run: AgentRun) -> str:
    return run.message


async def slow(run: AgentRun) -> str:
    await asyncio.sleep(0.05)
    return "done"


def make_engine(bridge: RecordingBridge, **options: Any) -> UserExecutionEngine:
    registry = AgentRegistry()
    registry.register("echo", echo)
    registry.register("slow", slow)
    ctx = UserExecutionContext(user_id=USER, thread_id="thread-1", run_id="run-1")
    emitter = UserWebSocketEmitter(ctx.user_id, ctx.thread_id, ctx.run_id, bridge)
    return UserExecutionEngine(ctx, emitter, agents=registry, **options)


def nothing_started(bridge: RecordingBridge, engine: UserExecutionEngine) -> bool:
    return [] == bridge.types_for(USER) and 0 == engine.get_user_execution_stats()["runs_started"]


class TestTimeout:
    @pytest.mark.parametrize(
        "timeout",
        [math.nan, -math.nan, 0, 0.0, -0.0, -1, -0.5, -math.inf, Fraction(-1, 2)],
        ids=repr,
    )
    async def test_a_value_that_is_not_positive_is_a_value_error(self, timeout: Any) -> None:
        """NaN, zero and negatives raise InvalidTimeoutError (a ValueError and an
        EngineScopeError) naming timeout; nothing runs."""
        bridge = RecordingBridge()
        engine = make_engine(bridge)

        with pytest.raises(InvalidTimeoutError) as caught:
            await engine.execute_agent("echo", "hi", timeout=timeout)

        assert "timeout" == caught.value.field
        assert isinstance(caught.value, ValueError)
        assert isinstance(caught.value, EngineScopeError)
        assert "timeout must be a positive number of seconds" in str(caught.value)
        assert nothing_started(bridge, engine)

    @pytest.mark.parametrize(
        "timeout", [True, False, "5", b"5", 1j, 1 + 0j, [5], object()], ids=repr
    )
    async def test_a_value_that_is_not_a_real_number_is_a_type_error(self, timeout: Any) -> None:
        """Bools, strings, bytes and complex numbers raise InvalidTimeoutTypeError (a
        TypeError, a ValueError and an EngineScopeError) naming timeout; nothing runs."""
        bridge = RecordingBridge()
        engine = make_engine(bridge)

        with pytest.raises(InvalidTimeoutTypeError) as caught:
            await engine.execute_agent("echo", "hi", timeout=timeout)

        assert "timeout" == caught.value.field
        assert isinstance(caught.value, TypeError)
        assert isinstance(caught.value, EngineScopeError)
        assert "timeout" in str(caught.value)
        assert nothing_started(bridge, engine)

    @pytest.mark.parametrize("timeout", [5, 0.5, Fraction(1, 2), 10**400, 1e300, None], ids=repr)
    async def test_positive_real_numbers_and_none_are_accepted(self, timeout: Any) -> None:
        """Ints, floats, fractions, huge ints and None all run the agent."""
        bridge = RecordingBridge()
        result = await make_engine(bridge).execute_agent("echo", "hi", timeout=timeout)

        assert (True, "hi") == (result.success, result.result)

    async def test_inf_means_no_deadline_even_over_the_engine_default(self) -> None:
        """timeout=inf lets a run outlast the engine's agent_timeout_seconds."""
        bridge = RecordingBridge()
        engine = make_engine(bridge, agent_timeout_seconds=0.01)

        unbounded = await engine.execute_agent("slow", "hi", timeout=math.inf)
        bounded = await engine.execute_agent("slow", "hi")

        assert (True, False) == (unbounded.success, bounded.success)
        assert "TimeoutError" == bounded.error_type

    async def test_the_engine_stays_usable_after_a_refused_timeout(self) -> None:
        """A refused timeout leaves the engine as it was."""
        bridge = RecordingBridge()
        engine = make_engine(bridge)
        with pytest.raises(InvalidTimeoutError):
            await engine.execute_agent("echo", "hi", timeout=math.nan)

        result = await engine.execute_agent("echo", "again", timeout=1)

        assert "again" == result.result
        assert (0, True) == (engine.active_runs, engine.is_active())


class TestAgentName:
    @pytest.mark.parametrize(
        "name",
        [["echo"], ("echo",), {"echo": 1}, {"echo"}, None, 42, b"echo", "echo\u200b", "ECHO"],
        ids=repr,
    )
    async def test_anything_but_a_registered_string_is_not_found(self, name: Any) -> None:
        """An unhashable, non-string or unknown name raises AgentNotFoundError naming it
        and listing the registered agents; nothing runs."""
        bridge = RecordingBridge()
        engine = make_engine(bridge)

        with pytest.raises(AgentNotFoundError) as caught:
            await engine.execute_agent(name, "hi")

        assert name == caught.value.agent_name
        assert repr(name) in str(caught.value)
        assert "registered agents: echo, slow" in str(caught.value)
        assert isinstance(caught.value, LookupError)
        assert nothing_started(bridge, engine)
