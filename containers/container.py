"""``EngineContainer``: the declarative container that wires engines to user scopes."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from dependency_injector import containers, providers
from enginescope.engines import (
    ExecutionEngineFactory,
    SlotLedger,
    UserExecutionEngine,
    WebSocketBridge,
)
from enginescope.providers import AsyncScoped, ScopeValue, check_captive_dependencies

from ._lifecycle import FactoryResource, StoppableResource
from ._resources import (
    build_agent_registry,
    open_engine_factory,
    open_slot_ledger,
    open_user_engine,
    open_websocket_bridge,
)
from .settings import EngineSettings, as_engine_settings

__all__ = ["EngineContainer"]


class EngineContainer(containers.DeclarativeContainer):
    """Per-user execution engines, wired to the current user scope.

    ``settings`` is a Singleton of :class:`EngineSettings` (read from ``ENGINESCOPE_*``);
    override it with an instance, a mapping or a ``Configuration`` option:
    ``providers.Container(EngineContainer, settings=config.engines)``. ``engine_settings``
    is that value validated into ``EngineSettings`` (a bad field raises
    :class:`~enginescope.containers.InvalidSettingsError` naming it); the resources read it.
    ``database_session_manager`` and ``redis_manager`` provide ``None`` until overridden;
    ``agent_registry`` holds the demo agent (``"demo"``): override it with your registry.
    ``slot_ledger``, ``websocket_bridge`` and ``engine_factory`` are async Resources:
    ``await container.init_resources()`` starts them; ``await
    container.shutdown_resources()`` shuts the factory down (closing every engine), then
    closes the bridge it built. Once started, calling one returns a future to ``await``;
    one overridden by a plain object returns that object. After ``shutdown_resources()`` a
    resolve starts nothing: it raises :class:`~enginescope.containers.ContainerShutDownError`
    until ``init_resources()`` runs again.

    Inside ``async with user_scope(ctx):``, ``await container.user_engine()`` is that
    scope's engine, created through the factory and cleaned up through it when the scope
    closes; ``container.user_context()`` is ``ctx``.

    Captive dependencies (a Singleton or Resource that depends on ``user_engine`` or
    ``user_context``) are refused when a subclass is defined and again, over the whole
    application container, when the engine factory starts.
    """

    __self__ = providers.Self()

    settings: providers.Provider[Any] = providers.Singleton(EngineSettings)
    engine_settings = providers.Callable(as_engine_settings, settings)

    database_session_manager: providers.Provider[Any] = providers.Object(None)
    redis_manager: providers.Provider[Any] = providers.Object(None)
    agent_registry = providers.Singleton(build_agent_registry)
    slot_ledger: StoppableResource[SlotLedger] = StoppableResource(
        open_slot_ledger, engine_settings
    )
    websocket_bridge: StoppableResource[WebSocketBridge] = StoppableResource(
        open_websocket_bridge, engine_settings
    )

    engine_factory: FactoryResource[ExecutionEngineFactory] = FactoryResource(
        __self__,
        open_engine_factory,
        settings=engine_settings,
        websocket_bridge=websocket_bridge,
        slot_ledger=slot_ledger,
        agent_registry=agent_registry,
        database_session_manager=database_session_manager,
        redis_manager=redis_manager,
    )

    user_context = ScopeValue()
    user_engine: AsyncScoped[Awaitable[UserExecutionEngine]] = AsyncScoped(
        open_user_engine, factory=engine_factory, context=user_context
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        check_captive_dependencies(cls)


check_captive_dependencies(EngineContainer)
