"""``EngineContainer``: the declarative container that wires engines to user scopes."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from dependency_injector import containers, providers
from enginescope.engines import (
    UserExecutionEngine,
)
from enginescope.providers import AsyncScoped, ScopeValue, check_captive_dependencies

from ._resources import (
    build_agent_registry,
    open_engine_factory,
    open_slot_ledger,
    open_user_engine,
    open_websocket_bridge,
)
from .captive import check_container_tree
from .settings import EngineSettings

__all__ = ["EngineContainer"]


class EngineContainer(containers.DeclarativeContainer):
    """Per-user execution engines, wired to the current user scope.

    ``settings`` is a Singleton of :class:`EngineSettings` (read from ``ENGINESCOPE_*``);
    override it with an instance: ``container.settings.override(EngineSettings(...))``.
    ``database_session_manager`` and ``redis_manager`` provide ``None`` until overridden;
    ``agent_registry`` holds the demo agent (``"demo"``): override it with your registry.
    ``slot_ledger``, ``websocket_bridge`` and ``engine_factory`` are async Resources:
    ``await container.init_resources()`` starts them; ``await
    container.shutdown_resources()`` shuts the factory down (closing every engine), then
    closes the bridge it built. Once started, calling one returns a future to ``await``;
    one overridden by a plain object returns that object.

    Inside ``async with user_scope(ctx):``, ``await container.user_engine()`` is that
    scope's engine, created through the factory and cleaned up through it when the scope
    closes; ``container.user_context()`` is ``ctx``.

    Captive dependencies (a Singleton or Resource that depends on ``user_engine`` or
    ``user_context``) are refused when a subclass is defined and again, over the whole
    application container, when the engine factory starts.
    """

    __self__ = providers.Self()

    settings = providers.Singleton(EngineSettings)

    database_session_manager: providers.Provider[Any] = providers.Object(None)
    redis_manager: providers.Provider[Any] = providers.Object(None)
    agent_registry = providers.Singleton(build_agent_registry)
    slot_ledger = providers.Resource(open_slot_ledger, settings)
    websocket_bridge = providers.Resource(open_websocket_bridge, settings)

    engine_factory = providers.Resource(
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
