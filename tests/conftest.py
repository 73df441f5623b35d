"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from enginescope.engines import (
    AgentRegistry,
    ExecutionEngineFactory,
    UserExecutionContext,
)
from enginescope.engines.testing import RecordingBridge, demo_agent

from tests.support import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_context(
    make_user_context: Callable[..., UserExecutionContext],
) -> Callable[..., UserExecutionContext]:
    """The plugin's ``make_user_context`` with ``user-1`` as the default user."""

    def make(user_id: str = "user-1", **fields: Any) -> UserExecutionContext:
        return make_user_context(user_id, **fields)

    return make


@pytest.fixture
def bridge(enginescope_bridge: RecordingBridge) -> RecordingBridge:
    return enginescope_bridge


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
