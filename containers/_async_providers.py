"""Providers that are async from the start, so overriding them never changes how to call them.

dependency-injector decides whether a provider is async on its first call: a Resource or
a ``Scoped`` overridden by a plain object before that call is "sync" for good, and
``await container.user_engine()`` then fails. These subclasses are always async (and so
are their copies, because a copy is built through ``__init__``).
"""

from __future__ import annotations

from typing import Any, TypeVar

from dependency_injector import providers
from enginescope.providers import Scoped

__all__ = ["AsyncResource", "AsyncScoped"]

T = TypeVar("T")


class AsyncResource(providers.Resource[T]):
    """A Resource whose calls, ``init()`` and ``shutdown()`` always return awaitables."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.enable_async_mode()


class AsyncScoped(Scoped[T]):
    """A ``Scoped`` that always returns an awaitable, also when overridden by an object."""

    __slots__ = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.enable_async_mode()
