"""Start a coroutine eagerly: run it up to its first suspension before returning.

A coroutine that finishes without ever suspending (a creation or a teardown that only
touches memory) is then done when :func:`start_eagerly` returns: whoever awaits it does not
wait for a trip through the event loop. One that suspends goes on in its task, exactly as
if it had been a task from the start. This is Python 3.12's ``eager_start``, used where it
exists; on 3.11 the task is created first, and the first step runs as that task (it is
``asyncio.current_task()``, so ``asyncio.timeout`` and task groups entered there bind to
it) in the task's own copy of the context.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from asyncio.tasks import _enter_task, _leave_task
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

__all__ = ["start_eagerly"]

T = TypeVar("T")

_NOTHING: Any = object()


def start_eagerly(coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    """Run ``coro`` as a task whose first step happens now; return a future of its result.

    When the first step finishes the coroutine, the future returned is already done.
    """
    loop = asyncio.get_running_loop()
    if sys.version_info >= (3, 12):  # pragma: no cover - the native eager start
        return asyncio.Task(coro, loop=loop, eager_start=True)
    context = contextvars.copy_context()
    resumed = _Resumed(coro)
    task: asyncio.Task[T] = loop.create_task(resumed, context=context)
    finished = resumed.first_step(loop, task, context)
    return task if finished is None else finished


class _Resumed(Coroutine[Any, Any, Any]):
    """What the task drives: ``coro`` after the first step :func:`start_eagerly` ran.

    The task's first ``send`` gets back the future ``coro`` was blocked on, so the task
    waits for it as it would have; everything later goes straight to ``coro``. When the
    first step already finished ``coro``, the task just ends (its outcome was handed out).
    """

    __slots__ = ("_blocked_on", "_coro", "_finished")

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._coro = coro
        self._blocked_on: Any = _NOTHING
        self._finished = False

    def first_step(
        self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any], context: contextvars.Context
    ) -> asyncio.Future[Any] | None:
        """Run ``coro`` up to its first suspension as ``task``; a done future if it ended."""
        caller = asyncio.current_task(loop)
        if caller is not None:
            _leave_task(loop, caller)
        _enter_task(loop, task)
        try:
            self._blocked_on = context.run(self._coro.send, None)
        except StopIteration as done:
            self._finished = True
            return _done_future(loop, result=done.value)
        except BaseException as error:
            self._finished = True
            if isinstance(error, KeyboardInterrupt | SystemExit):
                raise
            return _done_future(loop, error=error)
        finally:
            _leave_task(loop, task)
            if caller is not None:
                _enter_task(loop, caller)
        return None

    def send(self, value: Any) -> Any:
        if self._finished:
            raise StopIteration
        if self._blocked_on is not _NOTHING:
            blocked_on, self._blocked_on = self._blocked_on, _NOTHING
            return blocked_on
        return self._coro.send(value)

    def throw(self, error: Any, *args: Any) -> Any:
        if self._finished:
            raise error
        self._blocked_on = _NOTHING
        return self._coro.throw(error, *args)

    def close(self) -> None:
        if not self._finished:
            self._coro.close()

    def __await__(self) -> Generator[Any, None, Any]:
        raise TypeError("start_eagerly's continuation is driven by its task, not awaited")


def _done_future(
    loop: asyncio.AbstractEventLoop, *, result: Any = None, error: BaseException | None = None
) -> asyncio.Future[Any]:
    future = loop.create_future()
    if isinstance(error, asyncio.CancelledError):
        future.cancel()
    elif error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
    return future
