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
    UserExecutionContext,
)

from tests.reliability.conftest import LoopGuard
from tests.reliability.fakes import DiscardSocket
from tests.reliability.invariants import check_bridge, check_factory, check_no_tasks_of_ours

TOTAL = 100_000
WARM_UP = 20_000  # lifecycles before the first measurement
TRACED = 20_000  # lifecycles traced by tracemalloc after the warm-up
USERS = 500
CONCURRENCY = 200
MiB = 1024 * 1024
MAX_NEW_OBJECTS = 1_000


async def chatty_agent(run: AgentRun) -> str:
    await run.think("thinking")
    return str(await run.use_tool("echo", lambda text: text, text=run.message))


def registry() -> AgentRegistry:
    agents = AgentRegistry()
    agents.register("chatty", chatty_agent)
    return agents


async def in_batches(one: Callable[[int], Awaitable[None]], lo: int, hi: int) -> None:
    """Run ``one(n)`` for lo <= n < hi, CONCURRENCY lifecycles at a time."""

    async def worker(first: int) -> None:
        for n in range(first, hi, CONCURRENCY):
            await one(n)

    await asyncio.gather(*(worker(lo + w) for w in range(CONCURRENCY)))


async def quiet(flush: Callable[[], Awaitable[None]]) -> None:
    await flush()
    gc.collect()


@pytest.mark.slow
class TestSoak:
    async def test_100k_scoped_engines_with_events_leave_nothing_behind(
        self, guard: LoopGuard
    ) -> None:
        """100,000 engines, alternately through factory.user_execution_scope and through
        user_scope + container.user_engine, each running a five-event agent into a real
        bridge with one socket per user. After a 20k warm-up, tracemalloc over the next 20k
        lifecycles grows < 1 MiB (a leak of 53 bytes per lifecycle would fail), the live
        object count at 100k is within 1,000 of the count at 20k, every event reached only
        its user, and the invariants hold."""
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
            if n % 2:
                async with factory.user_execution_scope(ctx) as engine:
                    result = await engine.execute_agent("chatty", "hi")
            else:
                async with user_scope(ctx):
                    engine = await container.user_engine()
                    result = await engine.execute_agent("chatty", "hi")
            assert result.success

        await in_batches(one, 0, WARM_UP)
        await quiet(bridge.flush)
        objects_at_warm_up = len(gc.get_objects())
        tracemalloc.start()
        try:
            await in_batches(one, WARM_UP, WARM_UP + TRACED)
            await quiet(bridge.flush)
            grown = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        await in_batches(one, WARM_UP + TRACED, TOTAL)
        await quiet(bridge.flush)
        new_objects = len(gc.get_objects()) - objects_at_warm_up

        assert grown < MiB, f"memory grew {grown / MiB:.2f} MiB over {TRACED} lifecycles"
        assert new_objects < MAX_NEW_OBJECTS, f"{new_objects} more live objects at 100k"
        assert TOTAL * 5 == sum(socket.count for socket in sockets)
        assert 0 == sum(socket.foreign for socket in sockets)
        metrics = factory.get_factory_metrics()
        assert (TOTAL, TOTAL, 0, 0) == (
            metrics["total_engines_created"],
            metrics["total_engines_cleaned"],
            metrics["active_engines_count"],
            metrics["creation_errors"] + metrics["cleanup_errors"],
        )
        check_factory(factory)
        check_bridge(bridge)
        stopping = container.shutdown_resources()
        if stopping is not None:
            await stopping
        await bridge.close()
        check_no_tasks_of_ours()
