"""Start a coroutine eagerly: run it in the caller's call up to its first suspension.

A coroutine that finishes without ever suspending (a creation or a teardown that only
touches memory) then costs no task and no trip through the event loop; one that suspends
continues in a task, exactly as if it had been a task from the start. This is what Python
3.12's ``eager_start`` does; :func:`start_eagerly` uses that where it exists.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import types
from collections.abc import Callable, Coroutine, Generator
from functools import partial
from typing import Any, TypeVar

__all__ = ["start_eagerly"]

T = TypeVar("T")


def start_eagerly(coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
    """Run ``coro`` now until it suspends; return a future of its result.

    The coroutine runs in a copy of the current context, as a task's would. If it finishes
    (or fails) without suspending, the future is already done and no task exists.
    """
    loop = asyncio.get_running_loop()
    if sys.version_info >= (3, 12):  # pragma: no cover - the native eager start
        return asyncio.Task(coro, loop=loop, eager_start=True)
    context = contextvars.copy_context()
    try:
        blocked_on = context.run(coro.send, None)
    except StopIteration as done:
        return _done_future(loop, result=done.value)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:  # noqa: BLE001 - handed to whoever awaits the future
        return _done_future(loop, error=error)
    return loop.create_task(_resume(coro, blocked_on), context=context)


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


@types.coroutine
def _resume(coro: Coroutine[Any, Any, T], blocked_on: Any) -> Generator[Any, Any, T]:
    """Wait for what ``coro`` was blocked on, as its task would have, then run it on.

    A task drives this generator: every future ``coro`` yields is passed up to the task,
    and what the task sends or throws back (a cancellation) goes down to ``coro``.
    """
    while True:
        try:
            sent = yield blocked_on
        except BaseException as error:  # noqa: BLE001 - a task's throw belongs to coro
            step: Callable[[], Any] = partial(coro.throw, error)
        else:
            step = partial(coro.send, sent)
        try:
            blocked_on = step()
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
