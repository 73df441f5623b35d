"""The WebSocket bridge: routes a user's events to that user's sockets, and nobody else's.

:class:`WebSocketBridge` is the seam the emitter talks to; :class:`AgentWebSocketBridge` is
the in-process implementation. Each registered socket is a :class:`Connection` with a
bounded outbound queue and its own sender task, so a slow or dead socket never delays
another connection: a full queue disconnects the slow consumer (close code 1013, "try again
later"), a send that raises or times out unregisters the socket instead of retrying it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import uuid
from collections.abc import Iterator, Mapping
from typing import Any, Final, Protocol, runtime_checkable

from ._sanitize import require_identifier
from .errors import EngineScopeError

__all__ = [
    "TRY_AGAIN_LATER",
    "AgentWebSocketBridge",
    "BridgeClosedError",
    "BridgeConfigError",
    "Connection",
    "InvalidSocketError",
    "InvalidWebSocketBridgeError",
    "SocketLike",
    "WebSocketBridge",
    "WebSocketBridgeError",
]

logger = logging.getLogger(__name__)

TRY_AGAIN_LATER: Final = 1013  # WebSocket close code for an overloaded endpoint (RFC 6455)


class WebSocketBridgeError(EngineScopeError):
    """A WebSocket bridge could not do what was asked."""


class BridgeConfigError(WebSocketBridgeError, ValueError):
    """A bridge setting is out of range; ``field`` names it."""

    def __init__(self, field: str, value: object) -> None:
        self.field = field
        self.value = value
        super().__init__(
            f"AgentWebSocketBridge {field} must be a positive number, got {value!r}; "
            f"pass {field} > 0."
        )


class BridgeClosedError(WebSocketBridgeError, RuntimeError):
    """The bridge was closed and accepts no new connections."""

    def __init__(self) -> None:
        super().__init__(
            "Cannot register a connection: the AgentWebSocketBridge is closed; "
            "build a new bridge (or register before shutdown)."
        )


class InvalidSocketError(WebSocketBridgeError, TypeError):
    """The object given as a socket has no ``send_json`` method."""

    def __init__(self, socket: object) -> None:
        self.socket = socket
        super().__init__(
            f"Cannot register {type(socket).__name__} as a socket: it has no "
            "'async send_json(data)' method; pass a Starlette WebSocket or a SocketLike."
        )


class InvalidWebSocketBridgeError(WebSocketBridgeError, TypeError):
    """A ``websocket_bridge`` argument is missing or has no ``send_to_user`` method."""

    def __init__(self, bridge: object, field: str = "websocket_bridge") -> None:
        self.field = field
        self.bridge = bridge
        what = "is missing (None)" if bridge is None else f"{type(bridge).__name__} has no"
        super().__init__(
            f"Invalid {field!r}: {what} 'async send_to_user(user_id, event)' method; "
            "pass an AgentWebSocketBridge or another WebSocketBridge."
        )


@runtime_checkable
class SocketLike(Protocol):
    """Anything that can send a JSON-ready value to one client (a Starlette WebSocket can)."""

    async def send_json(self, data: Any) -> None:
        """Send ``data`` as one JSON message."""


@runtime_checkable
class WebSocketBridge(Protocol):
    """Delivers one user's events to that user's open connections."""

    async def send_to_user(self, user_id: str, event: Mapping[str, Any]) -> int:
        """Hand ``event`` to every connection of ``user_id``; return how many it reached."""
        ...


class Connection:
    """One registered socket of one user, with its outbound queue and sender task."""

    __slots__ = (
        "_close_reason",
        "_closed",
        "_idle",
        "_open",
        "_queue",
        "_queued",
        "_sent",
        "_task",
        "connection_id",
        "socket",
        "user_id",
    )

    def __init__(self, user_id: str, socket: SocketLike, queue_size: int) -> None:
        self.user_id: str = user_id
        self.connection_id: str = uuid.uuid4().hex
        self.socket: SocketLike = socket
        self._queue: asyncio.Queue[Mapping[str, Any]] = asyncio.Queue(queue_size)
        self._idle = asyncio.Event()  # set while nothing is queued or being sent
        self._idle.set()
        self._closed = asyncio.Event()  # set once the sender (and any close) has finished
        self._open = True
        self._queued = 0
        self._sent = 0
        self._close_reason: str | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def is_open(self) -> bool:
        """Whether the connection is still registered and accepts events."""
        return self._open

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
        return self._queue.qsize()

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

    def _offer(self, event: Mapping[str, Any]) -> bool:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            return False
        self._queued += 1
        self._idle.clear()
        return True

    def _mark_closed(self, reason: str) -> None:
        self._open = False
        self._close_reason = reason
        self._idle.set()


def _check_positive(field: str, value: object, *, integral: bool) -> None:
    kinds: tuple[type[int | float], ...] = (int,) if integral else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value > 0:
        raise BridgeConfigError(field, value)


def _log_fields(connection: Connection) -> dict[str, str]:
    return {"user_id": connection.user_id, "connection_id": connection.connection_id}


def _cancel_unless_current(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` unless it is the caller (a sender unregistering its own socket)."""
    try:
        current = asyncio.current_task()
    except RuntimeError:  # no running loop: called from sync code
        current = None
    if task is not current:
        task.cancel()


class AgentWebSocketBridge:
    """The in-process :class:`WebSocketBridge`: per-user connections, one sender each.

    ``send_to_user`` only touches the connections of that user (a dict lookup), never
    awaits a socket, and never blocks on a full queue; once a queue is half full it yields
    to the event loop once, so a burst from one agent lets the senders catch up.
    """

    def __init__(self, *, queue_size: int = 256, send_timeout_seconds: float = 10.0) -> None:
        _check_positive("queue_size", queue_size, integral=True)
        _check_positive("send_timeout_seconds", send_timeout_seconds, integral=False)
        self._queue_size = queue_size
        self._send_timeout = float(send_timeout_seconds)
        self._users: dict[str, dict[str, Connection]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._active = 0
        self._events_queued = 0
        self._events_sent = 0
        self._dropped_no_connection = 0
        self._slow_disconnects = 0
        self._failed_disconnects = 0

    def __repr__(self) -> str:
        return (
            f"<AgentWebSocketBridge users={len(self._users)} connections={self._active} "
            f"closed={self._closed}>"
        )

    @property
    def is_closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def register_connection(self, user_id: str, socket: SocketLike) -> Connection:
        """Register ``socket`` for ``user_id`` and start its sender task."""
        if self._closed:
            raise BridgeClosedError
        require_identifier("user_id", user_id)
        if not callable(getattr(socket, "send_json", None)):
            raise InvalidSocketError(socket)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise WebSocketBridgeError(
                "register_connection() needs a running event loop; call it from async code."
            ) from None
        connection = Connection(user_id, socket, self._queue_size)
        connection._task = self._track(
            loop.create_task(
                self._pump(connection), name=f"enginescope-ws-sender-{connection.connection_id}"
            )
        )
        self._users.setdefault(user_id, {})[connection.connection_id] = connection
        self._active += 1
        return connection

    def unregister_connection(self, connection: Connection | None) -> None:
        """Unregister ``connection`` and stop its sender; unknown or ``None`` is a no-op."""
        if connection is not None:
            self._disconnect(connection, "unregistered")

    async def send_to_user(self, user_id: str, event: Mapping[str, Any]) -> int:
        """Queue ``event`` to each open connection of ``user_id``; return how many."""
        connections = self._users.get(user_id)
        if not connections:
            self._dropped_no_connection += 1
            return 0
        reached = 0
        backed_up = False
        for connection in tuple(connections.values()):
            if connection._offer(event):
                reached += 1
                backed_up = backed_up or connection.backlog * 2 >= self._queue_size
            elif self._disconnect(connection, "slow consumer", TRY_AGAIN_LATER):
                self._slow_disconnects += 1
        self._events_queued += reached
        if backed_up:  # a burst: let the senders run before the caller queues more
            await asyncio.sleep(0)
        return reached

    def connection_count(self, user_id: str | None = None) -> int:
        """Open connections of ``user_id``, or of everybody."""
        if user_id is None:
            return self._active
        return len(self._users.get(user_id, ()))

    def connections_for(self, user_id: str) -> tuple[Connection, ...]:
        """The open connections of ``user_id``, oldest first."""
        return tuple(self._users.get(user_id, {}).values())

    def get_metrics(self) -> dict[str, int]:
        """Counters since construction, plus the current connection gauges."""
        return {
            "events_queued": self._events_queued,
            "events_sent": self._events_sent,
            "events_dropped_no_connection": self._dropped_no_connection,
            "slow_consumer_disconnects": self._slow_disconnects,
            "failed_socket_disconnects": self._failed_disconnects,
            "active_connections": self._active,
            "users_connected": len(self._users),
        }

    async def flush(self, user_id: str | None = None) -> None:
        """Wait until every queued event (of ``user_id``, or of all users) left its queue."""
        while True:
            busy = next((c for c in self._connections(user_id) if not c._idle.is_set()), None)
            if busy is None:
                return
            await busy._idle.wait()

    async def close(self) -> None:
        """Unregister every connection and wait for all sender tasks; idempotent."""
        self._closed = True
        for connection in tuple(self._connections()):
            self._disconnect(connection, "bridge closed")
        while self._tasks:
            await asyncio.wait(tuple(self._tasks))

    def _connections(self, user_id: str | None = None) -> Iterator[Connection]:
        if user_id is not None:
            yield from tuple(self._users.get(user_id, {}).values())
            return
        for connections in tuple(self._users.values()):
            yield from tuple(connections.values())

    def _track(self, task: asyncio.Task[None]) -> asyncio.Task[None]:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _disconnect(
        self, connection: Connection, reason: str, close_code: int | None = None
    ) -> bool:
        """Unregister ``connection`` now and retire its task; ``False`` if it was not ours."""
        if not connection.is_open or not self._forget(connection):
            return False
        connection._mark_closed(reason)
        logger.debug(
            "WebSocket connection unregistered",
            extra={
                "user_id": connection.user_id,
                "connection_id": connection.connection_id,
                "reason": reason,
            },
        )
        self._retire(connection, close_code)
        return True

    def _forget(self, connection: Connection) -> bool:
        connections = self._users.get(connection.user_id)
        if connections is None or connections.get(connection.connection_id) is not connection:
            return False
        del connections[connection.connection_id]
        if not connections:
            del self._users[connection.user_id]
        self._active -= 1
        return True

    def _retire(self, connection: Connection, close_code: int | None) -> None:
        """Stop the sender; then, in a tracked task, close the socket and mark it closed."""
        sender = connection._task
        if sender is None:  # pragma: no cover - set right after construction
            connection._closed.set()
            return
        _cancel_unless_current(sender)
        try:
            finish = self._finish(connection, sender, close_code)
            self._track(sender.get_loop().create_task(finish))
        except RuntimeError:  # the loop is closed: nothing is left to wait for
            finish.close()
            connection._closed.set()

    async def _finish(
        self, connection: Connection, sender: asyncio.Task[None], close_code: int | None
    ) -> None:
        try:
            await asyncio.wait((sender,))
            if close_code is not None:
                await self._close_socket(connection, close_code)
        finally:
            connection._closed.set()

    async def _close_socket(self, connection: Connection, code: int) -> None:
        close = getattr(connection.socket, "close", None)
        if not callable(close):
            return
        try:
            async with asyncio.timeout(self._send_timeout):
                result = close(code=code)
                if inspect.isawaitable(result):
                    await result
        except Exception:
            logger.warning(
                "Closing a disconnected WebSocket failed",
                exc_info=True,
                extra={"user_id": connection.user_id, "connection_id": connection.connection_id},
            )

    async def _pump(self, connection: Connection) -> None:
        while True:
            event = await connection._queue.get()
            if not await self._deliver(connection, event):
                return
            connection._idle.set()  # _deliver returns once the queue is empty

    async def _deliver(self, connection: Connection, event: Mapping[str, Any]) -> bool:
        """Send ``event`` and every event queued behind it; ``False`` if the socket failed.

        Each send must finish within the send timeout. One timer covers a burst: it is
        pushed forward only once a tenth of the timeout has passed since it was set, so
        every send still gets at least 90% of it, and a burst costs one timer, not one per
        event.
        """
        now = asyncio.get_running_loop().time
        queue, timeout = connection._queue, self._send_timeout
        try:
            async with asyncio.timeout(timeout) as deadline:
                armed = now()
                while True:
                    await connection.socket.send_json(event)
                    connection._sent += 1
                    self._events_sent += 1
                    if queue.empty():
                        return True
                    event = queue.get_nowait()
                    if now() - armed > timeout / 10:
                        armed = now()
                        deadline.reschedule(armed + timeout)
        except TimeoutError:
            logger.warning(
                "WebSocket send timed out; unregistering the connection",
                extra=_log_fields(connection),
            )
            self._socket_failed(connection, "send timed out", TRY_AGAIN_LATER)
            return False
        except Exception:
            logger.warning(
                "WebSocket send failed; unregistering the connection",
                exc_info=True,
                extra=_log_fields(connection),
            )
            self._socket_failed(connection, "send failed", None)
            return False

    def _socket_failed(self, connection: Connection, reason: str, close_code: int | None) -> None:
        if self._disconnect(connection, reason, close_code):
            self._failed_disconnects += 1
