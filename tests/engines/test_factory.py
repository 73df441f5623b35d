"""ExecutionEngineFactory: creation, limits, scopes, cleanup, the reaper, metrics, shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from enginescope.engines import (
    AgentRegistry,
    ExecutionEngineFactory,
    ExecutionEngineFactoryError,
    FactoryShutdownError,
    InMemorySlotLedger,
    InvalidContextError,
    UserEngineLimitError,
    UserExecutionContext,
    UserExecutionEngine,
    UserWebSocketEmitter,
)
from enginescope.engines.testing import RecordingBridge, demo_agent
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import Gate, Stubborn

MakeContext = Callable[..., UserExecutionContext]


def assert_consistent(factory: ExecutionEngineFactory) -> None:
    """The registry, the per-user index, the ledger and the metrics agree."""
    metrics = factory.get_factory_metrics()
    per_user = factory.get_active_contexts()
    assert metrics["active_engines_count"] == len(metrics["active_engine_keys"])
    assert metrics["active_engines_count"] == sum(per_user.values())
    assert (
        metrics["total_engines_created"] - metrics["total_engines_cleaned"]
        == (metrics["active_engines_count"])
    )
    for user_id, count in per_user.items():
        assert count <= factory.max_engines_per_user
        assert count == factory.slot_ledger.count(user_id)  # type: ignore[attr-defined]
    assert sum(per_user.values()) == factory.slot_ledger.total()  # type: ignore[attr-defined]


class TestInitialization:
    @pytest.mark.parametrize("bridge", [None, object(), "bridge"])
    async def test_bridge_is_required(self, bridge: Any) -> None:
        """A missing or unusable bridge is a clear error at construction."""
        with pytest.raises(ExecutionEngineFactoryError, match="websocket_bridge"):
            ExecutionEngineFactory(bridge)

    async def test_defaults(self, bridge: RecordingBridge) -> None:
        """The documented defaults apply and the managers default to None."""
        factory = ExecutionEngineFactory(bridge)
        assert (
            factory.max_engines_per_user,
            factory.engine_timeout_seconds,
            factory.cleanup_interval_seconds,
            factory.shutdown_timeout_seconds,
        ) == (2, 300, 60, 10)
        assert (factory.database_session_manager, factory.redis_manager) == (None, None)
        assert len(factory.agent_registry) == 0

    @pytest.mark.parametrize(
        ("option", "value"),
        [
            ("max_engines_per_user", 0),
            ("max_engines_per_user", -1),
            ("max_engines_per_user", 1.5),
            ("max_engines_per_user", True),
            ("engine_timeout_seconds", 0),
            ("cleanup_interval_seconds", -5),
            ("shutdown_timeout_seconds", "10"),
            ("agent_timeout_seconds", 0),
            ("max_concurrent_runs", 0),
        ],
    )
    async def test_bad_options_are_named(
        self, bridge: RecordingBridge, option: str, value: Any
    ) -> None:
        """A bad limit or timeout names the option and the value."""
        with pytest.raises(ExecutionEngineFactoryError, match=option):
            ExecutionEngineFactory(bridge, **{option: value})

    async def test_repr(self, factory: ExecutionEngineFactory) -> None:
        """The repr shows the engine count and limit."""
        assert repr(factory) == "<ExecutionEngineFactory engines=0 users=0 limit=2 open>"


class TestCreation:
    async def test_engine_is_bound_to_the_context(
        self, bridge: RecordingBridge, make_context: MakeContext
    ) -> None:
        """The engine carries the context, an emitter for that user and the managers."""
        db, cache = object(), object()
        factory = ExecutionEngineFactory(bridge, database_session_manager=db, redis_manager=cache)
        ctx = make_context("alice")
        engine = await factory.create_for_user(ctx)
        assert ctx is engine.get_user_context()
        assert ("alice", ctx.thread_id, ctx.run_id) == (
            engine.websocket_emitter.user_id,
            engine.websocket_emitter.thread_id,
            engine.websocket_emitter.run_id,
        )
        assert (db, cache) == (engine.database_session_manager, engine.redis_manager)
        assert engine.is_active()
        await factory.shutdown()

    async def test_mapping_context_is_validated(self, factory: ExecutionEngineFactory) -> None:
        """A mapping is accepted and validated into a context."""
        engine = await factory.create_for_user(
            {"user_id": "bob", "thread_id": "t", "run_id": "r"}  # type: ignore[arg-type]
        )
        assert engine.context.user_id == "bob"

    async def test_metrics_count_creations(
        self, factory: ExecutionEngineFactory, make_context: MakeContext
    ) -> None:
        """Each creation is counted and its engine id listed."""
        first = await factory.create_for_user(make_context("a"))
        second = await factory.create_for_user(make_context("b"))
        metrics = factory.get_factory_metrics()
        assert (
            metrics["total_engines_created"],
            metrics["active_engines_count"],
            metrics["total_engines_cleaned"],
        ) == (2, 2, 0)
        assert [first.engine_id, second.engine_id] == metrics["active_engine_keys"]
        assert first.engine_id != second.engine_id
        assert_consistent(factory)

    @pytest.mark.parametrize(
        "bad",
        [
            None,
            "user-1",
            {"user_id": "", "thread_id": "t", "run_id": "r"},
            {"user_id": "null", "thread_id": "t", "run_id": "r"},
            {"user_id": "u", "thread_id": "t"},
        ],
    )
    async def test_invalid_context_takes_no_slot(
        self, factory: ExecutionEngineFactory, bad: Any
    ) -> None:
        """An invalid context raises InvalidContextError, takes no slot and is counted."""
        with pytest.raises(InvalidContextError):
            await factory.create_for_user(bad)
        metrics = factory.get_factory_metrics()
        assert (metrics["creation_errors"], metrics["active_engines_count"]) == (1, 0)
        assert_consistent(factory)

    async def test_agent_registry_failure_returns_the_slot(
        self, bridge: RecordingBridge, make_context: MakeContext
    ) -> None:
        """A registry that fails to build the user's agents fails creation and frees the slot."""

        class BrokenRegistry(AgentRegistry):
            def for_user(self, context: UserExecutionContext) -> Any:
                raise RuntimeError("agent store unavailable")

        factory = ExecutionEngineFactory(
            bridge, agent_registry=BrokenRegistry(), max_engines_per_user=1
        )
        with pytest.raises(RuntimeError, match="agent store unavailable"):
            await factory.create_for_user(make_context("alice"))
        assert factory.get_factory_metrics()["creation_errors"] == 1
        assert_consistent(factory)
        factory.agent_registry = AgentRegistry()
        assert (await factory.create_for_user(make_context("alice"))).is_active()
        await factory.shutdown()

    async def test_emitter_failure_returns_the_slot(
        self, bridge: RecordingBridge, make_context: MakeContext
    ) -> None:
        """An emitter that cannot be built fails creation, counts it and frees the slot."""

        def broken_emitter(*args: Any) -> UserWebSocketEmitter:
            raise ConnectionError("bridge offline")

        factory = ExecutionEngineFactory(
            bridge, emitter_factory=broken_emitter, max_engines_per_user=1
        )
        for _ in range(3):
            with pytest.raises(ConnectionError, match="bridge offline"):
                await factory.create_for_user(make_context("alice"))
        assert factory.get_factory_metrics()["creation_errors"] == 3
        assert factory.slot_ledger.count("alice") == 0  # type: ignore[attr-defined]

    async def test_engine_construction_failure_returns_the_slot(
        self, bridge: RecordingBridge, make_context: MakeContext
    ) -> None:
        """An engine class that raises in __init__ fails creation and frees the slot."""

        class BrokenEngine(UserExecutionEngine):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                raise MemoryError("no room")

        factory = ExecutionEngineFactory(bridge, engine_class=BrokenEngine, max_engines_per_user=1)
        with pytest.raises(MemoryError):
            await factory.create_for_user(make_context("alice"))
        assert factory.get_factory_metrics()["creation_errors"] == 1
        assert_consistent(factory)

    async def test_alias_create_execution_engine(
        self, factory: ExecutionEngineFactory, make_context: MakeContext
    ) -> None:
        """create_execution_engine is create_for_user under its old name."""
        engine = await factory.create_execution_engine(make_context())
        assert [engine.engine_id] == factory.get_factory_metrics()["active_engine_keys"]


class TestLimits:
    async def test_user_at_limit_is_refused_by_name(
        self, factory: ExecutionEngineFactory, make_context: MakeContext
    ) -> None:
        """A third engine for a user with limit 2 raises UserEngineLimitError (2/2)."""
        await factory.create_for_user(make_context("u-42"))
        await factory.create_for_user(make_context("u-42"))
        with pytest.raises(UserEngineLimitError) as caught:
            await factory.create_for_user(make_context("u-42"))
        assert (caught.value.user_id, caught.value.active, caught.value.limit) == ("u-42", 2, 2)
        assert "User 'u-42' already has 2 active engines (2/2)" in str(caught.value)
        assert isinstance(caught.value, ExecutionEngineFactoryError)
        assert factory.get_factory_metrics()["user_limit_rejections"] == 1
        assert_consistent(factory)

    async def test_users_have_independent_limits(
        self, factory: ExecutionEngineFactory, make_context: MakeContext
    ) -> None:
        """One user at the limit does not stop another user."""
        for _ in range(2):
            await factory.create_for_user(make_context("full"))
        engine = await factory.create_for_user(make_context("other"))
        assert factory.get_active_contexts() == {"full": 2, "other": 1}
        assert engine.is_active()

    async def test_closed_engines_do_not_count(
        self, factory: ExecutionEngineFactory, make_context: MakeContext
    ) -> None:
        """A cleaned-up engine frees its slot for a new one, also when closed directly."""
        first = await factory.create_for_user(make_context("u"))
        second = await factory.create_for_user(make_context("u"))
        await factory.cleanup_engine(first)
        await second.cleanup()  # closing the engine itself tells the factory
        assert factory.get_factory_metrics()["active_engines_count"] == 0
        await factory.create_for_user(make_context("u"))
        await factory.create_for_user(make_context("u"))
        assert_consistent(factory)

    async def test_concurrent_creates_admit_exactly_the_limit(
        self, bridge: RecordingBridge, make_context: MakeContext
    ) -> None:
        """200 concurrent creates for one user admit exactly max_engines_per_user."""
        factory = ExecutionEngineFactory(bridge, max_engines_per_user=3)
        results = await asyncio.gather(
            *(factory.create_for_user(make_context("hot")) for _ in range(200)),
            return_exceptions=True,
        )
        engines = [r for r in results if isinstance(r, UserExecutionEngine)]
        refused = [r for r in results if isinstance(r, UserEngineLimitError)]
        assert (len(engines), len(refused)) == (3, 197)
        assert factory.get_factory_metrics()["user_limit_rejections"] == 197
        assert_consistent(factory)
        await factory.shutdown()


class TestUserExecutionScope:
    async def test_engine_is_cleaned_up_after_the_block(
        self, factory: ExecutionEngineFactory, make_context: MakeContext
    ) -> None:
        """The scope yields an active engine and closes it on a normal exit."""
        async with factory.user_execution_scope(make_context()) as engine:
            assert engine.is_active()
            assert (await engine.execute_agent("demo", "hi")).success
        assert not engine.is_active()
        assert factory.get_factory_metrics()["active_engines_count"] == 0

    async def test_exception_in_body_cleans_up_and_propagates(
        self, factory: ExecutionEngineFactory, make_context: MakeContext
    ) -> None:
        """An exception in the block still closes the engine and reaches the caller."""
        with pytest.raises(ZeroDivisionError):
            async with factory.user_execution_scope(make_context()) as engine:
                _ = 1 / 0
        assert not engine.is_active()
        assert_consistent(factory)

    async def test_cancellation_in_body_cleans_up(
        self, factory: ExecutionEngineFactory, make_context: MakeContext
    ) -> None:
        """Cancelling the task inside the block closes the engine and frees the slot."""
        entered = asyncio.Event()
        engines: list[UserExecutionEngine] = []

        async def body() -> None:
            async with factory.user_execution_scope(make_context("c")) as engine:
                engines.append(engine)
                entered.set()
                await asyncio.Event().wait()

        task = asyncio.create_task(body())
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not engines[0].is_active()
        assert factory.get_active_contexts() == {}
        assert_consistent(factory)

    async def test_creation_failure_raises_without_cleanup(
        self, factory: ExecutionEngineFactory, make_context: MakeContext
    ) -> None:
        """A refused creation raises from the scope and leaves nothing behind."""
        for _ in range(2):
            await factory.create_for_user(make_context("full"))
        with pytest.raises(UserEngineLimitError):
            async with factory.user_execution_scope(make_context("full")):
                pytest.fail("the body must not run")
        assert factory.get_factory_metrics()["active_engines_count"] == 2

    async def test_cleanup_failure_is_logged_not_raised(
        self,
        factory: ExecutionEngineFactory,
        make_context: MakeContext,
        caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A failing engine cleanup at scope exit is logged and counted, not raised."""
        async with factory.user_execution_scope(make_context()) as engine:

            async def broken() -> None:
                raise RuntimeError("cleanup exploded")

            monkeypatch.setattr(engine, "cleanup", broken)
        assert factory.get_factory_metrics()["cleanup_errors"] == 1
        assert "cleanup exploded" in caplog.text
        assert_consistent(factory)


class TestCleanupEngine:
    async def test_cleanup_removes_and_counts(
        self, factory: ExecutionEngineFactory, make_context: MakeContext
    ) -> None:
        """cleanup_engine closes the engine, removes it and counts it once."""
        engine = await factory.create_for_user(make_context())
        await factory.cleanup_engine(engine)
        await factory.cleanup_engine(engine)
        metrics = factory.get_factory_metrics()
        assert (
            metrics["active_engines_count"],
            metrics["total_engines_cleaned"],
            metrics["active_engine_keys"],
        ) == (0, 1, [])
        assert not engine.is_active()

    async def test_none_and_unknown_engines_are_no_ops(
        self, factory: ExecutionEngineFactory, bridge: RecordingBridge, make_context: MakeContext
    ) -> None:
        """None, or an engine from another factory, changes nothing."""
        other_factory = ExecutionEngineFactory(bridge)
        stranger = await other_factory.create_for_user(make_context())
        await factory.create_for_user(make_context())
        await factory.cleanup_engine(None)
        await factory.cleanup_engine(stranger)
        assert stranger.is_active()
        assert (
            factory.get_factory_metrics()["active_engines_count"],
            factory.get_factory_metrics()["total_engines_cleaned"],
        ) == (1, 0)
        await other_factory.shutdown()

    async def test_failing_cleanup_still_removes_and_counts(
        self,
        factory: ExecutionEngineFactory,
        make_context: MakeContext,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A raising engine.cleanup() is counted in cleanup_errors and the engine removed."""
        engine = await factory.create_for_user(make_context("u"))

        async def broken() -> None:
            raise RuntimeError("boom")

        monkeypatch.setattr(engine, "cleanup", broken)
        await factory.cleanup_engine(engine)
        metrics = factory.get_factory_metrics()
        assert (
            metrics["cleanup_errors"],
            metrics["active_engines_count"],
            metrics["total_engines_cleaned"],
        ) == (1, 0, 1)
        assert_consistent(factory)

    async def test_cancelled_cleanup_still_removes(
        self,
        factory: ExecutionEngineFactory,
        make_context: MakeContext,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A cleanup cancelled mid-way still removes the engine and frees its slot."""
        engine = await factory.create_for_user(make_context("u"))
        entered = asyncio.Event()

        async def slow_cleanup() -> None:
            entered.set()
            await asyncio.Event().wait()

        monkeypatch.setattr(engine, "cleanup", slow_cleanup)
        task = asyncio.create_task(factory.cleanup_engine(engine))
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert factory.get_active_contexts() == {}
        assert_consistent(factory)

    async def test_cleanup_user_context(
        self, factory: ExecutionEngineFactory, make_context: MakeContext
    ) -> None:
        """cleanup_user_context closes every engine of one user and no one else's."""
        mine = [await factory.create_for_user(make_context("me")) for _ in range(2)]
        theirs = await factory.create_for_user(make_context("them"))
        assert await factory.cleanup_user_context("me") == 2
        assert await factory.cleanup_user_context("nobody") == 0
        assert not any(engine.is_active() for engine in mine)
        assert theirs.is_active()
        assert factory.get_active_contexts() == {"them": 1}


class TestReaper:
    async def test_expired_engines_are_closed_and_counted(
        self, factory: ExecutionEngineFactory, make_context: MakeContext, clock: Any
    ) -> None:
        """Engines older than engine_timeout_seconds are closed; younger ones stay."""
        old = [await factory.create_for_user(make_context(f"old-{i}")) for i in range(3)]
        clock.advance(200)
        young = await factory.create_for_user(make_context("young"))
        clock.advance(101)
        assert await factory.reap_expired() == 3
        assert not any(engine.is_active() for engine in old)
        assert young.is_active()
        metrics = factory.get_factory_metrics()
        assert (
            metrics["timeout_cleanups"],
            metrics["total_engines_cleaned"],
            metrics["active_engines_count"],
        ) == (3, 3, 1)

    async def test_sweep_stops_at_the_first_young_engine(
        self, factory: ExecutionEngineFactory, make_context: MakeContext, clock: Any
    ) -> None:
        """A sweep looks only at expired engines and the first young one, not the rest."""
        await factory.create_for_user(make_context("old"))
        clock.advance(301)
        young = [await factory.create_for_user(make_context(f"y-{i}")) for i in range(50)]
        looked_at: list[str] = []
        for engine in young:
            original = engine.is_active

            def spy(engine: UserExecutionEngine = engine, original: Any = original) -> bool:
                looked_at.append(engine.engine_id)
                return bool(original())

            engine.is_active = spy  # type: ignore[method-assign]
        assert await factory.reap_expired() == 1
        assert [young[0].engine_id] == looked_at[:1]
        assert len(looked_at) <= 2

    async def test_no_engines_is_a_no_op(self, factory: ExecutionEngineFactory) -> None:
        """A sweep of an empty factory reaps nothing."""
        assert await factory.reap_expired() == 0

    async def test_inactive_engine_at_the_front_is_removed_not_counted_as_timeout(
        self,
        factory: ExecutionEngineFactory,
        make_context: MakeContext,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """An engine that went inactive without telling the factory is removed by the sweep."""
        engine = await factory.create_for_user(make_context())
        monkeypatch.setattr(engine, "is_active", lambda: False)
        assert await factory.reap_expired() == 0
        assert factory.get_factory_metrics()["active_engines_count"] == 0
        assert factory.get_factory_metrics()["timeout_cleanups"] == 0

    async def test_background_reaper_runs_and_survives_errors(
        self, bridge: RecordingBridge, make_context: MakeContext, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The reaper task starts with the first engine, sweeps, and keeps going after errors."""
        factory = ExecutionEngineFactory(bridge, cleanup_interval_seconds=0.001)
        assert not factory.get_factory_metrics()["cleanup_task_running"]
        calls: list[int] = []
        original = factory.reap_expired

        async def flaky() -> int:
            calls.append(1)
            if len(calls) <= 2:
                raise RuntimeError("sweep failed")
            return await original()

        monkeypatch.setattr(factory, "reap_expired", flaky)
        await factory.create_for_user(make_context())
        assert factory.get_factory_metrics()["cleanup_task_running"]
        while len(calls) < 4:
            await asyncio.sleep(0.001)
        assert factory.get_factory_metrics()["reaper_errors"] == 2
        assert factory.get_factory_metrics()["cleanup_task_running"]
        await factory.shutdown()
        assert not factory.get_factory_metrics()["cleanup_task_running"]

    async def test_background_reaper_closes_expired_engines(
        self, bridge: RecordingBridge, make_context: MakeContext
    ) -> None:
        """With a short timeout the background reaper closes an engine by itself."""
        factory = ExecutionEngineFactory(
            bridge, engine_timeout_seconds=0.01, cleanup_interval_seconds=0.005
        )
        engine = await factory.create_for_user(make_context())
        while engine.is_active():
            await asyncio.sleep(0.005)
        assert factory.get_factory_metrics()["timeout_cleanups"] == 1
        await factory.shutdown()


class TestMetrics:
    async def test_initial_metrics(self, factory: ExecutionEngineFactory) -> None:
        """A new factory reports zeros, its settings and no keys."""
        metrics = factory.get_factory_metrics()
        expected_zero = (
            "total_engines_created",
            "total_engines_cleaned",
            "active_engines_count",
            "creation_errors",
            "cleanup_errors",
            "timeout_cleanups",
            "user_limit_rejections",
        )
        assert dict.fromkeys(expected_zero, 0) == {key: metrics[key] for key in expected_zero}
        assert (
            metrics["max_engines_per_user"],
            metrics["engine_timeout_seconds"],
            metrics["cleanup_interval"],
            metrics["cleanup_task_running"],
            metrics["active_engine_keys"],
        ) == (2, 300, 60, False, [])
        assert "timestamp" in metrics

    async def test_without_keys(
        self, factory: ExecutionEngineFactory, make_context: MakeContext
    ) -> None:
        """include_keys=False leaves out the engine ids."""
        await factory.create_for_user(make_context())
        metrics = factory.get_factory_metrics(include_keys=False)
        assert "active_engine_keys" not in metrics
        assert metrics["active_engines_count"] == 1

    async def test_summary(
        self, factory: ExecutionEngineFactory, make_context: MakeContext
    ) -> None:
        """The summary lists each engine's stats by id."""
        engine = await factory.create_for_user(make_context("alice"))
        summary = factory.get_active_engines_summary()
        assert (summary["total_active_engines"], summary["active_users"]) == (1, 1)
        assert summary["engines"][engine.engine_id]["user_id"] == "alice"

    async def test_summary_survives_a_misbehaving_engine(
        self,
        factory: ExecutionEngineFactory,
        make_context: MakeContext,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """An engine whose stats raise is reported with its error; the others still show."""
        bad = await factory.create_for_user(make_context("bad"))
        good = await factory.create_for_user(make_context("good"))

        def broken() -> dict[str, Any]:
            raise RuntimeError("stats broke")

        monkeypatch.setattr(bad, "get_user_execution_stats", broken)
        engines = factory.get_active_engines_summary()["engines"]
        assert engines[bad.engine_id]["error"] == "RuntimeError: stats broke"
        assert engines[good.engine_id]["user_id"] == "good"

    async def test_active_contexts_per_user(
        self, factory: ExecutionEngineFactory, make_context: MakeContext
    ) -> None:
        """get_active_contexts counts engines per user."""
        for user in ("a", "a", "b"):
            await factory.create_for_user(make_context(user))
        assert factory.get_active_contexts() == {"a": 2, "b": 1}
        assert len(factory.engines_for_user("a")) == 2


class TestShutdown:
    async def test_empty_shutdown(self, factory: ExecutionEngineFactory) -> None:
        """Shutting down an empty factory works and leaves it refusing work."""
        await factory.shutdown()
        assert factory.get_factory_metrics()["is_shutdown"]

    async def test_shutdown_closes_every_engine(
        self, factory: ExecutionEngineFactory, make_context: MakeContext
    ) -> None:
        """Every engine is closed and counted; metrics stay honest, not fabricated."""
        engines = [await factory.create_for_user(make_context(f"u{i % 3}")) for i in range(6)]
        await factory.shutdown()
        assert not any(engine.is_active() for engine in engines)
        metrics = factory.get_factory_metrics()
        assert (
            metrics["active_engines_count"],
            metrics["total_engines_created"],
            metrics["total_engines_cleaned"],
        ) == (0, 6, 6)

    async def test_running_agents_are_stopped_within_the_deadline(
        self, bridge: RecordingBridge, make_context: MakeContext
    ) -> None:
        """Shutdown cancels running agents and their callers get failed results."""
        gate, agents = Gate(), AgentRegistry()
        agents.register("slow", gate)
        factory = ExecutionEngineFactory(bridge, agent_registry=agents)
        engine = await factory.create_for_user(make_context())
        caller = asyncio.create_task(engine.execute_agent("slow", "hi"))
        await gate.started.wait()
        await factory.shutdown()
        assert (await caller).error == "engine closed"
        assert factory.get_factory_metrics()["active_engines_count"] == 0

    async def test_stuck_engine_is_forced_out_at_the_deadline(
        self, bridge: RecordingBridge, make_context: MakeContext
    ) -> None:
        """An agent that ignores cancellation cannot hold shutdown past its deadline."""
        stubborn, agents = Stubborn(), AgentRegistry()
        agents.register("stubborn", stubborn)
        factory = ExecutionEngineFactory(
            bridge, agent_registry=agents, shutdown_timeout_seconds=0.05
        )
        engine = await factory.create_for_user(make_context())
        caller = asyncio.create_task(engine.execute_agent("stubborn", "hi"))
        await stubborn.started.wait()
        await factory.shutdown()
        metrics = factory.get_factory_metrics()
        assert (metrics["active_engines_count"], metrics["cleanup_errors"]) == (0, 1)
        assert not engine.is_active()
        stubborn.release.set()
        await caller

    async def test_engine_cleanup_errors_are_counted(
        self,
        factory: ExecutionEngineFactory,
        make_context: MakeContext,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Engines whose cleanup fails are counted and still removed at shutdown."""
        engines = [await factory.create_for_user(make_context(f"u{i}")) for i in range(3)]

        async def broken() -> None:
            raise RuntimeError("nope")

        monkeypatch.setattr(engines[1], "cleanup", broken)
        await factory.shutdown()
        metrics = factory.get_factory_metrics()
        assert (metrics["cleanup_errors"], metrics["active_engines_count"]) == (1, 0)

    async def test_refuses_new_work(
        self, factory: ExecutionEngineFactory, make_context: MakeContext
    ) -> None:
        """After shutdown, creating an engine raises FactoryShutdownError."""
        await factory.shutdown()
        with pytest.raises(FactoryShutdownError, match="shut down"):
            await factory.create_for_user(make_context())
        with pytest.raises(FactoryShutdownError):
            async with factory.user_execution_scope(make_context()):
                pytest.fail("the body must not run")

    async def test_idempotent_and_concurrent(
        self, factory: ExecutionEngineFactory, make_context: MakeContext
    ) -> None:
        """Shutting down twice, or from two tasks at once, closes each engine once."""
        await factory.create_for_user(make_context())
        await asyncio.gather(factory.shutdown(), factory.shutdown())
        await factory.cleanup_all_contexts()
        assert factory.get_factory_metrics()["total_engines_cleaned"] == 1

    async def test_no_task_left_behind(
        self, factory: ExecutionEngineFactory, make_context: MakeContext
    ) -> None:
        """After shutdown no task of the factory or its engines is pending."""
        before = asyncio.all_tasks()
        async with factory.user_execution_scope(make_context()) as engine:
            await engine.execute_agent("demo", "hi")
        await factory.create_for_user(make_context())
        await factory.shutdown()
        assert before == asyncio.all_tasks()


class TestIsolation:
    async def test_many_concurrent_users_only_see_their_own_events(
        self, factory: ExecutionEngineFactory, bridge: RecordingBridge, make_context: MakeContext
    ) -> None:
        """100 users running at once each receive exactly their own five events."""
        users = [f"user-{i}" for i in range(100)]

        async def run(user_id: str) -> str:
            async with factory.user_execution_scope(make_context(user_id)) as engine:
                await engine.execute_agent("demo", f"message from {user_id}")
                return engine.context.run_id

        run_ids = dict(zip(users, await asyncio.gather(*(run(u) for u in users)), strict=True))
        for user_id in users:
            events = bridge.events_for(user_id)
            assert len(events) == 5
            assert {user_id} == {event["user_id"] for event in events}
            assert {run_ids[user_id]} == {event["run_id"] for event in events}
            assert f"message from {user_id}" == events[0]["data"]["message"]
        assert sum(len(bridge.events_for(u)) for u in users) == 500


class TestInterleavings:
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        steps=st.lists(
            st.tuples(
                st.sampled_from(["create", "cleanup", "close_engine", "reap", "user"]),
                st.integers(0, 3),
            ),
            max_size=40,
        )
    )
    def test_random_create_and_cleanup_keep_the_books(self, steps: list[tuple[str, int]]) -> None:
        """Any order of create, cleanup, close, reap and per-user cleanup keeps the books."""
        asyncio.run(_interleave(steps))


async def _interleave(steps: list[tuple[str, int]]) -> None:
    now = [1000.0]
    agents = AgentRegistry()
    agents.register("demo", demo_agent)
    factory = ExecutionEngineFactory(RecordingBridge(), agent_registry=agents, clock=lambda: now[0])
    live: list[UserExecutionEngine] = []
    for action, n in steps:
        user = f"user-{n}"
        if action == "create":
            try:
                live.append(
                    await factory.create_for_user(
                        UserExecutionContext(user_id=user, thread_id="t", run_id=f"r{len(live)}")
                    )
                )
            except UserEngineLimitError:
                assert factory.max_engines_per_user == factory.get_active_contexts()[user]
        elif action in ("cleanup", "close_engine") and live:
            engine = live.pop(n % len(live))
            await (factory.cleanup_engine(engine) if action == "cleanup" else engine.cleanup())
        elif action == "reap":
            now[0] += 100 * n
            await factory.reap_expired()
        elif action == "user":
            await factory.cleanup_user_context(user)
        live = [engine for engine in live if engine.is_active()]
        assert_consistent(factory)
        assert {e.engine_id for e in live} == set(
            factory.get_factory_metrics()["active_engine_keys"]
        )
    await factory.shutdown()
    assert_consistent(factory)


class TestCleanupEngineNow:
    """cleanup_engine_now: the same cleanup without awaiting, when nothing would wait."""

    async def test_an_idle_engine_is_cleaned_up_at_once(
        self, factory: ExecutionEngineFactory, make_context: MakeContext
    ) -> None:
        """No run in progress and in-memory slots: done synchronously, counted, slot back."""
        engine = await factory.create_for_user(make_context())
        assert factory.cleanup_engine_now(engine) is True
        assert (False, True) == (engine.is_active(), engine.closed)
        assert engine.websocket_emitter.is_closed
        assert 1 == factory.get_factory_metrics()["total_engines_cleaned"]
        assert factory.cleanup_engine_now(engine) is True  # gone: nothing left to do
        assert_consistent(factory)

    async def test_an_engine_with_a_run_is_left_to_the_awaited_cleanup(
        self, factory: ExecutionEngineFactory, make_context: MakeContext
    ) -> None:
        """A run in progress needs cancelling: nothing is done, cleanup_engine does it all."""
        gate = Gate()
        factory.agent_registry.register("gate", gate)
        engine = await factory.create_for_user(make_context())
        run = asyncio.create_task(engine.execute_agent("gate", "hi"))
        await gate.started.wait()
        assert factory.cleanup_engine_now(engine) is False
        assert (True, 1) == (
            engine.is_active(),
            factory.get_factory_metrics()["active_engines_count"],
        )
        await factory.cleanup_engine(engine)
        await asyncio.wait((run,))
        assert gate.cancelled
        assert_consistent(factory)

    async def test_a_ledger_that_suspends_is_left_to_the_awaited_cleanup(
        self, bridge: RecordingBridge, make_context: MakeContext
    ) -> None:
        """A ledger that is not immediate is never released synchronously."""

        class Suspending(InMemorySlotLedger):
            immediate = False

        factory = ExecutionEngineFactory(bridge, slot_ledger=Suspending())
        engine = await factory.create_for_user(make_context())
        assert factory.cleanup_engine_now(engine) is False
        assert engine.is_active()
        await factory.shutdown()
