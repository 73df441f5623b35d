"""``EngineContainer``: the declarative container that wires engines to user scopes."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from dependency_injector import containers, providers
from enginescope.engines import ExecutionEngineFactory, UserExecutionEngine, WebSocketBridge
from enginescope.providers import ScopeValue, check_captive_dependencies

from ._async_providers import AsyncResource, AsyncScoped
from ._resources import (
    build_agent_registry,
    build_slot_ledger,
    open_engine_factory,
    open_user_engine,
    open_websocket_bridge,
)
from .settings import EngineSettings

__all__ = ["EngineContainer", "check_container_tree"]


def check_container_tree(container: object) -> None:
    """Refuse captive dependencies in ``container`` and every container that composes it.

    Walks up from ``container`` through ``providers.Container`` parents to the outermost
    application container and checks all of it, so a Singleton declared next to
    ``providers.Container(EngineContainer)`` cannot capture ``user_engine`` either.
    """
    root = container
    while (parent := getattr(root, "parent", None)) is not None:
        root = parent
    check_captive_dependencies(root)


class EngineContainer(containers.DeclarativeContainer):
    """Per-user execution engines, wired to the current user scope.

    ``settings`` is a Singleton of :class:`EngineSettings` (read from ``ENGINESCOPE_*``);
    override it with an instance: ``container.settings.override(EngineSettings(...))``.
    ``database_session_manager`` and ``redis_manager`` provide ``None`` until overridden;
    ``agent_registry`` holds the demo agent (``"demo"``): override it with your registry.
    ``websocket_bridge``, ``engine_factory`` and ``user_engine`` are always awaited (also
    when overridden): ``await container.init_resources()`` starts them, ``await
    container.shutdown_resources()`` shuts the factory down (closing every engine) and
    then closes the bridge it built. Inside ``async with user_scope(ctx):``, ``await
    container.user_engine()`` is that scope's engine; it is cleaned up through the factory
    when the scope closes.

    Captive dependencies (a Singleton or Resource that depends on ``user_engine`` or
    ``user_context``) are refused when a subclass is defined and again, over the whole
    application container, when the engine factory starts.
    """

    __self__ = providers.Self()

    settings = providers.Singleton(EngineSettings)

    database_session_manager: providers.Provider[Any] = providers.Object(None)
    redis_manager: providers.Provider[Any] = providers.Object(None)
    agent_registry = providers.Singleton(build_agent_registry)
    slot_ledger = providers.Singleton(build_slot_ledger, settings)
    websocket_bridge: AsyncResource[Awaitable[WebSocketBridge]] = AsyncResource(
        open_websocket_bridge, settings
    )

    engine_factory: AsyncResource[Awaitable[ExecutionEngineFactory]] = AsyncResource(
        open_engine_factory,
        before_start=providers.Callable(check_container_tree, __self__),
        settings=settings,
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
