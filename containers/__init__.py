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
    from .errors import EngineContainerError, UnsupportedBackendError
    from .scope import user_scope
    from .settings import Backend, EngineSettings

__all__ = [
    "AsyncScoped",
    "Backend",
    "EngineContainer",
    "EngineContainerError",
    "EngineSettings",
    "ScopeValue",
    "Scoped",
    "UnsupportedBackendError",
    "check_container_tree",
    "user_scope",
]

_HOMES = {
    "AsyncScoped": "enginescope.providers",
    "Backend": ".settings",
    "EngineContainer": ".container",
    "EngineContainerError": ".errors",
    "EngineSettings": ".settings",
    "ScopeValue": "enginescope.providers",
    "Scoped": "enginescope.providers",
    "UnsupportedBackendError": ".errors",
    "check_container_tree": ".captive",
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
