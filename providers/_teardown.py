"""Running a closing scope's finalizers: newest first, every one, failures collected."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from enginescope.providers._creation import Creation
from enginescope.providers._eager import start_eagerly
from enginescope.providers._finalizers import Finalizer
from enginescope.providers.errors import ScopeTeardownError, ScopeUsageError

__all__ = [
    "Outcome",
    "raise_outcome",
    "release_ready",
    "run_shielded",
    "teardown_async",
    "teardown_sync",
]

logger = logging.getLogger(__name__)


class Outcome:
    """What a teardown produced: ordinary failures and the first fatal interruption."""

    __slots__ = ("failures", "fatal")

    def __init__(self) -> None:
        self.failures: list[Exception] = []
        self.fatal: BaseException | None = None

    def merge(self, later: Outcome) -> Outcome:
        """This outcome followed by ``later``'s (the first fatal interruption wins)."""
        self.failures.extend(later.failures)
        if self.fatal is None:
            self.fatal = later.fatal
        return self

    def record(self, error: BaseException) -> None:
        if isinstance(error, Exception):
            self.failures.append(error)
        elif self.fatal is None:
            self.fatal = error


def _async_in_sync(owner: object) -> ScopeUsageError:
    return ScopeUsageError(
        f"{owner} needs an async teardown but its scope was exited with a sync `with`; "
        "use `async with scope(...)` so it can be released."
    )


def teardown_sync(
    finalizers: list[Finalizer], pending: dict[Any, Creation], exc: BaseException | None
) -> Outcome:
    """Release sync finalizers newest first; async ones are reported, not run."""
    outcome = Outcome()
    for owner, creation in list(pending.items()):
        creation.abort()
        outcome.record(_async_in_sync(owner))
    while finalizers:
        finalizer = finalizers.pop()
        if finalizer.is_async:
            outcome.record(_async_in_sync(finalizer.owner))
            continue
        try:
            finalizer.release_sync(exc)
        except BaseException as error:  # noqa: BLE001 - every finalizer must run; re-raised later
            outcome.record(error)
    return outcome


def release_ready(finalizers: list[Finalizer], exc: BaseException | None, outcome: Outcome) -> None:
    """Release, newest first, the finalizers that can finish without awaiting, and stop at
    the first that cannot: it and the older ones are left for :func:`teardown_async`."""
    while finalizers:
        try:
            if not finalizers[-1].release_now(exc):
                return
        except BaseException as error:  # noqa: BLE001 - every finalizer must run; re-raised later
            outcome.record(error)
        finalizers.pop()


async def teardown_async(
    finalizers: list[Finalizer], pending: dict[Any, Creation], exc: BaseException | None
) -> Outcome:
    """Cancel in-flight creations, then release every finalizer newest first."""
    outcome = Outcome()
    in_flight = list(pending.values())
    for creation in in_flight:
        creation.abort()
    for creation in in_flight:
        await creation.wait_settled()
    while finalizers:
        try:
            await finalizers.pop().release(exc)
        except BaseException as error:  # noqa: BLE001 - every finalizer must run; re-raised later
            outcome.record(error)
    return outcome


async def run_shielded(start: Callable[[], Coroutine[Any, Any, Outcome]]) -> Outcome:
    """Run a teardown to completion even if the calling task is cancelled meanwhile.

    A cancellation of the caller is remembered and becomes the outcome's fatal error, so it
    propagates once every finalizer has run.
    """
    task = start_eagerly(start())  # a teardown that never suspends needs no task
    cancelled: asyncio.CancelledError | None = None
    while True:
        try:
            outcome = await asyncio.shield(task)
        except asyncio.CancelledError as error:
            if task.cancelled():
                raise
            cancelled = error
            continue
        if cancelled is not None and outcome.fatal is None:
            outcome.fatal = cancelled
        return outcome


_ORDINARY = (Exception, type(None))  # what a scope's body may raise without interrupting it


def raise_outcome(scope: object, outcome: Outcome, body: BaseException | None) -> None:
    """Raise what the scope's exit must raise; return when the body's error stands alone.

    Failures become one ``ScopeTeardownError`` whose cause is the body's exception. A fatal
    interruption (cancellation, ``KeyboardInterrupt``) wins over failures, which are logged.
    """
    if not outcome.failures and outcome.fatal is None and isinstance(body, _ORDINARY):
        return  # the common exit: nothing failed, nothing interrupted
    group = None
    if outcome.failures:
        count = len(outcome.failures)
        group = ScopeTeardownError(
            f"{count} finalizer(s) of {scope} failed; see the grouped exceptions", outcome.failures
        )
    interrupt = outcome.fatal or (body if not isinstance(body, _ORDINARY) else None)
    if interrupt is not None:
        _log_suppressed(scope, group, interrupt)
        if interrupt is body:
            return
        raise interrupt
    if group is not None:
        raise group from body


def _log_suppressed(
    scope: object, group: ScopeTeardownError | None, interrupt: BaseException
) -> None:
    if group is None:
        return
    interrupt.add_note(f"While interrupted, finalizers of {scope} failed: {group!r}")
    logger.error(
        "Finalizers failed while the scope was interrupted",
        exc_info=group,
        extra={"scope": scope, "interrupt": type(interrupt).__name__},
    )
