"""Shared machinery of the benchmarks: an event loop that outlives rounds, batched async
rounds, the sizes of a quick run versus a full one, and the peers we compare against.

Every benchmark records (``Bench.record``) what ``scripts/bench`` needs for its table (see
``tests/benchmarks/report.py``): ``role`` (``ours``, ``peer`` or ``baseline``), ``ops``
(operations per round, so a round's time divides into a per-operation time), ``targets``
and any ``metrics`` measured besides time. Under ``--benchmark-disable`` (the normal test
run) each body runs once, possibly with smaller sizes, and its assertions still check that
it did what it measures.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

import dishka
import pytest
from dependency_injector import providers
from enginescope.engines import (
    ExecutionEngineFactory,
    UserExecutionContext,
    UserExecutionEngine,
    WebSocketBridge,
)

T = TypeVar("T")

_numbers = itertools.count(1)


class Bench:
    """The ``benchmark`` fixture plus an event loop that outlives rounds.

    ``full`` is ``True`` when benchmarks are timed (``scripts/bench``) and ``False`` in the
    normal run, where each body runs once and a benchmark may use smaller sizes.
    """

    def __init__(self, benchmark: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.benchmark = benchmark
        self.loop = loop
        self.full: bool = not benchmark.disabled

    def run(self, awaitable: Awaitable[T]) -> T:
        """Run ``awaitable`` to completion on the benchmark's loop (untimed)."""

        async def wrapped() -> T:  # created inside the loop, as dependency-injector wants
            return await awaitable

        return self.loop.run_until_complete(wrapped())

    def record(self, *, role: str, ops: int, **extra: Any) -> None:
        """Note what the table needs: ``role``, ``ops`` per round, targets, metrics."""
        self.benchmark.extra_info.update(role=role, ops=ops, **extra)

    def batches(
        self, batch: Callable[[], Awaitable[T]], *, ops: int, rounds: int, role: str, **extra: Any
    ) -> T:
        """Time ``rounds`` runs of the coroutine ``batch()`` of ``ops`` operations each
        (one run in the normal test run).

        One ``run_until_complete`` per round keeps the loop's own cost (tens of
        microseconds) out of the per-operation time: it is divided by ``ops``.
        """
        self.record(role=role, ops=ops, **extra)
        return self.benchmark.pedantic(  # type: ignore[no-any-return]
            lambda: self.loop.run_until_complete(batch()),
            rounds=rounds if self.full else 1,
            warmup_rounds=1,
        )


@pytest.fixture
def bench(benchmark: Any) -> Iterator[Bench]:
    """A :class:`Bench` on a fresh event loop, closed after the test."""
    loop = asyncio.new_event_loop()
    try:
        yield Bench(benchmark, loop)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def make_contexts(count: int, *, prefix: str = "user") -> list[UserExecutionContext]:
    """``count`` valid contexts of ``count`` distinct users."""
    batch = next(_numbers)
    return [
        UserExecutionContext(user_id=f"{prefix}-{batch}-{i}", thread_id=f"t-{i}", run_id=f"r-{i}")
        for i in range(count)
    ]


@pytest.fixture(scope="session")
def contexts() -> Callable[..., list[UserExecutionContext]]:
    """``contexts(count)``: ``count`` contexts of ``count`` distinct users."""
    return make_contexts


# -- peers ---------------------------------------------------------------------------------

_plain_ids = itertools.count(1)


class PlainEngine:
    """What an engine is without enginescope: its context, its user's bridge, an id, a
    creation time and an async ``close()``; no validation, slots or registry."""

    def __init__(self, context: UserExecutionContext, websocket_bridge: WebSocketBridge) -> None:
        self.engine_id = f"plain-{next(_plain_ids)}"
        self.context = context
        self.user_id = context.user_id
        self.websocket_bridge = websocket_bridge
        self.created_at = datetime.now(UTC)
        self.active = True

    async def close(self) -> None:
        self.active = False


@pytest.fixture
def plain_engine_factory() -> Callable[[WebSocketBridge], providers.Factory[PlainEngine]]:
    """dependency-injector's ``Factory`` of a :class:`PlainEngine` bound to a bridge."""

    def build(bridge: WebSocketBridge) -> providers.Factory[PlainEngine]:
        return providers.Factory(PlainEngine, websocket_bridge=bridge)

    return build


class _DishkaEngineProvider(dishka.Provider):
    """dishka: the user context comes from the request scope; the engine is an async
    generator of that scope, made by the same factory and cleaned up when the scope exits,
    so the comparison is the DI machinery around identical engine work."""

    context = dishka.from_context(provides=UserExecutionContext, scope=dishka.Scope.REQUEST)

    def __init__(self, factory: ExecutionEngineFactory) -> None:
        super().__init__()
        self._factory = factory

    @dishka.provide(scope=dishka.Scope.REQUEST)
    async def engine(self, context: UserExecutionContext) -> AsyncIterator[UserExecutionEngine]:
        engine = await self._factory.create_for_user(context)
        yield engine
        await self._factory.cleanup_engine(engine)


@pytest.fixture
def dishka_container() -> Callable[[ExecutionEngineFactory], dishka.AsyncContainer]:
    """``make_async_container`` with a request-scoped async-generator engine."""

    def build(factory: ExecutionEngineFactory) -> dishka.AsyncContainer:
        return dishka.make_async_container(_DishkaEngineProvider(factory))

    return build
