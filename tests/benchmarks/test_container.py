"""The container: a whole user scope, and resolving the engine again inside one.

Ours is ``EngineContainer`` with ``user_scope``; the peers are dishka's async container
(a REQUEST scope around the same factory's engine) and dependency-injector's
``ContextLocalSingleton``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import dishka
import pytest
from dependency_injector import containers, providers
from enginescope.containers import EngineContainer, user_scope
from enginescope.engines import (
    AgentWebSocketBridge,
    ExecutionEngineFactory,
    UserExecutionContext,
    UserExecutionEngine,
)

LIFECYCLES = 1000
RESOLVES = 10_000


@pytest.fixture
def container(bench: Any) -> Iterator[EngineContainer]:
    """An ``EngineContainer`` with its resources started on the benchmark's loop."""
    built = EngineContainer()
    bench.run(_call(built.init_resources))
    try:
        yield built
    finally:
        bench.run(_call(built.shutdown_resources))


async def _call(function: Callable[[], Any]) -> Any:
    """Call inside the loop: dependency-injector makes its futures on the running loop."""
    return await function()


def factory_metrics(bench: Any, container: EngineContainer) -> dict[str, Any]:
    factory = bench.run(_call(container.engine_factory))
    return factory.get_factory_metrics()  # type: ignore[no-any-return]


@pytest.mark.benchmark(group="user scope: enter, resolve the engine, exit")
def test_user_scope_lifecycle(
    bench: Any, container: EngineContainer, contexts: Callable[[int], list[UserExecutionContext]]
) -> None:
    """Each scope gets its own user's engine, which is cleaned up when the scope exits."""
    users = contexts(LIFECYCLES)

    async def batch() -> int:
        checked = 0
        for ctx in users:
            async with user_scope(ctx):
                engine = await container.user_engine()
                ok = engine.is_active() and engine.user_id == ctx.user_id
            checked += ok and not engine.is_active()
        return checked

    checked = bench.batches(
        batch,
        ops=LIFECYCLES,
        rounds=30,
        role="ours",
        targets={"max_ratio": 1.0},
        note="both sides create and clean up a real engine with an ExecutionEngineFactory",
    )

    metrics = factory_metrics(bench, container)
    assert LIFECYCLES == checked
    assert 0 == metrics["active_engines_count"]
    assert metrics["total_engines_created"] == metrics["total_engines_cleaned"]


@pytest.mark.benchmark(group="user scope: enter, resolve the engine, exit")
def test_dishka_request_scope_lifecycle(
    bench: Any,
    contexts: Callable[[int], list[UserExecutionContext]],
    dishka_container: Callable[[ExecutionEngineFactory], dishka.AsyncContainer],
) -> None:
    """Peer: dishka's REQUEST scope with the same factory's engine as an async generator."""
    users = contexts(LIFECYCLES)
    factory = ExecutionEngineFactory(AgentWebSocketBridge())
    app = dishka_container(factory)

    async def batch() -> int:
        checked = 0
        for ctx in users:
            async with app(context={UserExecutionContext: ctx}) as request:
                engine = await request.get(UserExecutionEngine)
                ok = engine.is_active() and engine.user_id == ctx.user_id
            checked += ok and not engine.is_active()
        return checked

    checked = bench.batches(batch, ops=LIFECYCLES, rounds=30, role="peer")

    metrics = factory.get_factory_metrics()
    bench.run(app.close())
    bench.run(factory.shutdown())
    assert LIFECYCLES == checked
    assert 0 == metrics["active_engines_count"]


MESSAGES = 1000
YIELD_EVERY = 100


def message_fields(count: int) -> list[tuple[str, str]]:
    """What an app has per message: the authenticated user and its thread (100 users)."""
    return [(f"user-{n % 100}", f"thread-{n % 100}") for n in range(count)]


@pytest.mark.benchmark(group="per message: build the context, scope, engine, exit")
def test_per_message_lifecycle(bench: Any, container: EngineContainer) -> None:
    """As an app does it per message: a fresh UserExecutionContext, user_scope, the engine,
    exit; yielding to the loop every 100 messages as a server would."""
    fields = message_fields(MESSAGES)

    async def batch() -> int:
        checked = 0
        for n, (user_id, thread_id) in enumerate(fields):
            ctx = UserExecutionContext(user_id=user_id, thread_id=thread_id, run_id=f"run-{n}")
            async with user_scope(ctx):
                engine = await container.user_engine()
                checked += engine.user_id == user_id
            if n % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)
        return checked

    checked = bench.batches(
        batch,
        ops=MESSAGES,
        rounds=30,
        role="ours",
        targets={"max_ratio": 1.0},
        note="both sides build the context and create and clean up a real engine",
    )

    assert MESSAGES == checked
    assert 0 == factory_metrics(bench, container)["active_engines_count"]


@pytest.mark.benchmark(group="per message: build the context, scope, engine, exit")
def test_dishka_per_message_lifecycle(
    bench: Any, dishka_container: Callable[[ExecutionEngineFactory], dishka.AsyncContainer]
) -> None:
    """Peer: the same per-message work through dishka's async REQUEST scope."""
    fields = message_fields(MESSAGES)
    factory = ExecutionEngineFactory(AgentWebSocketBridge())
    app = dishka_container(factory)

    async def batch() -> int:
        checked = 0
        for n, (user_id, thread_id) in enumerate(fields):
            ctx = UserExecutionContext(user_id=user_id, thread_id=thread_id, run_id=f"run-{n}")
            async with app(context={UserExecutionContext: ctx}) as request:
                engine = await request.get(UserExecutionEngine)
                checked += engine.user_id == user_id
            if n % YIELD_EVERY == YIELD_EVERY - 1:
                await asyncio.sleep(0)
        return checked

    checked = bench.batches(batch, ops=MESSAGES, rounds=30, role="peer")

    bench.run(app.close())
    bench.run(factory.shutdown())
    assert MESSAGES == checked


@pytest.mark.benchmark(group="warm resolve inside a scope")
def test_warm_resolve(
    bench: Any, container: EngineContainer, contexts: Callable[[int], list[UserExecutionContext]]
) -> None:
    """Once resolved, ``await container.user_engine()`` is the same engine, cheaply."""
    (ctx,) = contexts(1)

    async def batch() -> int:
        same = 0
        async with user_scope(ctx):
            first = await container.user_engine()
            for _ in range(RESOLVES):
                same += (await container.user_engine()) is first
        return same

    same = bench.batches(
        batch,
        ops=RESOLVES,
        rounds=50,
        role="ours",
        targets={"max_us": 0.3, "max_ratio": 1.5},
        note=f"a round also enters one scope and creates its engine, shared by {RESOLVES:,}",
    )

    assert RESOLVES == same
    assert 0 == factory_metrics(bench, container)["active_engines_count"]


class _PeerContainer(containers.DeclarativeContainer):
    bridge = providers.Object(AgentWebSocketBridge)
    context = providers.Object(None)
    engine = providers.ContextLocalSingleton(dict, context=context, bridge=bridge)


@pytest.mark.benchmark(group="warm resolve inside a scope")
def test_context_local_singleton_warm_call(bench: Any) -> None:
    """Peer: dependency-injector's ContextLocalSingleton called again in the same context."""
    peer = _PeerContainer()

    async def batch() -> int:
        first = peer.engine()
        return sum(peer.engine() is first for _ in range(RESOLVES))

    same = bench.batches(batch, ops=RESOLVES, rounds=50, role="peer")

    assert RESOLVES == same
