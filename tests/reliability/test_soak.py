"""Soak: 100,000 engines created and destroyed through scopes with events flowing; memory
stays flat after warm-up and the invariants hold at the end."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import Awaitable, Callable

import pytest
from enginescope.containers import EngineContainer, EngineSettings, user_scope
from enginescope.engines import (
    AgentRegistry,
    AgentRun,
    AgentWebSocketBridge,
    ExecutionEngineFactory,
    UserExecutionContext,
)

from tests.reliability.conftest import LoopGuard
from tests.reliability.fakes import DiscardSocket
from tests.reliability.invariants import check_bridge, check_factory, check_no_tasks_of_ours

TOTAL = 100_000
WARM_UP = 20_000
USERS = 500
CONCURRENCY = 200
MiB = 1024 * 1024


async def chatty_agent(run: AgentRun) -> str:
    await run.think("thinking")
    return str(await run.use_tool("echo", lambda text: text, text=run.message))


def registry() -> AgentRegistry:
    agents = AgentRegistry()
    agents.register("chatty", chatty_agent)
    return agents


def traced_bytes() -> int:
    """Bytes allocated since tracing started (at the warm-up mark) and still alive."""
    if not tracemalloc.is_tracing():
        tracemalloc.start()  # the warm-up is done: trace from here on
        return 0
    return tracemalloc.get_traced_memory()[0]


def gc_objects() -> int:
    """Objects the garbage collector tracks: a leaked engine, scope or task shows here."""
    return len(gc.get_objects())


async def soak_all(
    one: Callable[[int], Awaitable[None]],
    flush: Callable[[], Awaitable[None]],
    measure: Callable[[], int],
) -> tuple[int, int]:
    """Run ``one(n)`` for every n < TOTAL, CONCURRENCY at a time; return ``measure()``
    after WARM_UP lifecycles and after all of them (after a flush and a full collection)."""
    marks: list[int] = []
    for lo, hi in ((0, WARM_UP), (WARM_UP, TOTAL)):

        async def worker(first: int, hi: int = hi) -> None:
            for n in range(first, hi, CONCURRENCY):
                await one(n)

        await asyncio.gather(*(worker(lo + w) for w in range(CONCURRENCY)))
        await flush()
        gc.collect()
        marks.append(measure())
    return marks[0], marks[1]


@pytest.mark.slow
class TestSoak:
    async def test_100k_factory_scopes_with_events_keep_memory_flat(self, guard: LoopGuard) -> None:
        """100,000 engines through user_execution_scope, each running a five-event agent
        into a real bridge with one socket per user: memory grows < 1 MiB from 20k to 100k,
        every event reached only its user, and nothing is left registered."""
        bridge = AgentWebSocketBridge(queue_size=1024)
        sockets = [DiscardSocket(f"user-{u}") for u in range(USERS)]
        for socket in sockets:
            bridge.register_connection(socket.user_id, socket)
        factory = ExecutionEngineFactory(
            bridge, agent_registry=registry(), max_engines_per_user=CONCURRENCY
        )

        async def one(n: int) -> None:
            ctx = UserExecutionContext(
                user_id=f"user-{n % USERS}", thread_id=f"t-{n}", run_id=f"r-{n}"
            )
            async with factory.user_execution_scope(ctx) as engine:
                result = await engine.execute_agent("chatty", "hi")
            assert result.success

        try:
            warm, end = await soak_all(one, bridge.flush, traced_bytes)
        finally:
            tracemalloc.stop()
        assert end - warm < MiB, f"memory grew {(end - warm) / MiB:.2f} MiB from 20k to 100k"
        assert TOTAL * 5 == sum(socket.count for socket in sockets)
        assert 0 == sum(socket.foreign for socket in sockets)
        metrics = factory.get_factory_metrics()
        assert (TOTAL, TOTAL, 0) == (
            metrics["total_engines_created"],
            metrics["total_engines_cleaned"],
            metrics["active_engines_count"],
        )
        check_factory(factory)
        check_bridge(bridge)
        await factory.shutdown()
        await bridge.close()
        check_no_tasks_of_ours()

    async def test_100k_container_scopes_keep_memory_flat(self, guard: LoopGuard) -> None:
        """100,000 user_scope + container.user_engine lifecycles with events flowing: no
        more live objects at 100k than at 20k (tracemalloc would double this soak's time;
        the factory soak above measures bytes), the factory's counters exact at the end."""
        bridge = AgentWebSocketBridge(queue_size=1024)
        sockets = [DiscardSocket(f"user-{u}") for u in range(USERS)]
        for socket in sockets:
            bridge.register_connection(socket.user_id, socket)
        container = EngineContainer()
        container.settings.override(EngineSettings(max_engines_per_user=CONCURRENCY))
        container.websocket_bridge.override(bridge)
        container.agent_registry.override(registry())
        await container.init_resources()
        factory = await container.engine_factory()

        async def one(n: int) -> None:
            ctx = UserExecutionContext(
                user_id=f"user-{n % USERS}", thread_id=f"t-{n}", run_id=f"r-{n}"
            )
            async with user_scope(ctx):
                engine = await container.user_engine()
                result = await engine.execute_agent("chatty", "hi")
            assert result.success

        warm, end = await soak_all(one, bridge.flush, gc_objects)
        assert end - warm < 1_000, f"{end - warm} more live objects at 100k than at 20k"
        assert TOTAL * 5 == sum(socket.count for socket in sockets)
        assert 0 == sum(socket.foreign for socket in sockets)
        check_factory(factory)
        assert 0 == factory.get_factory_metrics()["active_engines_count"]
        stopping = container.shutdown_resources()
        if stopping is not None:
            await stopping
        await bridge.close()
        check_no_tasks_of_ours()
