"""Lifecycle helpers shared by the factory, the bridges and the Redis backend (not API).

One home for three rules that several components follow: a setting must be a positive
number; a background loop is started once, retries its failures with backoff and is
stopped for good; a task is stopped by cancelling it until it is done.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .errors import InvalidSettingError

__all__ = ["BackgroundLoop", "Backoff", "check_positive", "stop_task"]

N = TypeVar("N", int, float)
SettingError = Callable[[str, object, str], Exception]


def check_positive(
    field: str, value: N, *, integer: bool = False, error: SettingError = InvalidSettingError
) -> N:
    """Return ``value`` if it is a positive number (an ``int`` when ``integer``), else raise
    ``error(field, value, expected)``. ``bool`` and NaN are refused."""
    kinds: tuple[type, ...] = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value > 0:
        raise error(field, value, "a positive integer" if integer else "a positive number")
    return value


async def stop_task(task: asyncio.Future[Any] | None) -> None:
    """Cancel ``task`` and wait for it, re-cancelling until it is done.

    On Python 3.11, ``asyncio.wait_for`` (which redis-py uses to send commands) swallows
    a cancellation that arrives as its inner future completes, so one ``cancel()`` of a
    task inside such a call can be lost; a background loop must not outlive its owner.
    """
    while task is not None and not task.done():
        task.cancel()
        await asyncio.wait((task,), timeout=0.1)


class Backoff:
    """Exponential backoff with full jitter, for the background loops' retries."""

    __slots__ = ("_attempt", "_base", "_cap")

    def __init__(self, *, base: float = 0.05, cap: float = 2.0) -> None:
        self._base = base
        self._cap = cap
        self._attempt = 0

    @property
    def failing(self) -> bool:
        """Whether the last attempt failed."""
        return self._attempt > 0

    def failed(self) -> float:
        """Record a failure; return how long to wait before the next attempt."""
        self._attempt += 1
        ceiling = min(self._cap, self._base * 2 ** min(self._attempt, 16))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not security

    def succeeded(self) -> bool:
        """Record a success; ``True`` if it ends a run of failures (the loop recovered)."""
        recovered = self._attempt > 0
        self._attempt = 0
        return recovered


class BackgroundLoop:
    """Runs ``step`` over and over in one task until :meth:`aclose`.

    A step that raises one of ``errors`` is reported to ``on_error`` (with the backoff, so
    the first failure of a run can be logged louder than its repeats) and retried after a
    backoff delay; ``on_recovered`` is called when a step succeeds after failures. Any
    other exception ends the loop's task; :meth:`start` starts it again.
    """

    __slots__ = (
        "_backoff",
        "_closed",
        "_errors",
        "_name",
        "_on_error",
        "_on_recovered",
        "_step",
        "_task",
    )

    def __init__(
        self,
        name: str,
        step: Callable[[], Awaitable[object]],
        *,
        errors: tuple[type[BaseException], ...] = (Exception,),
        on_error: Callable[[BaseException, Backoff], None] | None = None,
        on_recovered: Callable[[], None] | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self._name = name
        self._step = step
        self._errors = errors
        self._on_error = on_error
        self._on_recovered = on_recovered
        self._backoff = backoff if backoff is not None else Backoff()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self.running else "idle"
        return f"<BackgroundLoop {self._name!r} {state}>"

    @property
    def running(self) -> bool:
        """Whether the loop's task is alive."""
        return self._task is not None and not self._task.done()

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called; a closed loop never starts again."""
        return self._closed

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The loop's current task, if it was started."""
        return self._task

    def start(self) -> None:
        """Start the loop's task unless it runs already (or the loop is closed)."""
        if not self._closed and not self.running:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=self._name)

    async def aclose(self) -> None:
        """Stop the loop and wait for its task; idempotent."""
        self._closed = True
        task, self._task = self._task, None
        await stop_task(task)

    async def _run(self) -> None:
        while not self._closed:
            try:
                await self._step()
            except self._errors as error:
                if self._on_error is not None:
                    self._on_error(error, self._backoff)
                await asyncio.sleep(self._backoff.failed())
                continue
            if self._backoff.succeeded() and self._on_recovered is not None:
                self._on_recovered()
