"""``user_engine_dependency``: a FastAPI dependency giving an HTTP endpoint its user's engine.

``Depends(Provide[Container.engines.user_engine])`` alone fails in an endpoint, because no
user scope is open there. This dependency opens one for the request, from the user your
authentication dependency returns, and closes it (cleaning the engine up and giving its
slot back) when the request is done.

(No ``from __future__ import annotations`` here: FastAPI reads the dependency's
annotations at runtime, and they refer to a local.)
"""

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Annotated, Any

from enginescope.engines import UserExecutionContext, UserExecutionEngine

from ._sessions import new_run_id, new_thread_id
from .lookup import find_engine_container
from .scope import user_scope

__all__ = ["user_engine_dependency"]

EngineDependency = Callable[..., AsyncIterator[UserExecutionEngine]]


def user_engine_dependency(container: Any, *, user: Callable[..., Any]) -> EngineDependency:
    """A dependency yielding the engine of a user scope opened for the request.

    ``container`` is an :class:`EngineContainer` or an application container composing
    one. ``user`` is your FastAPI dependency for the authenticated user; it returns a user
    id (each request then gets a fresh ``thread_id`` and ``run_id``), a
    :class:`UserExecutionContext` or a mapping of its fields::

        engine_for_user = user_engine_dependency(app_container, user=current_user_id)

        @app.post("/summaries")
        async def summarise(
            engine: Annotated[UserExecutionEngine, Depends(engine_for_user)],
        ) -> dict[str, Any]:
            return (await engine.execute_agent("summariser", "...")).model_dump()
    """
    from fastapi import Depends  # noqa: PLC0415 - fastapi is an extra; only this needs it

    engines = find_engine_container(container, caller="user_engine_dependency()")

    async def engine_in_user_scope(
        authenticated: Annotated[Any, Depends(user)],
    ) -> AsyncIterator[UserExecutionEngine]:
        async with user_scope(_context_of(authenticated)):
            yield await engines.user_engine()

    return engine_in_user_scope


def _context_of(user: object) -> UserExecutionContext | Mapping[str, Any]:
    """A request's context: ``user`` itself, or a fresh one for a bare user id."""
    if isinstance(user, str):
        return UserExecutionContext(user_id=user, thread_id=new_thread_id(), run_id=new_run_id())
    return user  # type: ignore[return-value]  # user_scope validates it and names what is wrong
