"""The module-level API kept from the system enginescope replaces."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
from enginescope.engines import (
    ExecutionEngineFactory,
    ExecutionEngineFactoryError,
    FactoryNotConfiguredError,
    UserExecutionContext,
    configure_execution_engine_factory,
    create_request_scoped_engine,
    get_execution_engine_factory,
    reset_execution_engine_factory,
    user_execution_engine,
)
from enginescope.engines.testing import RecordingBridge

MakeContext = Callable[..., UserExecutionContext]


@pytest_asyncio.fixture
async def fresh_global() -> AsyncIterator[None]:
    await reset_execution_engine_factory()
    yield
    await reset_execution_engine_factory()


@pytest.mark.asyncio
@pytest.mark.usefixtures("fresh_global")
class TestModuleFactory:
    async def test_unconfigured_is_a_clear_error(self) -> None:
        """Using the factory before configuring it says how to configure it."""
        with pytest.raises(FactoryNotConfiguredError, match="configure_execution_engine_factory"):
            get_execution_engine_factory()
        assert issubclass(FactoryNotConfiguredError, ExecutionEngineFactoryError)

    async def test_configure_then_get(self, bridge: RecordingBridge) -> None:
        """configure returns the factory that get returns, called plainly or awaited."""
        configured = configure_execution_engine_factory(bridge, max_engines_per_user=5)
        assert isinstance(configured, ExecutionEngineFactory)
        assert configured is get_execution_engine_factory()
        assert configured is await get_execution_engine_factory()
        assert configured.max_engines_per_user == 5

    async def test_configure_requires_a_bridge(self) -> None:
        """configure without a bridge fails like the factory does."""
        with pytest.raises(ExecutionEngineFactoryError, match="websocket_bridge"):
            configure_execution_engine_factory(None)

    async def test_reconfigure_shuts_the_old_factory_down(
        self, bridge: RecordingBridge, make_context: MakeContext
    ) -> None:
        """Reconfiguring closes the previous factory's engines instead of leaking them."""
        old = configure_execution_engine_factory(bridge)
        engine = await old.create_for_user(make_context())
        new = await configure_execution_engine_factory(bridge)
        assert new is not old
        assert old.is_shutdown
        assert not engine.is_active()
        assert old.get_factory_metrics()["active_engines_count"] == 0

    async def test_reconfigure_without_await_still_shuts_down(
        self, bridge: RecordingBridge, make_context: MakeContext
    ) -> None:
        """A plain call starts the old factory's shutdown; reset waits for it."""
        old = configure_execution_engine_factory(bridge)
        engine = await old.create_for_user(make_context())
        configure_execution_engine_factory(bridge)
        await reset_execution_engine_factory()
        assert not engine.is_active()


@pytest.mark.asyncio
@pytest.mark.usefixtures("fresh_global")
class TestModuleHelpers:
    async def test_user_execution_engine_context_manager(
        self, bridge: RecordingBridge, make_context: MakeContext
    ) -> None:
        """user_execution_engine yields an engine and closes it on exit."""
        factory = configure_execution_engine_factory(bridge)
        async with user_execution_engine(make_context("alice")) as engine:
            assert factory.get_active_contexts() == {"alice": 1}
        assert not engine.is_active()
        assert factory.get_active_contexts() == {}

    async def test_create_request_scoped_engine(
        self, bridge: RecordingBridge, make_context: MakeContext
    ) -> None:
        """create_request_scoped_engine registers an engine on the configured factory."""
        factory = configure_execution_engine_factory(bridge)
        engine = await create_request_scoped_engine(make_context("bob"))
        assert [engine.engine_id] == factory.get_factory_metrics()["active_engine_keys"]
        await factory.cleanup_engine(engine)


class TestOutsideALoop:
    def test_reconfigure_outside_a_loop(self, bridge: RecordingBridge) -> None:
        """Without a running loop the old factory is shut down on the spot."""
        old = configure_execution_engine_factory(bridge)
        configure_execution_engine_factory(bridge)
        assert old.is_shutdown
        asyncio.run(reset_execution_engine_factory())
