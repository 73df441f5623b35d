"""Fixtures shared by the whole suite."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from enginescope.engines import (
    AgentRegistry,
    ExecutionEngineFactory,
    UserExecutionContext,
    demo_agent,
)
from enginescope.engines.testing import RecordingBridge

_numbers = itertools.count(1)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_context() -> Callable[..., UserExecutionContext]:
    """Build a valid context; every call gets a fresh thread and run id."""

    def make(user_id: str = "user-1", **fields: Any) -> UserExecutionContext:
        number = next(_numbers)
        fields.setdefault("thread_id", f"thread-{number}")
        fields.setdefault("run_id", f"run-{number}")
        return UserExecutionContext(user_id=user_id, **fields)

    return make


@pytest.fixture
def bridge() -> RecordingBridge:
    return RecordingBridge()


@pytest.fixture
def registry() -> AgentRegistry:
    agents = AgentRegistry()
    agents.register("demo", demo_agent)
    return agents


@pytest_asyncio.fixture
async def factory(
    bridge: RecordingBridge, registry: AgentRegistry, clock: FakeClock
) -> AsyncIterator[ExecutionEngineFactory]:
    built = ExecutionEngineFactory(bridge, agent_registry=registry, clock=clock)
    yield built
    await built.shutdown()
