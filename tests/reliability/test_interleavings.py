"""Interleavings: a hypothesis state machine drives creates, scopes (the factory's and the
container's), cleanups, runs, cancellations mid-create and mid-exit, reaper sweeps, user
cleanups, sockets coming and going, and shutdown, for several users in random orders. After
every rule the invariants hold and the factory agrees with a model of what should be open.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import hypothesis.strategies as st
from dependency_injector import providers
from enginescope.containers import EngineContainer, user_scope
from enginescope.engines import (
    AgentRegistry,
    AgentWebSocketBridge,
    ConnectionLimitError,
    EngineBusyError,
    EngineClosedError,
    ExecutionEngineFactory,
    FactoryShutdownError,
    UserEngineLimitError,
    UserExecutionContext,
    UserExecutionEngine,
)
from enginescope.engines.testing import FakeSocket
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.reliability.fakes import (
    FakeClock,
    Gate,
    Stepper,
    SteppingLedger,
    gated_agent,
    stepping_emitter_factory,
)
from tests.reliability.invariants import OUR_TASK_PREFIX, check_bridge, check_factory

USERS = ("u-0", "u-1", "u-2")
LIMIT = 2
TIMEOUT = 60.0
users = st.sampled_from(USERS)
picks = st.integers(min_value=0, max_value=1000)
_numbers = itertools.count(1)


@dataclass
class OpenScope:
    """A scope the machine entered and has not exited yet."""

    kind: str  # "factory" or "container"
    manager: Any
    context: contextvars.Context
    engine: UserExecutionEngine | None


class EngineMachine(RuleBasedStateMachine):
    """One factory, one bridge, one container, one event loop per example."""

    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.clock = FakeClock()
        self.stepper = Stepper()
        self.gate = Gate()
        registry = AgentRegistry()
        registry.register("gated", gated_agent(self.gate))
        self.bridge = AgentWebSocketBridge(queue_size=64, max_connections_per_user=4)
        self.factory = ExecutionEngineFactory(
            self.bridge,
            agent_registry=registry,
            slot_ledger=SteppingLedger(self.stepper),
            emitter_factory=stepping_emitter_factory(self.stepper),
            clock=self.clock,
            max_engines_per_user=LIMIT,
            max_concurrent_runs=2,
            engine_timeout_seconds=TIMEOUT,
            cleanup_interval_seconds=3600,
            shutdown_timeout_seconds=2,
        )
        self.container = EngineContainer()
        self.container.engine_factory.override(providers.Object(self.factory))
        self.model: dict[str, UserExecutionEngine] = {}  # engine_id -> engine expected open
        self.seen: list[UserExecutionEngine] = []
        self.owned: list[UserExecutionEngine] = []
        self.scopes: list[OpenScope] = []
        self.runs: list[asyncio.Task[Any]] = []
        self.sockets: dict[str, list[FakeSocket]] = {user: [] for user in USERS}

    # -- plumbing ----------------------------------------------------------------------

    def run(
        self, coro: Coroutine[Any, Any, Any], context: contextvars.Context | None = None
    ) -> Any:
        return self.runner.run(coro, context=context)

    def context(self, user_id: str) -> UserExecutionContext:
        number = next(_numbers)
        return UserExecutionContext(user_id=user_id, thread_id=f"t-{number}", run_id=f"r-{number}")

    def expect_create(self, user_id: str) -> type[BaseException] | None:
        if self.factory.is_shutdown:
            return FactoryShutdownError
        held = sum(1 for engine in self.model.values() if engine.user_id == user_id)
        return UserEngineLimitError if held >= LIMIT else None

    def opened(self, engine: UserExecutionEngine) -> None:
        assert engine.is_active()
        self.model[engine.engine_id] = engine
        self.seen.append(engine)

    def closed(self, engine: UserExecutionEngine | None) -> None:
        if engine is not None:
            self.model.pop(engine.engine_id, None)

    async def settle(self) -> None:
        """Let agents reach the gate, senders drain and cancelled runs report."""
        for _ in range(3):
            await asyncio.sleep(0)
        await asyncio.wait_for(self.bridge.flush(), 2)

    # -- creating ----------------------------------------------------------------------

    @rule(user_id=users)
    def create(self, user_id: str) -> None:
        expected = self.expect_create(user_id)
        engine = self.attempt(expected, self.factory.create_for_user(self.context(user_id)))
        if engine is None:
            return
        self.opened(engine)
        self.owned.append(engine)

    @rule(user_id=users)
    def enter_factory_scope(self, user_id: str) -> None:
        expected = self.expect_create(user_id)
        manager = self.factory.user_execution_scope(self.context(user_id))
        engine = self.attempt(expected, manager.__aenter__())
        if engine is None:
            return
        self.opened(engine)
        self.scopes.append(OpenScope("factory", manager, contextvars.copy_context(), engine))

    @rule(user_id=users)
    def enter_container_scope(self, user_id: str) -> None:
        expected = self.expect_create(user_id)
        manager = user_scope(self.context(user_id))
        context = contextvars.copy_context()
        self.run(manager.__aenter__(), context)
        scope = OpenScope("container", manager, context, None)
        scope.engine = self.attempt(expected, self._resolve_twice(), context)
        if scope.engine is None:
            self.run(manager.__aexit__(None, None, None), context)
            return
        self.opened(scope.engine)
        self.scopes.append(scope)

    def attempt(
        self,
        expected: type[BaseException] | None,
        coro: Coroutine[Any, Any, Any],
        context: contextvars.Context | None = None,
    ) -> Any:
        """Run a create; check it failed exactly when ``expected`` says; its engine or None."""
        error: BaseException | None = None
        engine = None
        try:
            engine = self.run(coro, context)
        except (UserEngineLimitError, FactoryShutdownError) as refused:
            error = refused
        assert expected is (None if error is None else type(error)), f"{expected} != {error!r}"
        return engine

    async def _resolve_twice(self) -> UserExecutionEngine:
        engine = await self.container.user_engine()
        assert engine is await self.container.user_engine(), "one engine per scope"
        return engine

    @rule(user_id=users, k=st.integers(min_value=1, max_value=2))
    def cancel_mid_create(self, user_id: str, k: int) -> None:
        expected = self.expect_create(user_id)
        engine = self.run(self._cancel_at(k, self.factory.create_for_user(self.context(user_id))))
        if engine is not None:
            assert expected is None
            self.opened(engine)
            self.owned.append(engine)

    async def _cancel_at(
        self, k: int, coro: Coroutine[Any, Any, Any], context: contextvars.Context | None = None
    ) -> Any:
        """Run ``coro`` (in ``context``), cancel it at its k-th checkpoint; its result, or
        None if it was cancelled."""
        self.stepper.arm(k)
        task = asyncio.get_running_loop().create_task(coro, context=context)
        reached = asyncio.ensure_future(self.stepper.reached.wait())
        await asyncio.wait((task, reached), return_when=asyncio.FIRST_COMPLETED)
        reached.cancel()
        blocked = self.stepper.reached.is_set() and not task.done()
        if blocked:
            task.cancel()
        self.stepper.open()
        self.stepper.arm(None)
        await asyncio.wait((task,))
        if blocked:
            assert task.cancelled(), f"cancellation swallowed: {task!r}"
            return None
        if isinstance(task.exception(), UserEngineLimitError | FactoryShutdownError):
            return None
        return task.result()

    # -- closing -----------------------------------------------------------------------

    @precondition(lambda self: self.scopes)
    @rule(pick=picks, how=st.sampled_from(["normal", "error", "cancelled"]))
    def exit_scope(self, pick: int, how: str) -> None:
        scope = self.scopes.pop(pick % len(self.scopes))
        error: BaseException | None = {
            "normal": None,
            "error": RuntimeError("body failed"),
            "cancelled": asyncio.CancelledError(),
        }[how]
        raised: BaseException | None = None
        try:
            self.run(
                scope.manager.__aexit__(type(error) if error else None, error, None), scope.context
            )
        except BaseException as exc:
            raised = exc
        assert raised is None or raised is error, f"scope exit raised {raised!r}"
        self.closed(scope.engine)
        assert scope.engine is None or not scope.engine.is_active()

    @precondition(lambda self: self.scopes)
    @rule(pick=picks, k=st.integers(min_value=1, max_value=3))
    def cancel_mid_exit(self, pick: int, k: int) -> None:
        scope = self.scopes.pop(pick % len(self.scopes))
        exit_ = scope.manager.__aexit__(None, None, None)
        self.run(self._cancel_at(k, exit_, scope.context))
        self.closed(scope.engine)

    @precondition(lambda self: self.seen)
    @rule(pick=picks, via_factory=st.booleans())
    def cleanup(self, pick: int, via_factory: bool) -> None:
        engine = self.seen[pick % len(self.seen)]
        if via_factory:
            self.run(self.factory.cleanup_engine(engine))
        else:
            self.run(engine.cleanup())
        self.closed(engine)
        assert not engine.is_active()

    @rule()
    def cleanup_nothing(self) -> None:
        self.run(self.factory.cleanup_engine(None))

    @rule(user_id=users)
    def cleanup_user(self, user_id: str) -> None:
        expected = sum(1 for engine in self.model.values() if engine.user_id == user_id)
        assert expected == self.run(self.factory.cleanup_user_context(user_id))
        for engine in list(self.model.values()):
            if engine.user_id == user_id:
                self.closed(engine)

    @rule(seconds=st.sampled_from([0.0, 1.0, 30.0, TIMEOUT, TIMEOUT + 1]))
    def reap(self, seconds: float) -> None:
        self.clock.advance(seconds)
        deadline = self.clock() - TIMEOUT
        expired = [e for e in self.model.values() if e.created_monotonic <= deadline]
        assert len(expired) == self.run(self.factory.reap_expired())
        for engine in expired:
            self.closed(engine)

    @precondition(lambda self: not self.factory.is_shutdown)
    @rule()
    def shutdown(self) -> None:
        self.run(self.factory.shutdown())
        self.model.clear()
        assert all(not engine.is_active() for engine in self.seen)

    # -- runs --------------------------------------------------------------------------

    @precondition(lambda self: self.seen)
    @rule(pick=picks)
    def start_run(self, pick: int) -> None:
        engine = self.seen[pick % len(self.seen)]

        async def start() -> None:
            task = asyncio.ensure_future(engine.execute_agent("gated", "hi"))
            await asyncio.sleep(0)
            if task.done() and isinstance(task.exception(), EngineClosedError | EngineBusyError):
                assert isinstance(task.exception(), EngineBusyError) == engine.is_active()
                return
            self.runs.append(task)
            await self.settle()

        self.run(start())

    @precondition(lambda self: any(not run.done() for run in self.runs))
    @rule(pick=picks)
    def cancel_run(self, pick: int) -> None:
        running = [run for run in self.runs if not run.done()]
        task = running[pick % len(running)]

        async def cancel() -> None:
            task.cancel()
            await asyncio.wait((task,))
            assert task.cancelled()
            await self.settle()

        self.run(cancel())

    @rule()
    def finish_runs(self) -> None:
        async def finish() -> None:
            self.gate.open()
            if self.runs:
                await asyncio.wait(self.runs)
            for run in self.runs:
                if not run.cancelled():
                    assert run.result().success or run.result().error_type == "CancelledError"
            self.runs.clear()
            self.gate.event.clear()
            await self.settle()

        self.run(finish())

    # -- sockets -----------------------------------------------------------------------

    @precondition(lambda self: not self.bridge.is_closed)
    @rule(user_id=users)
    def connect(self, user_id: str) -> None:
        async def connect() -> None:
            socket = FakeSocket(f"{user_id}-{len(self.sockets[user_id])}")
            live = len(self.bridge.connections_for(user_id))
            full = live >= self.bridge.max_connections_per_user
            try:
                self.bridge.register_connection(user_id, socket)
            except ConnectionLimitError:
                assert full  # refused only at the per-user cap, and nothing was registered
                assert live == len(self.bridge.connections_for(user_id))
                return
            assert not full
            self.sockets[user_id].append(socket)

        self.run(connect())

    @rule(user_id=users, pick=picks, how=st.sampled_from(["unregister", "break"]))
    def disconnect(self, user_id: str, pick: int, how: str) -> None:
        connections = self.bridge.connections_for(user_id)
        if not connections:
            return
        connection = connections[pick % len(connections)]
        if how == "unregister":
            self.bridge.unregister_connection(connection)
        else:
            connection.socket.fail_with = ConnectionResetError("gone")  # type: ignore[attr-defined]
        self.run(self.settle())

    # -- invariants --------------------------------------------------------------------

    @invariant()
    def factory_is_consistent(self) -> None:
        check_factory(self.factory)

    @invariant()
    def factory_agrees_with_the_model(self) -> None:
        for user_id in USERS:
            expected = {e.engine_id for e in self.model.values() if e.user_id == user_id}
            actual = {engine.engine_id for engine in self.factory.engines_for_user(user_id)}
            assert expected == actual, f"{user_id}: expected {expected}, registered {actual}"
        for engine in self.seen:
            assert engine.is_active() == (engine.engine_id in self.model), f"{engine!r}"

    @invariant()
    def bridge_is_consistent(self) -> None:
        check_bridge(self.bridge)

    @invariant()
    def every_socket_got_only_its_users_events(self) -> None:
        for user_id, sockets in self.sockets.items():
            for socket in sockets:
                foreign = [m for m in socket.messages if m["user_id"] != user_id]
                assert not foreign, f"{socket!r} of {user_id} got {foreign}"
                seqs: dict[str, list[int]] = {}
                for message in socket.messages:
                    seqs.setdefault(message["run_id"], []).append(message["seq"])
                for run_id, numbers in seqs.items():
                    assert numbers == sorted(set(numbers)), f"{run_id}: seq {numbers}"

    def teardown(self) -> None:
        try:
            self.run(self._close_everything())
        finally:
            self.runner.close()

    async def _close_everything(self) -> None:
        self.gate.open()
        for scope in self.scopes:
            await asyncio.wait_for(
                asyncio.create_task(
                    scope.manager.__aexit__(None, None, None), context=scope.context
                ),
                5,
            )
        await asyncio.wait_for(self.factory.shutdown(), 5)
        if self.runs:
            await asyncio.wait(self.runs, timeout=5)
        check_factory(self.factory)
        assert 0 == self.factory.get_factory_metrics()["active_engines_count"]
        assert all(not engine.is_active() for engine in self.seen)
        await self.bridge.close()
        check_bridge(self.bridge)
        current = asyncio.current_task()
        left = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        assert not left, f"tasks left after shutdown: {left}"
        assert not [t for t in left if t.get_name().startswith(OUR_TASK_PREFIX)]


EngineMachine.TestCase.settings = settings(
    max_examples=500,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestEngineInterleavings = EngineMachine.TestCase
