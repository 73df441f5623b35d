"""Cancellation at every await: each await point of create, scope exit, cleanup and shutdown
is made to block in turn (k = 1, 2, ... until the operation finishes without reaching k),
the task is cancelled there, and nothing may be left behind."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from enginescope.engines import (
    AgentRegistry,
    ExecutionEngineFactory,
    UserEngineLimitError,
    UserExecutionContext,
    UserExecutionEngine,
)

from tests.reliability.conftest import LoopGuard
from tests.reliability.fakes import (
    FakeClock,
    Gate,
    Stepper,
    SteppingBridge,
    SteppingEngine,
    SteppingLedger,
    gated_agent,
    stepping_emitter_factory,
)
from tests.reliability.invariants import check_factory, check_quiescent

MAX_POINTS = 200


@dataclass
class World:
    """A factory whose ledger, bridge, emitters, engines and agents all pass the stepper."""

    stepper: Stepper
    clock: FakeClock
    gate: Gate
    factory: ExecutionEngineFactory
    engines: list[UserExecutionEngine] = field(default_factory=list)
    runs: list[asyncio.Task[Any]] = field(default_factory=list)
    numbers: int = 0

    def context(self, user_id: str) -> UserExecutionContext:
        self.numbers += 1
        return UserExecutionContext(
            user_id=user_id, thread_id=f"t-{self.numbers}", run_id=f"r-{self.numbers}"
        )

    async def engine_with_runs(self, user_id: str, runs: int) -> UserExecutionEngine:
        """An engine (made with the stepper disarmed) with ``runs`` agents at the gate."""
        engine = await self.factory.create_for_user(self.context(user_id))
        self.engines.append(engine)
        for _ in range(runs):
            self.runs.append(asyncio.create_task(engine.execute_agent("gated", "hi")))
        while self.gate.waiting < len(self.runs):
            await asyncio.sleep(0)
        return engine


def build_world(stepper: Stepper) -> World:
    clock, gate = FakeClock(), Gate()
    registry = AgentRegistry()
    registry.register("gated", gated_agent(gate, stepper))
    SteppingEngine.stepper = stepper
    factory = ExecutionEngineFactory(
        SteppingBridge(stepper),
        agent_registry=registry,
        slot_ledger=SteppingLedger(stepper),
        emitter_factory=stepping_emitter_factory(stepper),
        engine_class=SteppingEngine,
        clock=clock,
        max_engines_per_user=3,
        engine_timeout_seconds=60,
        cleanup_interval_seconds=3600,
        shutdown_timeout_seconds=5,
    )
    return World(stepper, clock, gate, factory)


Setup = Callable[[World], Awaitable[Callable[[], Awaitable[object]]]]
Verify = Callable[[World, bool], Awaitable[None]]


async def cancel_at_every_await(setup: Setup, verify: Verify) -> list[str]:
    """Run the operation built by ``setup`` once per await point, cancelling it at the k-th.

    Returns the label of every point it cancelled at, so a test can assert coverage.
    """
    cancelled_at: list[str] = []
    for k in range(1, MAX_POINTS):
        baseline = set(asyncio.all_tasks())
        stepper = Stepper()
        world = build_world(stepper)
        operation = await setup(world)
        stepper.arm(k)
        task = asyncio.create_task(operation())
        reached = asyncio.create_task(stepper.reached.wait())
        await asyncio.wait((task, reached), return_when=asyncio.FIRST_COMPLETED)
        reached.cancel()
        blocked = stepper.reached.is_set() and not task.done()
        if blocked:
            cancelled_at.append(f"{k}:{stepper.blocked_label}")
            task.cancel()
        stepper.open()
        await asyncio.wait((task,))
        if blocked:
            assert task.cancelled(), (
                f"cancelled at {stepper.blocked_label} (k={k}), the operation swallowed the "
                f"cancellation: {task!r}"
            )
        else:
            task.result()
        try:
            await verify(world, blocked)
        except AssertionError as exc:
            where = f"k={k} ({stepper.blocked_label})"
            raise AssertionError(f"after cancelling at {where}: {exc}") from exc
        await finish(world)
        await check_quiescent(baseline)
        if not blocked and not stepper.reached.is_set():
            return cancelled_at
    raise AssertionError(f"the operation still reached await point {MAX_POINTS}")


async def finish(world: World) -> None:
    """Shut the world down and check nothing is left: engines, slots, runs."""
    world.gate.open()
    await asyncio.wait_for(world.factory.shutdown(), 10)
    if world.runs:
        await asyncio.wait(world.runs)
    check_factory(world.factory)
    assert 0 == world.factory.get_factory_metrics()["active_engines_count"]
    assert not any(engine.is_active() for engine in world.engines)


async def settled(world: World) -> None:
    """Let the runs a cleanup cancelled finish their error events."""
    if world.runs:
        _, pending = await asyncio.wait(world.runs, timeout=2)
        assert not pending, f"runs still going after their engine closed: {pending}"


def assert_engine_gone(world: World, engine: UserExecutionEngine, *, cancelled: bool) -> None:
    assert not engine.is_active(), f"{engine!r} still active"
    assert engine.engine_id not in world.factory.get_factory_metrics()["active_engine_keys"]
    held = world.factory.slot_ledger._slots.get(engine.context.user_id, set())  # type: ignore[attr-defined]
    assert engine.engine_id not in held, f"slot of {engine!r} leaked"
    if not cancelled:  # a cancelled cleanup leaves it open so the cancelled runs can report
        assert engine.websocket_emitter.is_closed, f"{engine!r} left its emitter open"
    assert 0 == engine.active_runs


class TestCreate:
    async def test_a_cancelled_create_takes_no_slot_and_registers_nothing(
        self, guard: LoopGuard
    ) -> None:
        """Cancelling create_for_user at any await leaves no engine and no slot."""
        created: list[UserExecutionEngine] = []

        async def setup(world: World) -> Callable[[], Awaitable[object]]:
            async def create() -> None:
                created.append(await world.factory.create_for_user(world.context("u-1")))

            return create

        async def verify(world: World, cancelled: bool) -> None:
            check_factory(world.factory)
            expected = 0 if cancelled else 1
            assert expected == world.factory.get_factory_metrics()["active_engines_count"]
            assert expected == world.factory.slot_ledger.count("u-1")  # type: ignore[attr-defined]

        points = await cancel_at_every_await(setup, verify)
        assert ["1:ledger.acquire:before", "2:ledger.acquire:after"] == points

    async def test_a_cancelled_create_at_the_limit_leaves_the_other_engines_alone(
        self, guard: LoopGuard
    ) -> None:
        """A create cancelled while a user is full neither frees nor takes a slot."""

        async def setup(world: World) -> Callable[[], Awaitable[object]]:
            for _ in range(world.factory.max_engines_per_user - 1):
                await world.engine_with_runs("u-1", 1)

            async def create() -> None:
                await world.factory.create_for_user(world.context("u-1"))
                with pytest.raises(UserEngineLimitError, match=r"\(3/3\)"):
                    await world.factory.create_for_user(world.context("u-1"))

            return create

        async def verify(world: World, cancelled: bool) -> None:
            check_factory(world.factory)
            full = world.factory.max_engines_per_user
            assert world.factory.slot_ledger.count("u-1") in (full - 1, full)  # type: ignore[attr-defined]
            assert all(engine.is_active() for engine in world.engines)

        points = await cancel_at_every_await(setup, verify)
        assert 3 <= len(points)


class TestScopeExit:
    async def test_a_scope_cancelled_anywhere_cleans_its_engine_up(self, guard: LoopGuard) -> None:
        """Cancelling a user_execution_scope at any await (create, body, exit) leaves the
        engine inactive and unregistered, its slot returned, its emitter closed, its run over."""
        engines: list[UserExecutionEngine] = []

        async def setup(world: World) -> Callable[[], Awaitable[object]]:
            async def scoped() -> None:
                async with world.factory.user_execution_scope(world.context("u-1")) as engine:
                    engines.append(engine)
                    world.engines.append(engine)
                    world.runs.append(asyncio.create_task(engine.execute_agent("gated", "hi")))
                    await world.gate.entered.wait()

            return scoped

        async def verify(world: World, cancelled: bool) -> None:
            await settled(world)
            check_factory(world.factory)
            assert 0 == world.factory.get_factory_metrics()["active_engines_count"]
            assert 0 == world.factory.slot_ledger.total()  # type: ignore[attr-defined]
            for engine in world.engines:
                assert_engine_gone(world, engine, cancelled=cancelled)

        points = await cancel_at_every_await(setup, verify)
        labels = {point.split(":", 1)[1] for point in points}
        assert {"ledger.acquire:before", "bridge.send:agent_started", "emitter.close"} <= labels
        assert {"ledger.release", "engine.cleanup:extra", "bridge.send:agent_stopped"} <= labels


class TestCleanup:
    @pytest.mark.parametrize("how", ["factory.cleanup_engine", "engine.cleanup"])
    async def test_a_cancelled_cleanup_still_closes_the_engine(
        self, guard: LoopGuard, how: str
    ) -> None:
        """Cancelling cleanup_engine(engine) or engine.cleanup() at any await still leaves
        the engine inactive, unregistered, its slot returned and its runs finished; the
        user's other engine is untouched."""

        async def setup(world: World) -> Callable[[], Awaitable[object]]:
            engine = await world.engine_with_runs("u-1", 2)
            await world.engine_with_runs("u-1", 1)
            if how == "engine.cleanup":
                return engine.cleanup
            return lambda: world.factory.cleanup_engine(engine)

        async def verify(world: World, cancelled: bool) -> None:
            closing, other = world.engines
            await asyncio.wait_for(asyncio.wait([world.runs[0], world.runs[1]]), 2)
            check_factory(world.factory)
            assert_engine_gone(world, closing, cancelled=cancelled)
            assert [other.engine_id] == world.factory.get_factory_metrics()["active_engine_keys"]
            assert 1 == world.factory.slot_ledger.count("u-1")  # type: ignore[attr-defined]
            assert other.is_active()
            assert 1 == other.active_runs

        points = await cancel_at_every_await(setup, verify)
        labels = {point.split(":", 1)[1] for point in points}
        assert {"bridge.send:agent_stopped", "emitter.close", "ledger.release"} <= labels

    async def test_a_cancelled_user_cleanup_closes_every_engine_of_that_user(
        self, guard: LoopGuard
    ) -> None:
        """cleanup_user_context cancelled at any await: a retry closes what is left, and the
        other user keeps their engine."""

        async def setup(world: World) -> Callable[[], Awaitable[object]]:
            await world.engine_with_runs("u-1", 1)
            await world.engine_with_runs("u-1", 1)
            await world.engine_with_runs("u-2", 1)
            return lambda: world.factory.cleanup_user_context("u-1")

        async def verify(world: World, cancelled: bool) -> None:
            check_factory(world.factory, settled=False)
            await world.factory.cleanup_user_context("u-1")
            check_factory(world.factory)
            assert {"u-2": 1} == world.factory.get_active_contexts()
            assert world.engines[2].is_active()

        await cancel_at_every_await(setup, verify)

    async def test_a_cancelled_reaper_sweep_leaves_consistent_state(self, guard: LoopGuard) -> None:
        """reap_expired cancelled at any await: a later sweep finishes the job; only the
        expired engines are closed."""

        async def setup(world: World) -> Callable[[], Awaitable[object]]:
            await world.engine_with_runs("u-1", 1)
            await world.engine_with_runs("u-2", 1)
            world.clock.advance(61)
            await world.engine_with_runs("u-1", 1)
            return world.factory.reap_expired

        async def verify(world: World, cancelled: bool) -> None:
            check_factory(world.factory, settled=False)
            await world.factory.reap_expired()
            check_factory(world.factory)
            assert [world.engines[2].engine_id] == world.factory.get_factory_metrics()[
                "active_engine_keys"
            ]

        await cancel_at_every_await(setup, verify)


class TestShutdown:
    async def test_a_cancelled_shutdown_can_be_finished_by_calling_it_again(
        self, guard: LoopGuard
    ) -> None:
        """shutdown() cancelled at any await still refuses new work, and calling it again
        closes every engine and returns every slot."""

        async def setup(world: World) -> Callable[[], Awaitable[object]]:
            await world.engine_with_runs("u-1", 2)
            await world.engine_with_runs("u-1", 1)
            await world.engine_with_runs("u-2", 1)
            return world.factory.shutdown

        async def verify(world: World, cancelled: bool) -> None:
            assert world.factory.is_shutdown
            await asyncio.wait_for(world.factory.shutdown(), 10)
            check_factory(world.factory)
            assert 0 == world.factory.get_factory_metrics()["active_engines_count"]
            assert 0 == world.factory.slot_ledger.total()  # type: ignore[attr-defined]
            await settled(world)
            for engine in world.engines:
                assert_engine_gone(world, engine, cancelled=cancelled)

        points = await cancel_at_every_await(setup, verify)
        assert 8 <= len(points)


class TestContainerScope:
    async def test_a_cancelled_user_scope_cleans_its_engine_up(self, guard: LoopGuard) -> None:
        """async with user_scope(ctx) + container.user_engine, cancelled at any await
        (creation, the body, the scope's teardown): the engine is closed and unregistered,
        its slot returned, its run over, and no scope is left current."""
        from dependency_injector import providers  # noqa: PLC0415
        from enginescope.containers import EngineContainer, user_scope  # noqa: PLC0415
        from enginescope.providers import get_current_scope  # noqa: PLC0415

        async def setup(world: World) -> Callable[[], Awaitable[object]]:
            container = EngineContainer()
            container.engine_factory.override(providers.Object(world.factory))

            async def scoped() -> None:
                async with user_scope(world.context("u-1")):
                    engine = await container.user_engine()
                    world.engines.append(engine)
                    world.runs.append(asyncio.create_task(engine.execute_agent("gated", "hi")))
                    await world.gate.entered.wait()
                assert get_current_scope() is None

            return scoped

        async def verify(world: World, cancelled: bool) -> None:
            await settled(world)
            check_factory(world.factory)
            assert 0 == world.factory.get_factory_metrics()["active_engines_count"]
            assert 0 == world.factory.slot_ledger.total()  # type: ignore[attr-defined]
            for engine in world.engines:
                assert_engine_gone(world, engine, cancelled=cancelled)
            assert get_current_scope() is None

        points = await cancel_at_every_await(setup, verify)
        labels = {point.split(":", 1)[1] for point in points}
        assert {"ledger.acquire:before", "emitter.close", "ledger.release"} <= labels
