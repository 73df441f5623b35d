"""``user_scope(ctx)``: validate a user context and enter a scope with it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from enginescope.engines import UserExecutionContext, validate_user_context
from enginescope.providers import ScopeContextManager, scope

__all__ = ["user_scope"]


def user_scope(context: UserExecutionContext | Mapping[str, Any]) -> ScopeContextManager:
    """Validate ``context`` now and return a scope (``with`` or ``async with``) holding it.

    A mapping is built into a :class:`UserExecutionContext`; bad input raises
    :class:`~enginescope.engines.InvalidContextError` naming the field, before any scope
    is entered. Inside, ``await container.user_engine()`` is this user's engine::

        async with user_scope(ctx):
            engine = await container.user_engine()

    Use ``async with``: the engine is created and cleaned up with ``await``, so a sync
    ``with`` is refused when the engine is resolved, before anything is created. Each scope
    has its own engine: a scope nested in another, even for the same user, creates a
    second engine and takes a second of the user's ``max_engines_per_user`` slots; resolve
    ``user_engine`` in the outer scope and pass the engine down to share one.
    """
    return scope(validate_user_context(context))
