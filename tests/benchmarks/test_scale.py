"""Scale: creating, cleaning up and reading metrics cost the same at 10 and 100,000 engines.

Each operation is timed against a factory that already holds 10 (the baseline) or 100,000
live engines, one per user. A round creates (or cleans up) a batch of engines for other
users; the untimed setup of the next round puts the population back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from enginescope.engines import (
    AgentRegistry,
    AgentWebSocketBridge,
    ExecutionEngineFactory,
    UserExecutionContext,
    UserExecutionEngine,
)

BATCH = 100
SIZES = {"10 engines": 10, "100k engines": 100_000}


@dataclass
class Population:
    """A factory holding ``size`` live engines, on its own event loop."""

    loop: asyncio.AbstractEventLoop
    factory: ExecutionEngineFactory
    size: int
    batch: list[UserExecutionContext]
    made: list[UserExecutionEngine] = field(default_factory=list)

    @property
    def role(self) -> dict[str, Any]:
        """The smallest population is the baseline the others are compared with."""
        if self.size == min(SIZES.values()):
            return {"role": "baseline"}
        return {"role": "ours", "targets": {"max_ratio": 1.2}}

    def create_batch(self) -> None:
        self.made = self.loop.run_until_complete(self._create())

    def cleanup_batch(self) -> None:
        made, self.made = self.made, []
        self.loop.run_until_complete(self._cleanup(made))

    async def _create(self) -> list[UserExecutionEngine]:
        return [await self.factory.create_for_user(ctx) for ctx in self.batch]

    async def _cleanup(self, engines: list[UserExecutionEngine]) -> None:
        for engine in engines:
            await self.factory.cleanup_engine(engine)

    def active(self) -> int:
        return int(self.factory.get_factory_metrics(include_keys=False)["active_engines_count"])


@pytest.fixture(scope="module", params=list(SIZES.values()), ids=list(SIZES))
def population(
    request: pytest.FixtureRequest, contexts: Callable[..., list[UserExecutionContext]]
) -> Iterator[Population]:
    loop = asyncio.new_event_loop()
    factory = ExecutionEngineFactory(
        AgentWebSocketBridge(), agent_registry=AgentRegistry(), max_engines=None
    )
    populated = Population(loop, factory, request.param, contexts(BATCH))

    async def fill() -> None:
        for ctx in contexts(request.param, prefix="resident"):
            await factory.create_for_user(ctx)

    loop.run_until_complete(fill())
    try:
        yield populated
    finally:
        loop.run_until_complete(factory.shutdown())
        loop.close()


@pytest.mark.benchmark(group="scale: create_for_user")
def test_create_at_scale(bench: Any, population: Population) -> None:
    """Creating an engine does not get slower with the number of live engines."""
    bench.record(ops=BATCH, size=population.size, **population.role)

    bench.benchmark.pedantic(
        population.create_batch,
        setup=population.cleanup_batch,
        rounds=200 if bench.full else 1,
        warmup_rounds=1,
    )

    assert population.size + BATCH == population.active()
    assert all(e.is_active() for e in population.made)
    assert [c.user_id for c in population.batch] == [e.user_id for e in population.made]
    population.cleanup_batch()
    assert population.size == population.active()


@pytest.mark.benchmark(group="scale: cleanup_engine")
def test_cleanup_at_scale(bench: Any, population: Population) -> None:
    """Cleaning up an engine does not get slower with the number of live engines."""
    bench.record(ops=BATCH, size=population.size, **population.role)
    cleaned: list[UserExecutionEngine] = []

    def create() -> None:
        population.create_batch()
        cleaned[:] = population.made

    bench.benchmark.pedantic(
        population.cleanup_batch, setup=create, rounds=200 if bench.full else 1, warmup_rounds=1
    )

    assert population.size == population.active()
    assert BATCH == len(cleaned)
    assert not any(e.is_active() for e in cleaned)
    assert not any(population.factory.engines_for_user(c.user_id) for c in population.batch)


@pytest.mark.benchmark(group="scale: get_factory_metrics(include_keys=False)")
def test_metrics_at_scale(bench: Any, population: Population) -> None:
    """Reading the metrics without keys is O(1): it does not walk the registry."""
    bench.record(ops=1, size=population.size, **population.role)

    metrics = bench.benchmark(population.factory.get_factory_metrics, include_keys=False)

    assert population.size == metrics["active_engines_count"]
    assert population.size == sum(population.factory.get_active_contexts().values())
    assert "active_engine_keys" not in metrics
