"""``ScopeValue``: a provider of the current scope's value."""

from __future__ import annotations

from typing import Any

from dependency_injector import providers
from enginescope.providers.scope import require_open_scope

__all__ = ["ScopeValue"]


class ScopeValue(providers.Provider[Any]):
    """Provide the value of the current open scope (for enginescope: the user context)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<ScopeValue at {id(self):#x}>"

    def __str__(self) -> str:
        return self.__repr__()

    def _provide(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return require_open_scope(self).value
