"""The factory on its own: construction, and an engine created and cleaned up directly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from enginescope.engines import (
    AgentRegistry,
    AgentWebSocketBridge,
    ExecutionEngineFactory,
    UserExecutionContext,
)

OPS = 1000


@pytest.mark.benchmark(group="factory construction")
def test_factory_construction(bench: Any, registry: AgentRegistry) -> None:
    """Building a factory takes microseconds and starts nothing until the first engine."""
    bridge = AgentWebSocketBridge()
    bench.record(role="ours", ops=1, targets={"max_us": 50.0})

    factory = bench.benchmark(ExecutionEngineFactory, bridge, agent_registry=registry)

    metrics = factory.get_factory_metrics()
    assert 0 == metrics["active_engines_count"]
    assert metrics["cleanup_task_running"] is False
    assert factory.is_shutdown is False


@pytest.mark.benchmark(group="create_for_user + cleanup_engine")
def test_create_and_cleanup(
    bench: Any, registry: AgentRegistry, contexts: Callable[[int], list[UserExecutionContext]]
) -> None:
    """Each engine is created for its user, registered, then cleaned up and unregistered."""
    users = contexts(OPS)
    factory = ExecutionEngineFactory(AgentWebSocketBridge(), agent_registry=registry)

    async def batch() -> int:
        checked = 0
        for ctx in users:
            engine = await factory.create_for_user(ctx)
            registered = engine.is_active() and engine.user_id == ctx.user_id
            await factory.cleanup_engine(engine)
            checked += registered and not engine.is_active()
        return checked

    checked = bench.batches(batch, ops=OPS, rounds=50, role="ours")

    metrics = factory.get_factory_metrics()
    bench.run(factory.shutdown())
    assert OPS == checked
    assert 0 == metrics["active_engines_count"]
    assert metrics["total_engines_created"] == metrics["total_engines_cleaned"]
    assert 0 == metrics["total_engines_created"] % OPS


@pytest.mark.benchmark(group="create_for_user + cleanup_engine")
def test_dependency_injector_factory_create_and_close(
    bench: Any,
    contexts: Callable[[int], list[UserExecutionContext]],
    plain_engine_factory: Callable[..., Any],
) -> None:
    """Peer: dependency-injector's Factory builds an engine-shaped object, then it closes."""
    users = contexts(OPS)
    provider = plain_engine_factory(AgentWebSocketBridge())

    async def batch() -> int:
        checked = 0
        for ctx in users:
            engine = provider(context=ctx)
            made = engine.active and engine.user_id == ctx.user_id
            await engine.close()
            checked += made and not engine.active
        return checked

    checked = bench.batches(batch, ops=OPS, rounds=50, role="peer")

    assert OPS == checked
