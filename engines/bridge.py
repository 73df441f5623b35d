"""The WebSocket bridge: routes a user's events to that user's sockets, and nobody else's.

:class:`WebSocketBridge` is the seam the emitter talks to; :class:`AgentWebSocketBridge` is
the in-process implementation. Each registered socket is a :class:`Connection` with a
bounded outbound queue and its own sender task, so a slow or dead socket never delays
another connection: a full queue disconnects the slow consumer (close code 1013, "try again
later"), a send that raises or times out unregisters the socket instead of retrying it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

from ._lifecycle import check_positive
from .connection import TRY_AGAIN_LATER, Connection
from .context import require_identifier
from .errors import (
    BridgeClosedError,
    BridgeConfigError,
    ConnectionLimitError,
    InvalidResumeTokenError,
    InvalidSocketError,
    InvalidWebSocketBridgeError,
    WebSocketBridgeError,
)

__all__ = [
    "TRY_AGAIN_LATER",
    "AgentWebSocketBridge",
    "BridgeClosedError",
    "BridgeConfigError",
    "Connection",
    "ConnectionBridge",
    "ConnectionLimitError",
    "InvalidResumeTokenError",
    "InvalidSocketError",
    "InvalidWebSocketBridgeError",
    "ResumableBridge",
    "SocketLike",
    "WebSocketBridge",
    "WebSocketBridgeError",
    "require_bridge",
]

logger = logging.getLogger(__name__)


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


@runtime_checkable
class ConnectionBridge(WebSocketBridge, Protocol):
    """A bridge that also owns this process's sockets: the gateway registers them here.

    ``resumable`` says whether :meth:`ResumableBridge.connect` with ``resume_from`` is
    supported (the Redis bridge: yes; the in-process bridge keeps no history: no).
    """

    @property
    def resumable(self) -> bool:
        """Whether clients can resume from the last event they received."""
        ...

    def register_connection(self, user_id: str, socket: SocketLike) -> Connection:
        """Register ``socket`` for ``user_id``; events sent to the user reach it."""
        ...

    def unregister_connection(self, connection: Connection | None) -> None:
        """Unregister ``connection``; unknown or ``None`` is a no-op."""
        ...

    async def flush(self, user_id: str | None = None) -> None:
        """Wait until every event queued so far has left its queue."""
        ...

    def get_metrics(self) -> Mapping[str, Any]:
        """Counters and gauges of the bridge."""
        ...


@runtime_checkable
class ResumableBridge(ConnectionBridge, Protocol):
    """A :class:`ConnectionBridge` whose clients can resume after a drop.

    ``connect`` registers the socket and returns once events published after it will reach
    it; with ``resume_from`` (the ``stream_id`` of the last event the client got) it first
    sends every event after that one. A malformed ``resume_from`` raises
    :class:`InvalidResumeTokenError`.
    """

    async def connect(
        self, user_id: str, socket: SocketLike, *, resume_from: str | None = None
    ) -> Connection:
        """Register ``socket`` and wait until its subscription is in effect."""
        ...


def require_bridge(
    bridge: object,
    field: str = "websocket_bridge",
    error: type[InvalidWebSocketBridgeError] = InvalidWebSocketBridgeError,
) -> WebSocketBridge:
    """Return ``bridge`` if it has a callable ``send_to_user``, else raise ``error``
    (an :class:`InvalidWebSocketBridgeError`) naming ``field``."""
    if not callable(getattr(bridge, "send_to_user", None)):
        raise error(bridge, field)
    return bridge  # type: ignore[return-value]  # duck-typed: send_to_user is callable


class AgentWebSocketBridge:
    """The in-process :class:`WebSocketBridge`: per-user connections, one sender each.

    ``send_to_user`` only touches the connections of that user (a dict lookup), never
    awaits a socket, and never blocks on a full queue; once a queue is half full it yields
    to the event loop once, so a burst from one agent lets the senders catch up.
    """

    def __init__(
        self,
        *,
        queue_size: int = 256,
        send_timeout_seconds: float = 10.0,
        max_connections_per_user: int = 16,
    ) -> None:
        check_positive("queue_size", queue_size, integer=True, error=BridgeConfigError)
        check_positive("send_timeout_seconds", send_timeout_seconds, error=BridgeConfigError)
        check_positive(
            "max_connections_per_user",
            max_connections_per_user,
            integer=True,
            error=BridgeConfigError,
        )
        self._queue_size = queue_size
        self._max_connections = max_connections_per_user
        self._send_timeout = float(send_timeout_seconds)
        self._users: dict[str, dict[str, Connection]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self._active = 0
        self._events_queued = 0
        self._sent_by_closed = 0
        self._dropped_no_connection = 0
        self._slow_disconnects = 0
        self._failed_disconnects = 0

    def __repr__(self) -> str:
        return (
            f"<AgentWebSocketBridge users={len(self._users)} connections={self._active} "
            f"closed={self._closed}>"
        )

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._closed

    is_closed = closed

    @property
    def resumable(self) -> bool:
        """``False``: the in-process bridge keeps no history to resume from."""
        return False

    @property
    def max_connections_per_user(self) -> int:
        """How many sockets one user may hold open on this bridge at once."""
        return self._max_connections

    def register_connection(self, user_id: str, socket: SocketLike) -> Connection:
        """Register ``socket`` for ``user_id`` and start its sender task.

        Raises :class:`ConnectionLimitError` when the user already holds
        ``max_connections_per_user`` open connections.
        """
        if self._closed:
            raise BridgeClosedError
        require_identifier("user_id", user_id)
        if not callable(getattr(socket, "send_json", None)):
            raise InvalidSocketError(socket)
        if len(self._users.get(user_id, ())) >= self._max_connections:
            raise ConnectionLimitError(user_id, self._max_connections)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise WebSocketBridgeError(
                "register_connection() needs a running event loop; call it from async code."
            ) from None
        connection = Connection(
            user_id,
            socket,
            self._queue_size,
            send_timeout=self._send_timeout,
            on_failure=self._socket_failed,
        )
        self._track(connection.start(loop))
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
            if connection.offer(event):
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
            "events_sent": self._sent_by_closed + sum(c.sent for c in self._connections()),
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

    async def aclose(self) -> None:
        """Unregister every connection and wait for all sender tasks; idempotent."""
        self._closed = True
        for connection in tuple(self._connections()):
            self._disconnect(connection, "bridge closed")
        while self._tasks:
            await asyncio.wait(tuple(self._tasks))

    close = aclose
    """The same as :meth:`aclose`."""

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
        """Unregister ``connection`` now and retire its sender; ``False`` if it was not ours."""
        if not connection.is_open or not self._forget(connection):
            return False
        logger.debug(
            "WebSocket connection unregistered", extra={**connection.log_fields, "reason": reason}
        )
        finish = connection.retire(reason, close_code)
        if finish is not None:
            self._track(finish)
        return True

    def _forget(self, connection: Connection) -> bool:
        connections = self._users.get(connection.user_id)
        if connections is None or connections.get(connection.connection_id) is not connection:
            return False
        del connections[connection.connection_id]
        if not connections:
            del self._users[connection.user_id]
        self._active -= 1
        self._sent_by_closed += connection.sent
        return True

    def _socket_failed(self, connection: Connection, reason: str, close_code: int | None) -> None:
        if self._disconnect(connection, reason, close_code):
            self._failed_disconnects += 1
