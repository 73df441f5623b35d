"""Finding the :class:`EngineContainer` a helper should use, given the application's container."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dependency_injector import providers

from .errors import EngineContainerNotFoundError

__all__ = ["find_engine_container"]

_ENGINE_PROVIDERS = ("websocket_bridge", "engine_factory", "user_engine")


def find_engine_container(container: object, *, caller: str = "find_engine_container()") -> Any:
    """``container`` itself when it is an engine container, else the one it composes.

    An application container that holds ``engines = providers.Container(EngineContainer)``
    gives that sub-container. None, or more than one, raises
    :class:`~enginescope.containers.EngineContainerNotFoundError` naming ``caller`` and
    what to pass instead.
    """
    if _is_engine_container(container):
        return container
    found = {
        name: provider
        for name, provider in _providers(container).items()
        if isinstance(provider, providers.Container) and _is_engine_container(provider)
    }
    if len(found) == 1:
        return next(iter(found.values()))()
    raise EngineContainerNotFoundError(caller, container, tuple(found))


def _providers(container: object) -> Mapping[str, Any]:
    members = getattr(container, "providers", None)
    return members if isinstance(members, Mapping) else {}


def _is_engine_container(container: object) -> bool:
    members = _providers(container)
    return all(isinstance(members.get(name), providers.Provider) for name in _ENGINE_PROVIDERS)
