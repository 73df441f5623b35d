"""enginescope.containers: ``EngineContainer``, ``EngineSettings`` and ``user_scope``.

Wires the engine domain (``enginescope.engines``) to the scope machinery
(``enginescope.providers``) for dependency-injector applications.
"""

from enginescope.providers import Scoped, ScopeValue

from .captive import check_container_tree
from .container import EngineContainer
from .errors import EngineContainerError, UnsupportedBackendError
from .scope import user_scope
from .settings import Backend, EngineSettings

__all__ = [
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
