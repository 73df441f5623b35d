"""Providers that are async from the start, so overriding them never changes how to call them.

dependency-injector decides whether a provider is async on its first call: a ``Scoped``
overridden by a plain object before that call is "sync" for good, and ``await
container.user_engine()`` then fails. ``AsyncScoped`` is always async (and so are its
copies, because a copy is built through ``__init__``).
"""

from __future__ import annotations

from typing import Any, TypeVar

from enginescope.providers import Scoped

__all__ = ["AsyncScoped"]

T = TypeVar("T")


class AsyncScoped(Scoped[T]):
    """A ``Scoped`` that always returns an awaitable, also when overridden by an object."""

    __slots__ = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.enable_async_mode()
