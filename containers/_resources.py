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


class UserEngineLease:
    """The engine of one user scope: created through the factory on entry, cleaned up
    through it on exit; ``exit_now`` lets the scope clean up without awaiting when the
    factory can (no run in progress, the in-memory backend), so no task is needed."""

    __slots__ = ("_context", "_engine", "_factory")

    def __init__(self, factory: ExecutionEngineFactory, context: UserExecutionContext) -> None:
        self._factory = factory
        self._context = context
        self._engine: UserExecutionEngine | None = None

    def __repr__(self) -> str:
        return f"<UserEngineLease engine={self._engine!r}>"

    async def __aenter__(self) -> UserExecutionEngine:
        self._engine = await self._factory.create_for_user(self._context)
        return self._engine

    async def __aexit__(self, *exc_info: object) -> None:
        await self._factory.cleanup_engine(self._engine)

    def exit_now(self, exc: BaseException | None) -> bool:
        """Clean the engine up now if the factory can without awaiting."""
        return self._factory.cleanup_engine_now(self._engine)


def open_user_engine(
    factory: ExecutionEngineFactory, context: UserExecutionContext
) -> UserEngineLease:
    """The engine for ``context`` from ``factory``, cleaned up through the factory."""
    return UserEngineLease(factory, context)
