"""Start a coroutine as a task, eagerly where the Python version allows it.

On Python 3.12 and later the task is created with ``eager_start=True`` (public API): its
first step runs now, so a creation or a teardown that only touches memory is done when
:func:`start_eagerly` returns and whoever awaits it does not wait for a trip through the
event loop. On 3.11 it is an ordinary task, started by the loop: the same semantics
(``asyncio.current_task()`` is the task, so ``asyncio.timeout`` and task groups entered
inside bind to it, and it runs in its own copy of the context), one loop step later.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["start_eagerly"]

T = TypeVar("T")


def start_eagerly(coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """Run ``coro`` as a task of the running loop, its first step now where supported."""
    loop = asyncio.get_running_loop()
    if sys.version_info >= (3, 12):  # pragma: no cover - covered by the 3.12/3.13 sessions
        return asyncio.Task(coro, loop=loop, eager_start=True)
    return loop.create_task(coro)
