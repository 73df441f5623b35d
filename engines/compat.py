"""Module-level API kept from the system enginescope replaces.

New code should build an :class:`ExecutionEngineFactory` (or use the containers); these
functions keep one process-wide factory for code written against the old names.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Generator
from typing import TYPE_CHECKING, Any

from .context import UserExecutionContext
from .engine import UserExecutionEngine
from .errors import FactoryNotConfiguredError
from .factory import ExecutionEngineFactory

if TYPE_CHECKING:
    from .bridge import WebSocketBridge

__all__ = [
    "configure_execution_engine_factory",
    "create_request_scoped_engine",
    "get_execution_engine_factory",
    "reset_execution_engine_factory",
    "user_execution_engine",
]

logger = logging.getLogger(__name__)


class _ConfiguredFactory(ExecutionEngineFactory):
    """The process-wide factory: awaiting it waits for its predecessor's shutdown.

    So both ``get_execution_engine_factory()`` and ``await get_execution_engine_factory()``
    work, as they did in the system these names come from.
    """

    _handover: asyncio.Future[None] | None = None

    def __await__(self) -> Generator[Any, None, ExecutionEngineFactory]:
        return self._after_handover().__await__()

    async def _after_handover(self) -> ExecutionEngineFactory:
        if self._handover is not None:  # a predecessor still shutting down
            await asyncio.shield(self._handover)
        return self


_factory: _ConfiguredFactory | None = None
_retiring: set[asyncio.Task[None]] = set()


def configure_execution_engine_factory(
    websocket_bridge: WebSocketBridge | None, **options: Any
) -> ExecutionEngineFactory:
    """Build the process-wide factory (``options`` as for :class:`ExecutionEngineFactory`).

    A previously configured factory is shut down, never leaked: in a running event loop its
    shutdown starts at once, and awaiting the result (``await
    configure_execution_engine_factory(...)``) waits for it to finish.
    """
    global _factory
    new = _ConfiguredFactory(websocket_bridge, **options)
    old, _factory = _factory, new
    if old is not None:
        new._handover = _retire(old)
    return new


def _retire(old: ExecutionEngineFactory) -> asyncio.Task[None] | None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # no loop: the old factory can have no live engines or tasks
        asyncio.run(old.shutdown())
        return None
    task = loop.create_task(old.shutdown(), name="enginescope-retire-factory")
    _retiring.add(task)
    task.add_done_callback(_retiring.discard)
    return task


def get_execution_engine_factory() -> ExecutionEngineFactory:
    """The configured factory, or :class:`FactoryNotConfiguredError`. Also awaitable."""
    if _factory is None:
        raise FactoryNotConfiguredError
    return _factory


async def reset_execution_engine_factory() -> None:
    """Shut down and forget the process-wide factory (for tests and shutdown hooks)."""
    global _factory
    old, _factory = _factory, None
    if old is not None:
        await old.shutdown()
    if _retiring:
        await asyncio.wait(tuple(_retiring))


@contextlib.asynccontextmanager
async def user_execution_engine(
    context: UserExecutionContext,
) -> AsyncIterator[UserExecutionEngine]:
    """``async with user_execution_engine(ctx) as engine``: an engine cleaned up on exit."""
    async with get_execution_engine_factory().user_execution_scope(context) as engine:
        yield engine


async def create_request_scoped_engine(context: UserExecutionContext) -> UserExecutionEngine:
    """Create an engine on the configured factory; the caller must clean it up."""
    return await get_execution_engine_factory().create_for_user(context)
