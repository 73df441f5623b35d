"""What ``EngineContainer``'s providers call: builders, and resources with their teardown."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from enginescope.engines import (
    AgentRegistry,
    AgentWebSocketBridge,
    ExecutionEngineFactory,
    InMemorySlotLedger,
    SlotLedger,
    UserExecutionContext,
    UserExecutionEngine,
    WebSocketBridge,
    set_metadata_limits,
)
from enginescope.engines.testing import DEMO_AGENT_NAME, demo_agent

from .errors import UnsupportedBackendError
from .settings import EngineSettings

__all__ = [
    "build_agent_registry",
    "open_engine_factory",
    "open_slot_ledger",
    "open_user_engine",
    "open_websocket_bridge",
]

logger = logging.getLogger(__name__)


def build_agent_registry() -> AgentRegistry:
    """A registry holding the deterministic demo agent under ``"demo"``."""
    registry = AgentRegistry()
    registry.register(DEMO_AGENT_NAME, demo_agent)
    return registry


async def open_slot_ledger(settings: EngineSettings) -> AsyncIterator[SlotLedger]:
    """Yield the per-user slot ledger of ``settings.backend``.

    Nothing to do afterwards: the factory closes its ledger when it shuts down.
    """
    if settings.backend == "memory":
        yield InMemorySlotLedger()
    elif settings.backend == "redis":
        from enginescope.engines.redis import RedisSlotLedger  # noqa: PLC0415 - extra

        yield RedisSlotLedger(
            settings.redis_url,
            lease_ttl_seconds=settings.redis_lease_ttl_seconds,
            **settings.redis_options(),
        )
    else:
        raise UnsupportedBackendError(settings.backend, "slot_ledger")


async def open_websocket_bridge(settings: EngineSettings) -> AsyncIterator[WebSocketBridge]:
    """Yield the bridge of ``settings.backend``; close it (and its sender tasks) after.

    The Redis bridge publishes through Redis and delivers to this process's sockets
    through a local :class:`AgentWebSocketBridge`.
    """
    if settings.backend not in ("memory", "redis"):
        raise UnsupportedBackendError(settings.backend, "websocket_bridge")
    local = AgentWebSocketBridge(**settings.bridge_options())
    try:
        if settings.backend == "memory":
            yield local
        else:
            async with _redis_bridge(settings, local) as bridge:
                yield bridge
    finally:
        await local.close()


@contextlib.asynccontextmanager
async def _redis_bridge(
    settings: EngineSettings, local: AgentWebSocketBridge
) -> AsyncIterator[WebSocketBridge]:
    from enginescope.engines.redis import RedisWebSocketBridge  # noqa: PLC0415 - extra

    bridge = RedisWebSocketBridge(
        settings.redis_url,
        local=local,
        stream_maxlen=settings.redis_stream_maxlen,
        replay_window_seconds=settings.redis_replay_window_seconds,
        **settings.redis_options(),
    )
    try:
        await bridge.start()
        yield bridge
    finally:
        await bridge.close()


async def open_engine_factory(
    *,
    settings: EngineSettings,
    websocket_bridge: WebSocketBridge,
    slot_ledger: SlotLedger,
    agent_registry: AgentRegistry,
    database_session_manager: Any = None,
    redis_manager: Any = None,
) -> AsyncIterator[ExecutionEngineFactory]:
    """Yield an ``ExecutionEngineFactory`` built from the settings; shut it down after.

    The container starts it through a ``FactoryResource``, which refuses captive
    dependencies over the whole application container first.
    The metadata limits of ``UserExecutionContext`` are process-wide; the settings' are
    applied here.
    """
    set_metadata_limits(
        max_bytes=settings.max_metadata_bytes, max_depth=settings.max_metadata_depth
    )
    factory = ExecutionEngineFactory(
        websocket_bridge,
        database_session_manager=database_session_manager,
        redis_manager=redis_manager,
        agent_registry=agent_registry,
        slot_ledger=slot_ledger,
        **settings.factory_options(),
    )
    logger.debug("engine factory started", extra={"factory": factory})
    try:
        yield factory
    finally:
        await factory.shutdown()
        logger.debug("engine factory shut down", extra={"factory": factory})


async def open_user_engine(
    factory: ExecutionEngineFactory, context: UserExecutionContext
) -> AsyncIterator[UserExecutionEngine]:
    """Yield an engine for ``context`` from ``factory``; clean it up through the factory."""
    engine = await factory.create_for_user(context)
    try:
        yield engine
    finally:
        await factory.cleanup_engine(engine)
