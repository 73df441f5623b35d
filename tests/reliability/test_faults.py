"""Fault injection in every collaborator: each fault gives a clear error or is logged and
counted, nobody else is affected, and the affected user's slot is returned."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Any

import pytest
from enginescope.engines import (
    AgentRegistry,
    AgentRun,
    AgentWebSocketBridge,
    ExecutionEngineFactory,
    ExecutionEngineFactoryError,
    UserExecutionContext,
    UserExecutionEngine,
    UserWebSocketEmitter,
)
from enginescope.engines.bridge import TRY_AGAIN_LATER, BridgeConfigError
from enginescope.engines.testing import FakeSocket, RecordingBridge, demo_agent

from tests.reliability.conftest import LoopGuard
from tests.reliability.fakes import FakeClock
from tests.reliability.invariants import check_bridge, check_factory

MakeContext = Callable[..., UserExecutionContext]
FIVE_EVENTS = [
    "agent_started",
    "agent_thinking",
    "tool_executing",
    "tool_completed",
    "agent_completed",
]


async def five_event_agent(run: AgentRun) -> str:
    await run.think("thinking")
    return str(await run.use_tool("echo", lambda text: text, text=run.message))


def agents(**extra: Any) -> AgentRegistry:
    registry = AgentRegistry()
    registry.register("five", five_event_agent)
    registry.register("demo", demo_agent)
    for name, agent in extra.items():
        registry.register(name, agent)
    return registry


def make_factory(bridge: Any, **options: Any) -> ExecutionEngineFactory:
    options.setdefault("agent_registry", agents())
    return ExecutionEngineFactory(bridge, **options)


def assert_no_slot(factory: ExecutionEngineFactory, user_id: str) -> None:
    check_factory(factory)
    assert 0 == factory.slot_ledger.count(user_id)  # type: ignore[attr-defined]
    assert user_id not in factory.get_active_contexts()


class TestBridgeSend:
    async def test_a_raising_bridge_is_logged_and_counted_and_the_run_still_succeeds(
        self, guard: LoopGuard, make_context: MakeContext, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Every send raising: the agent's result is unaffected, each lost event is counted
        as undelivered and logged, and the slot comes back at scope exit."""
        bridge = RecordingBridge(fail_with=ConnectionError("bridge down"))
        factory = make_factory(bridge)
        async with factory.user_execution_scope(make_context("u-1")) as engine:
            result = await engine.execute_agent("five", "hi")
            emitter = engine.websocket_emitter
        assert (True, "hi") == (result.success, result.result)
        assert 5 == bridge.attempts
        assert (0, 5) == (emitter.events_sent, emitter.events_undelivered)
        warnings = [r for r in caplog.records if "bridge failed to send" in r.getMessage()]
        assert 5 == len(warnings)
        assert_no_slot(factory, "u-1")
        await factory.shutdown()

    async def test_a_bridge_that_recovers_delivers_again(
        self, guard: LoopGuard, make_context: MakeContext
    ) -> None:
        """After the bridge recovers, the next run's events all arrive, in seq order."""
        bridge = RecordingBridge(fail_with=ConnectionError("bridge down"))
        factory = make_factory(bridge)
        async with factory.user_execution_scope(make_context("u-1")) as engine:
            await engine.execute_agent("five", "lost")
            bridge.recover()
            await engine.execute_agent("five", "found")
        assert FIVE_EVENTS == bridge.types_for("u-1")
        assert [6, 7, 8, 9, 10] == [event["seq"] for event in bridge.events_for("u-1")]
        await factory.shutdown()


class TestSocketSend:
    async def test_a_raising_socket_is_unregistered_and_its_sibling_still_gets_everything(
        self, guard: LoopGuard, make_context: MakeContext
    ) -> None:
        """A socket whose send raises is dropped and counted; the same user's other socket
        and another user's socket get all their events."""
        bridge = AgentWebSocketBridge()
        broken = FakeSocket("broken", fail_with=OSError("reset by peer"), fail_after=1)
        good, other = FakeSocket("good"), FakeSocket("other")
        bridge.register_connection("u-1", broken)
        bridge.register_connection("u-1", good)
        bridge.register_connection("u-2", other)
        factory = make_factory(bridge)
        for user_id in ("u-1", "u-2"):
            async with factory.user_execution_scope(make_context(user_id)) as engine:
                assert (await engine.execute_agent("five", "hi")).success
        await bridge.flush()
        check_bridge(bridge)
        assert ["agent_started"] == broken.types()
        assert (FIVE_EVENTS, FIVE_EVENTS) == (good.types(), other.types())
        assert 1 == bridge.get_metrics()["failed_socket_disconnects"]
        assert (1, 1) == (bridge.connection_count("u-1"), bridge.connection_count("u-2"))
        assert_no_slot(factory, "u-1")
        await factory.shutdown()
        await bridge.close()

    async def test_a_hanging_socket_times_out_and_is_closed_with_try_again_later(
        self, guard: LoopGuard, make_context: MakeContext
    ) -> None:
        """A socket whose send never returns is unregistered after the send timeout and
        closed with 1013; the agent run never waits for it."""
        bridge = AgentWebSocketBridge(send_timeout_seconds=0.05)
        hanging, good = FakeSocket("hanging", gate=asyncio.Event()), FakeSocket("good")
        connection = bridge.register_connection("u-1", hanging)
        bridge.register_connection("u-1", good)
        factory = make_factory(bridge)
        async with factory.user_execution_scope(make_context("u-1")) as engine:
            assert (await engine.execute_agent("five", "hi")).success
        await asyncio.wait_for(connection.wait_closed(), 2)
        await bridge.flush()
        check_bridge(bridge)
        assert [TRY_AGAIN_LATER] == hanging.close_codes
        assert "send timed out" == connection.close_reason
        assert FIVE_EVENTS == good.types()
        await factory.shutdown()
        await bridge.close()


class TestCreationFaults:
    async def test_a_raising_emitter_factory_gives_its_error_and_returns_the_slot(
        self, guard: LoopGuard, make_context: MakeContext
    ) -> None:
        """Emitter creation raising: create_for_user raises that error, counts it, takes
        no slot and registers nothing; the next create works."""
        failures = [RuntimeError("emitter unavailable")]

        def emitter_factory(*args: Any) -> UserWebSocketEmitter:
            if failures:
                raise failures.pop()
            return UserWebSocketEmitter(*args)

        factory = make_factory(RecordingBridge(), emitter_factory=emitter_factory)
        with pytest.raises(RuntimeError, match="emitter unavailable"):
            await factory.create_for_user(make_context("u-1"))
        assert 1 == factory.get_factory_metrics()["creation_errors"]
        assert_no_slot(factory, "u-1")
        async with factory.user_execution_scope(make_context("u-1")) as engine:
            assert (await engine.execute_agent("five", "hi")).success
        await factory.shutdown()

    async def test_a_raising_agent_registry_gives_its_error_and_returns_the_slot(
        self, guard: LoopGuard, make_context: MakeContext
    ) -> None:
        """The agent registry raising while an engine is built: the error propagates and
        the slot is returned."""

        class BrokenRegistry(AgentRegistry):
            def for_user(self, context: UserExecutionContext) -> Any:
                raise LookupError("agent store unreachable")

        factory = make_factory(RecordingBridge(), agent_registry=BrokenRegistry())
        for _ in range(3):  # more than the limit: no slot may leak
            with pytest.raises(LookupError, match="agent store unreachable"):
                await factory.create_for_user(make_context("u-1"))
        assert 3 == factory.get_factory_metrics()["creation_errors"]
        assert_no_slot(factory, "u-1")
        await factory.shutdown()

    async def test_a_raising_agent_factory_fails_that_run_only(
        self, guard: LoopGuard, make_context: MakeContext
    ) -> None:
        """A per-user agent factory that raises fails execute_agent before any event; the
        engine stays usable for other agents and the slot comes back at exit."""
        registry = agents()

        def broken(context: UserExecutionContext) -> Any:
            raise RuntimeError(f"cannot build an agent for {context.user_id}")

        registry.register_factory("broken", broken)
        bridge = RecordingBridge()
        factory = make_factory(bridge, agent_registry=registry)
        async with factory.user_execution_scope(make_context("u-1")) as engine:
            with pytest.raises(RuntimeError, match="cannot build an agent for u-1"):
                await engine.execute_agent("broken", "hi")
            assert [] == bridge.types_for("u-1")
            assert (await engine.execute_agent("five", "hi")).success
        assert_no_slot(factory, "u-1")
        await factory.shutdown()

    async def test_a_raising_ledger_gives_its_error_and_registers_nothing(
        self, guard: LoopGuard, make_context: MakeContext
    ) -> None:
        """A slot ledger that cannot be reached: the error propagates, is counted, and no
        engine is registered."""

        class DownLedger:
            async def acquire(self, user_id: str, slot_id: str, limit: int) -> int:
                raise ConnectionError("ledger unreachable")

            async def release(self, user_id: str, slot_id: str) -> bool:
                return False

            async def aclose(self) -> None:
                return None

        factory = make_factory(RecordingBridge(), slot_ledger=DownLedger())
        with pytest.raises(ConnectionError, match="ledger unreachable"):
            await factory.create_for_user(make_context("u-1"))
        metrics = factory.get_factory_metrics()
        assert (1, 0, 0) == (
            metrics["creation_errors"],
            metrics["active_engines_count"],
            metrics["total_engines_created"],
        )
        await factory.shutdown()


class TestAgentRun:
    async def test_a_raising_agent_becomes_a_failed_result_and_an_error_event(
        self, guard: LoopGuard, make_context: MakeContext
    ) -> None:
        """An agent that raises: a failed AgentResult naming the error, an agent_error event,
        the engine usable afterwards, the slot returned at exit."""

        async def explodes(run: AgentRun) -> None:
            await run.think("about to fail")
            raise ValueError("model returned garbage")

        bridge = RecordingBridge()
        factory = make_factory(bridge, agent_registry=agents(explodes=explodes))
        async with factory.user_execution_scope(make_context("u-1")) as engine:
            failed = await engine.execute_agent("explodes", "hi")
            assert (await engine.execute_agent("five", "hi")).success
        assert (False, "ValueError", "model returned garbage") == (
            failed.success,
            failed.error_type,
            failed.error,
        )
        assert ["agent_started", "agent_thinking", "agent_error"] == bridge.types_for("u-1")[:3]
        assert 1 == engine.get_user_execution_stats()["runs_failed"]
        assert_no_slot(factory, "u-1")
        await factory.shutdown()

    async def test_a_raising_tool_reports_then_fails_the_run(
        self, guard: LoopGuard, make_context: MakeContext
    ) -> None:
        """A tool that raises: tool_completed carries the error, then agent_error."""

        def broken_tool() -> None:
            raise OSError("disk full")

        async def uses_broken_tool(run: AgentRun) -> None:
            await run.use_tool("save", broken_tool)

        bridge = RecordingBridge()
        factory = make_factory(bridge, agent_registry=agents(tool=uses_broken_tool))
        async with factory.user_execution_scope(make_context("u-1")) as engine:
            result = await engine.execute_agent("tool", "hi")
        assert "OSError" == result.error_type
        assert ["agent_started", "tool_executing", "tool_completed", "agent_error"] == (
            bridge.types_for("u-1")
        )
        assert "disk full" == bridge.events_for("u-1")[2]["data"]["error"]
        assert_no_slot(factory, "u-1")
        await factory.shutdown()


class FailingCloseEmitter(UserWebSocketEmitter):
    __slots__ = ()

    async def close(self) -> None:
        await super().close()
        raise RuntimeError("emitter close failed")


class FailingAfterCleanupEngine(UserExecutionEngine):
    async def cleanup(self) -> None:
        await super().cleanup()
        raise RuntimeError("db session close failed")


class TestEngineCleanup:
    @pytest.mark.parametrize(
        "options",
        [
            pytest.param({"emitter_factory": FailingCloseEmitter}, id="emitter-close-raises"),
            pytest.param({"engine_class": FailingAfterCleanupEngine}, id="engine-cleanup-raises"),
        ],
    )
    async def test_a_failing_cleanup_is_counted_and_logged_and_the_engine_removed(
        self,
        guard: LoopGuard,
        make_context: MakeContext,
        caplog: pytest.LogCaptureFixture,
        options: dict[str, Any],
    ) -> None:
        """engine.cleanup() raising at scope exit: cleanup_errors counts it, it is logged
        with the engine id, the engine is inactive and unregistered, the slot returned, and
        the scope exits without raising."""
        factory = make_factory(RecordingBridge(), **options)
        async with factory.user_execution_scope(make_context("u-1")) as engine:
            assert (await engine.execute_agent("five", "hi")).success
        assert not engine.is_active()
        assert 1 == factory.get_factory_metrics()["cleanup_errors"]
        logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert ["engine cleanup failed; engine removed anyway"] == [r.getMessage() for r in logged]
        assert engine.engine_id == logged[0].engine_id
        assert_no_slot(factory, "u-1")
        async with factory.user_execution_scope(make_context("u-1")):
            pass  # the user is not locked out
        await factory.shutdown()
        assert 2 == factory.get_factory_metrics()["cleanup_errors"]


class TestReaper:
    async def test_the_reaper_survives_its_own_errors_and_then_reaps(
        self, guard: LoopGuard, make_context: MakeContext, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Sweeps that raise are logged and counted in reaper_errors; the reaper keeps
        running and a later sweep closes the expired engines and returns their slots."""
        clock = FakeClock()
        failures = [RuntimeError("sweep failed"), RuntimeError("sweep failed again")]

        class FlakyFactory(ExecutionEngineFactory):
            async def reap_expired(self) -> int:
                if failures:
                    raise failures.pop()
                return await super().reap_expired()

        factory = FlakyFactory(
            RecordingBridge(),
            agent_registry=agents(),
            clock=clock,
            engine_timeout_seconds=60,
            cleanup_interval_seconds=0.005,
        )
        old = await factory.create_for_user(make_context("u-1"))
        clock.advance(61)
        young = await factory.create_for_user(make_context("u-1"))
        async with asyncio.timeout(5):
            while factory.get_factory_metrics()["timeout_cleanups"] < 1:
                await asyncio.sleep(0.005)
        metrics = factory.get_factory_metrics()
        assert (2, 1, True) == (
            metrics["reaper_errors"],
            metrics["timeout_cleanups"],
            metrics["cleanup_task_running"],
        )
        assert (False, True) == (old.is_active(), young.is_active())
        assert 1 == factory.slot_ledger.count("u-1")  # type: ignore[attr-defined]
        sweeps = [r for r in caplog.records if "reaper sweep failed" in r.getMessage()]
        assert 2 == len(sweeps)
        check_factory(factory)
        await factory.shutdown()
        assert not factory.get_factory_metrics()["cleanup_task_running"]

    async def test_a_failing_engine_cleanup_does_not_stop_the_sweep(
        self, guard: LoopGuard, make_context: MakeContext
    ) -> None:
        """The reaper closes every expired engine even when some cleanups raise."""
        clock = FakeClock()
        factory = make_factory(
            RecordingBridge(),
            clock=clock,
            engine_class=FailingAfterCleanupEngine,
            engine_timeout_seconds=60,
        )
        for user_id in ("u-1", "u-2", "u-3"):
            await factory.create_for_user(make_context(user_id))
        clock.advance(61)
        assert 3 == await factory.reap_expired()
        metrics = factory.get_factory_metrics()
        assert (0, 3, 3) == (
            metrics["active_engines_count"],
            metrics["cleanup_errors"],
            metrics["timeout_cleanups"],
        )
        check_factory(factory)
        await factory.shutdown()


class TestSettings:
    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("max_engines_per_user", 0),
            ("max_engines_per_user", -1),
            ("max_engines_per_user", 1.5),
            ("max_engines_per_user", True),
            ("max_engines_per_user", "2"),
            ("engine_timeout_seconds", 0),
            ("engine_timeout_seconds", math.nan),
            ("cleanup_interval_seconds", -5),
            ("cleanup_interval_seconds", math.nan),
            ("shutdown_timeout_seconds", 0.0),
            ("shutdown_timeout_seconds", math.nan),
            ("agent_timeout_seconds", -1),
            ("agent_timeout_seconds", math.nan),
            ("max_concurrent_runs", 0),
        ],
    )
    def test_an_invalid_factory_setting_is_refused_naming_it(
        self, field: str, value: object
    ) -> None:
        """A zero, negative, NaN or wrongly typed setting is an ExecutionEngineFactoryError
        naming the setting, at construction."""
        with pytest.raises(ExecutionEngineFactoryError, match=field):
            ExecutionEngineFactory(RecordingBridge(), **{field: value})

    @pytest.mark.parametrize("bridge", [None, object(), "bridge"])
    def test_a_missing_or_wrong_bridge_is_refused(self, bridge: object) -> None:
        """No usable bridge is a clear ExecutionEngineFactoryError at construction."""
        with pytest.raises(ExecutionEngineFactoryError, match="websocket_bridge"):
            ExecutionEngineFactory(bridge)  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("field", "value"),
        [("queue_size", 0), ("queue_size", 2.5), ("send_timeout_seconds", -1)],
    )
    def test_an_invalid_bridge_setting_is_refused_naming_it(
        self, field: str, value: object
    ) -> None:
        """AgentWebSocketBridge refuses a bad queue size or timeout, naming the field."""
        with pytest.raises(BridgeConfigError, match=field) as error:
            AgentWebSocketBridge(**{field: value})  # type: ignore[arg-type]
        assert field == error.value.field


class TestEngineSettings:
    @pytest.mark.parametrize(
        ("setting", "value"),
        [
            ("max_engines_per_user", "0"),
            ("max_engines_per_user", "two"),
            ("engine_timeout_seconds", "-1"),
            ("engine_timeout_seconds", "nan"),
            ("cleanup_interval_seconds", "0"),
            ("shutdown_timeout_seconds", "nan"),
            ("agent_timeout_seconds", "0"),
            ("max_concurrent_runs", "-3"),
            ("bridge_queue_size", "0"),
            ("bridge_send_timeout_seconds", "never"),
            ("backend", "mongodb"),
        ],
    )
    def test_a_bad_environment_variable_is_refused_naming_the_setting(
        self, monkeypatch: pytest.MonkeyPatch, setting: str, value: str
    ) -> None:
        """EngineSettings read from a bad ENGINESCOPE_* variable fails with a
        ValidationError that names the setting."""
        from enginescope.containers import EngineSettings  # noqa: PLC0415
        from pydantic import ValidationError  # noqa: PLC0415

        monkeypatch.setenv(f"ENGINESCOPE_{setting.upper()}", value)
        with pytest.raises(ValidationError) as error:
            EngineSettings()
        assert [(setting,)] == [e["loc"] for e in error.value.errors()]

    async def test_a_container_with_bad_settings_fails_at_startup_and_holds_nothing(
        self, guard: LoopGuard, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A container whose environment is invalid refuses to start its resources."""
        from enginescope.containers import EngineContainer  # noqa: PLC0415
        from pydantic import ValidationError  # noqa: PLC0415

        monkeypatch.setenv("ENGINESCOPE_MAX_ENGINES_PER_USER", "0")
        container = EngineContainer()
        with pytest.raises(ValidationError, match="max_engines_per_user"):
            await container.init_resources()
        stopping = container.shutdown_resources()  # None when nothing async started
        if stopping is not None:
            await stopping
