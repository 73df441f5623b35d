"""Scopes with teardown for dependency-injector: ``scope()``, ``Scoped``, ``AsyncScoped``
and ``ScopeValue``.

Knows nothing of engines; ``enginescope.containers`` wires it to them.
"""

from enginescope.providers.async_scoped import AsyncScoped
from enginescope.providers.captive import check_captive_dependencies, refuse_captive_dependencies
from enginescope.providers.errors import (
    CaptiveDependencyError,
    NoActiveScopeError,
    ScopeClosedError,
    ScopeError,
    ScopeTeardownError,
    ScopeUsageError,
)
from enginescope.providers.scope import (
    Scope,
    ScopeContextManager,
    ScopeValue,
    current_scope_value,
    get_current_scope,
    scope,
)
from enginescope.providers.scoped import Scoped

__all__ = [
    "AsyncScoped",
    "CaptiveDependencyError",
    "NoActiveScopeError",
    "Scope",
    "ScopeClosedError",
    "ScopeContextManager",
    "ScopeError",
    "ScopeTeardownError",
    "ScopeUsageError",
    "ScopeValue",
    "Scoped",
    "check_captive_dependencies",
    "current_scope_value",
    "get_current_scope",
    "refuse_captive_dependencies",
    "scope",
]
