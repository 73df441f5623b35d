"""Memory: what one live, idle engine costs, measured with tracemalloc at 100,000 engines.

The contexts are built before tracing starts: they are the callers' input and exist whether
or not an engine is made for them (their size is reported beside, for the record). The
timed part is filling the factory under tracemalloc, which is slower than without it.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from enginescope.engines import (
    AgentRegistry,
    AgentWebSocketBridge,
    ExecutionEngineFactory,
    UserExecutionContext,
)


def traced_bytes(build: Callable[[], Any]) -> tuple[Any, int]:
    """What ``build()`` returns, and the bytes it left allocated."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        built = build()
        gc.collect()
        return built, tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


@pytest.mark.benchmark(group="memory per idle engine")
def test_bytes_per_idle_engine(
    bench: Any, contexts: Callable[..., list[UserExecutionContext]]
) -> None:
    """100,000 idle engines cost at most 1 KiB each, all of them registered and active."""
    count = 100_000 if bench.full else 10_000
    users = contexts(count)
    factory = ExecutionEngineFactory(
        AgentWebSocketBridge(), agent_registry=AgentRegistry(), max_engines=None
    )
    measured: dict[str, float] = {}

    async def fill() -> None:
        for ctx in users:
            await factory.create_for_user(ctx)

    def populate() -> None:
        _, used = traced_bytes(lambda: bench.run(fill()))
        measured["bytes_per_engine"] = used / count

    _, context_bytes = traced_bytes(lambda: contexts(1000))
    bench.record(
        role="ours",
        ops=count,
        targets={"max_bytes_per_engine": 1024},
        note="the time is filling the factory under tracemalloc",
    )
    bench.benchmark.pedantic(populate, rounds=1)  # one fill: the engines stay for the checks

    metrics = factory.get_factory_metrics(include_keys=False)
    bench.benchmark.extra_info["metrics"] = {
        "bytes_per_engine": round(measured["bytes_per_engine"]),
        "bytes_per_context": round(context_bytes / 1000),
        "engines": count,
    }
    assert count == metrics["active_engines_count"]
    assert count == len(factory.get_active_contexts())
    bench.run(factory.shutdown())
    assert 0 == factory.get_factory_metrics()["active_engines_count"]
