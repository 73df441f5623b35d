"""Providers that are async from the start, so overriding them never changes how to call them.

dependency-injector decides whether a provider is async on its first call: a ``Scoped``
overridden by a plain object before that call is "sync" for good, and ``await
container.user_engine()`` then fails. ``AsyncScoped`` is always async (and so are its
copies, because a copy is built through ``__init__``). Because its instance is created and
released with ``await``, it is only created in a scope entered with ``async with``: in a
sync ``with`` it is refused before anything is created.
"""

from __future__ import annotations

from typing import Any, TypeVar

from enginescope.providers.errors import ScopeUsageError
from enginescope.providers.scope import require_open_scope
from enginescope.providers.scoped import Scoped

__all__ = ["AsyncScoped"]

T = TypeVar("T")


class AsyncScoped(Scoped[T]):
    """A ``Scoped`` that always returns an awaitable, also when overridden by an object."""

    __slots__ = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.enable_async_mode()

    def _create(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        current = require_open_scope(self)
        if not current.is_async:
            raise ScopeUsageError(
                f"{self!r} is async, but {current!r} was entered with a sync `with`, which "
                "cannot await its teardown; enter the scope with `async with` "
                "(`async with user_scope(ctx):`). Nothing was created."
            )
        return super()._create(args, kwargs)
