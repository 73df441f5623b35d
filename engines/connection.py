"""One registered socket of one user: its bounded outbound queue and the sender draining it.

A :class:`Connection` owns its sender task. The bridge offers events without waiting; the
sender sends them in order, each within the send timeout. A socket that fails or times out
is reported to the bridge (``on_failure``), which unregisters it; it is never retried.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from .bridge import SocketLike

__all__ = ["TRY_AGAIN_LATER", "Connection", "FailureHandler"]

logger = logging.getLogger(__name__)

TRY_AGAIN_LATER: Final = 1013  # WebSocket close code for an overloaded endpoint (RFC 6455)

FailureHandler = Callable[["Connection", str, "int | None"], None]
"""Called by a sender whose socket failed: ``(connection, reason, close_code)``."""


def _cancel_unless_current(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` unless it is the caller (a sender unregistering its own socket)."""
    try:
        current = asyncio.current_task()
    except RuntimeError:  # no running loop: called from sync code
        current = None
    if task is not current:
        task.cancel()


class Connection:
    """One registered socket of one user, with its outbound queue and sender task."""

    __slots__ = (
        "_close_reason",
        "_closed",
        "_idle",
        "_on_failure",
        "_open",
        "_pending",
        "_queue_size",
        "_queued",
        "_send_timeout",
        "_sent",
        "_task",
        "_wakeup",
        "connection_id",
        "socket",
        "user_id",
    )

    def __init__(
        self,
        user_id: str,
        socket: SocketLike,
        queue_size: int,
        *,
        send_timeout: float = 10.0,
        on_failure: FailureHandler | None = None,
    ) -> None:
        self.user_id: str = user_id
        self.connection_id: str = uuid.uuid4().hex
        self.socket: SocketLike = socket
        self._pending: deque[Mapping[str, Any]] = deque()
        self._queue_size = queue_size
        self._wakeup: asyncio.Future[None] | None = None  # the idle sender waits on it
        self._idle = asyncio.Event()  # set while nothing is queued or being sent
        self._idle.set()
        self._closed = asyncio.Event()  # set once the sender (and any close) has finished
        self._open = True
        self._queued = 0
        self._sent = 0
        self._close_reason: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._send_timeout = send_timeout
        self._on_failure = on_failure

    @property
    def is_open(self) -> bool:
        """Whether the connection is still registered and accepts events."""
        return self._open

    @property
    def closed(self) -> bool:
        """Whether the connection is closed and its sender has finished."""
        return self._closed.is_set()

    @property
    def queued(self) -> int:
        """How many events were queued to this connection in total."""
        return self._queued

    @property
    def sent(self) -> int:
        """How many events the socket accepted."""
        return self._sent

    @property
    def backlog(self) -> int:
        """How many queued events wait to be sent."""
        return len(self._pending)

    @property
    def close_reason(self) -> str | None:
        """Why the connection was closed (``None`` while open)."""
        return self._close_reason

    async def wait_closed(self) -> None:
        """Wait until the connection is closed and its sender task has finished."""
        await self._closed.wait()

    def __repr__(self) -> str:
        state = "open" if self._open else f"closed ({self._close_reason})"
        return (
            f"<Connection user_id={self.user_id!r} connection_id={self.connection_id!r} "
            f"{state} queued={self._queued} sent={self._sent}>"
        )

    @property
    def log_fields(self) -> dict[str, str]:
        """The connection's identity, for a log record's ``extra``."""
        return {"user_id": self.user_id, "connection_id": self.connection_id}

    # -- used by the bridge ----------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> asyncio.Task[None]:
        """Start the sender task on ``loop``."""
        self._wakeup = wakeup = loop.create_future()
        self._task = loop.create_task(
            self._pump(wakeup), name=f"enginescope-ws-sender-{self.connection_id}"
        )
        return self._task

    def offer(self, event: Mapping[str, Any]) -> bool:
        """Queue ``event`` without waiting; ``False`` if the queue is full."""
        if len(self._pending) >= self._queue_size:
            return False
        self._pending.append(event)
        self._queued += 1
        wakeup = self._wakeup
        if wakeup is not None:  # the sender waits: wake it (a busy sender needs nothing)
            self._wakeup = None
            self._idle.clear()
            if not wakeup.done():
                wakeup.set_result(None)
        return True

    def retire(self, reason: str, close_code: int | None) -> asyncio.Task[None] | None:
        """Mark the connection closed and stop its sender.

        Returns the task (on the sender's loop) that waits for the sender, closes the
        socket with ``close_code`` (if any) and then sets :meth:`wait_closed`; ``None`` when
        there is nothing left to wait for (the loop is closed).
        """
        self._open = False
        self._close_reason = reason
        self._idle.set()
        sender = self._task
        if sender is None:  # pragma: no cover - the sender starts at registration
            self._closed.set()
            return None
        _cancel_unless_current(sender)
        finish = self._finish(sender, close_code)
        try:
            return sender.get_loop().create_task(finish)
        except RuntimeError:  # the loop is closed: nothing is left to wait for
            finish.close()
            self._closed.set()
            return None

    async def _finish(self, sender: asyncio.Task[None], close_code: int | None) -> None:
        try:
            await asyncio.wait((sender,))
            if close_code is not None:
                await self._close_socket(close_code)
        finally:
            self._closed.set()

    async def _close_socket(self, code: int) -> None:
        close = getattr(self.socket, "close", None)
        if not callable(close):
            return
        try:
            async with asyncio.timeout(self._send_timeout):
                result = close(code=code)
                if inspect.isawaitable(result):
                    await result
        except Exception:
            logger.warning(
                "Closing a disconnected WebSocket failed", exc_info=True, extra=self.log_fields
            )

    # -- the sender ------------------------------------------------------------------

    async def _pump(self, wakeup: asyncio.Future[None]) -> None:
        while True:
            await wakeup  # resolved by offer()
            if not await self._deliver():
                return
            self._idle.set()  # _deliver returns once nothing is queued
            wakeup = self._wakeup = wakeup.get_loop().create_future()

    async def _deliver(self) -> bool:
        """Send every queued event, oldest first; ``False`` if the socket failed.

        Each send must finish within the send timeout. One timer covers a burst: it is
        pushed forward only once a tenth of the timeout has passed since it was set, so
        every send still gets at least 90% of it, and a burst costs one timer, not one per
        event.
        """
        now = asyncio.get_running_loop().time
        pending, timeout = self._pending, self._send_timeout
        try:
            async with asyncio.timeout(timeout) as deadline:
                armed = now()
                while True:
                    await self.socket.send_json(pending.popleft())
                    self._sent += 1
                    if not pending:
                        return True
                    if now() - armed > timeout / 10:
                        armed = now()
                        deadline.reschedule(armed + timeout)
        except TimeoutError:
            logger.warning(
                "WebSocket send timed out; unregistering the connection", extra=self.log_fields
            )
            self._failed("send timed out", TRY_AGAIN_LATER)
            return False
        except Exception:
            logger.warning(
                "WebSocket send failed; unregistering the connection",
                exc_info=True,
                extra=self.log_fields,
            )
            self._failed("send failed", None)
            return False

    def _failed(self, reason: str, close_code: int | None) -> None:
        if self._on_failure is not None:
            self._on_failure(self, reason, close_code)
