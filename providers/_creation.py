"""An async creation run by the task that first awaits it: no task of its own.

``Scoped`` caches an async creation per scope so that concurrent first resolves share one
instance. The first resolve to be awaited drives the creation in its own task: a creation
that never suspends (an engine made in memory) costs no trip through the event loop on any
Python version, and an ``asyncio.timeout`` inside it binds to the task that runs it. The
other resolves wait for the outcome; if the driver is cancelled (its own task was), they do
not inherit that cancellation: the creation is evicted and they resolve again (``retry``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

__all__ = ["Creation"]


class Creation:
    """One in-flight async creation of a scope; ``join()`` is what each resolve awaits."""

    __slots__ = ("_coro", "_driver", "_on_settled", "_retry", "_settled", "result")

    def __init__(
        self,
        coro: Coroutine[Any, Any, Any],
        on_settled: Callable[[Creation], None],
        retry: Callable[[], Awaitable[Any]],
    ) -> None:
        loop = asyncio.get_running_loop()
        self._coro = coro
        self._on_settled = on_settled
        self._retry = retry  # what a waiter does when the driver's task was cancelled
        self._driver: asyncio.Task[Any] | None = None
        self._settled: asyncio.Future[None] | None = None
        self.result: asyncio.Future[Any] = loop.create_future()

    def __repr__(self) -> str:
        state = "done" if self.result.done() else "running" if self._driver else "not started"
        return f"<Creation {state}>"

    async def join(self) -> Any:
        """The instance: created here, in this task, if nobody runs the creation yet, else
        awaited; a waiter whose driver's task was cancelled resolves again."""
        if self._driver is not None or self.result.done():
            try:
                return await asyncio.shield(self.result)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not self.result.cancelled() or task is None or task.cancelling():
                    raise
            return await self._retry()  # not ours: the driver's task was cancelled
        self._driver = asyncio.current_task()
        try:
            value = await self._coro
        except BaseException as error:
            self._publish_failure(error)
            raise
        else:
            if not self.result.done():
                self.result.set_result(value)
            return value
        finally:
            self._driver = None
            self._finish()

    def _publish_failure(self, error: BaseException) -> None:
        if self.result.done():
            return
        if isinstance(error, asyncio.CancelledError):
            self.result.cancel()
        else:
            self.result.set_exception(error)
            self.result.exception()  # retrieved: the driver raises it itself

    def _finish(self) -> None:
        if self._settled is not None and not self._settled.done():
            self._settled.set_result(None)
        self._on_settled(self)

    def abort(self) -> None:
        """Stop the creation: cancel the task driving it, or drop it if never started."""
        if self._driver is not None:
            self._driver.cancel()
            return
        if not self.result.done():
            self._coro.close()
            self.result.cancel()
            self._finish()

    async def wait_settled(self) -> None:
        """Wait until the creation's driver has finished (at once if none runs it)."""
        if self._driver is None:
            return
        if self._settled is None:
            self._settled = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._settled)
