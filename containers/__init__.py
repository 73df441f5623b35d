"""enginescope.containers: ``EngineContainer``, ``EngineSettings`` and ``user_scope``.

Wires the engine domain (``enginescope.engines``) to the scope machinery
(``enginescope.providers``) for dependency-injector applications.

The names below are imported on first use, so that loading the pytest plugin (a module of
this package, loaded by every pytest run where enginescope is installed) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from enginescope.providers import AsyncScoped, Scoped, ScopeValue

    from .captive import check_container_tree
    from .container import EngineContainer
    from .errors import (
        ContainerShutDownError,
        EngineContainerError,
        EngineContainerNotFoundError,
        InvalidSettingsError,
        UnsupportedBackendError,
    )
    from .lookup import find_engine_container
    from .scope import user_scope
    from .settings import Backend, EngineSettings, as_engine_settings

__all__ = [
    "AsyncScoped",
    "Backend",
    "ContainerShutDownError",
    "EngineContainer",
    "EngineContainerError",
    "EngineContainerNotFoundError",
    "EngineSettings",
    "InvalidSettingsError",
    "ScopeValue",
    "Scoped",
    "UnsupportedBackendError",
    "as_engine_settings",
    "check_container_tree",
    "find_engine_container",
    "user_scope",
]

_HOMES = {
    "AsyncScoped": "enginescope.providers",
    "Backend": ".settings",
    "ContainerShutDownError": ".errors",
    "EngineContainer": ".container",
    "EngineContainerError": ".errors",
    "EngineContainerNotFoundError": ".errors",
    "EngineSettings": ".settings",
    "InvalidSettingsError": ".errors",
    "ScopeValue": "enginescope.providers",
    "Scoped": "enginescope.providers",
    "UnsupportedBackendError": ".errors",
    "as_engine_settings": ".settings",
    "check_container_tree": ".captive",
    "find_engine_container": ".lookup",
    "user_scope": ".scope",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
