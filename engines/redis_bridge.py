"""The Redis bridge: a user's events travel through Redis to whichever replica holds the socket.

``send_to_user`` appends the event to the user's stream ``{prefix}:events:{user_id}``
(``XADD ... MAXLEN ~ stream_maxlen``; the key expires ``replay_window_seconds`` after the
user's last event). Every replica runs one reader task that follows, with ``XREAD BLOCK``,
the streams of the users connected to it and hands each entry to a local
:class:`~enginescope.engines.bridge.AgentWebSocketBridge`, which owns the sockets (one
bounded queue and sender per socket, as in one process).

Resume. Every event delivered by this bridge carries one extra key, ``stream_id``: the
Redis stream entry id (``"1718000000000-0"``), increasing per user. A client that
reconnects passes the last one it received::

    connection = await bridge.connect(user_id, websocket, resume_from=last_stream_id)

and receives every event after it (while the stream still holds it: within the replay
window and the last ``stream_maxlen`` events), then live events, each exactly once and in
order. A client that only kept the envelope may pass ``last_seen=(run_id, seq)`` of the
last event it saw instead. Without either, the socket receives the events published after
it subscribed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

import redis.asyncio as aioredis

from ._redis import (
    REDIS_ERRORS,
    Backoff,
    connect,
    describe,
    describe_error,
    log_failure,
    stop_task,
    stream_entries,
    text,
)
from .bridge import AgentWebSocketBridge, Connection, SocketLike
from .errors import (
    BridgeClosedError,
    BridgeConfigError,
    InvalidResumeTokenError,
    WebSocketBridgeError,
)

__all__ = ["InvalidResumeTokenError", "RedisWebSocketBridge", "StreamId"]

logger = logging.getLogger(__name__)

StreamId = tuple[int, int]
"""A parsed Redis stream entry id: ``(milliseconds, sequence)``."""

_START: Final[StreamId] = (0, 0)
_STREAM_ID: Final = re.compile(r"\A(\d+)-(\d+)\Z")
_FIELD: Final = "event"
_SCAN_PAGE: Final = 200  # entries per XREVRANGE page when looking up last_seen


def parse_stream_id(value: str) -> StreamId:
    """``"1718000000000-3"`` as ``(1718000000000, 3)``; raises for anything else."""
    match = _STREAM_ID.match(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidResumeTokenError("resume_from", value, "a stream id like '1718000000000-0'")
    return int(match[1]), int(match[2])


def _format(stream_id: StreamId) -> str:
    return f"{stream_id[0]}-{stream_id[1]}"


def _check_last_seen(last_seen: object) -> tuple[str, int]:
    expected = "a (run_id, seq) pair such as ('run-1', 7)"
    if not isinstance(last_seen, tuple) or len(last_seen) != 2:
        raise InvalidResumeTokenError("last_seen", last_seen, expected)
    run_id, seq = last_seen
    if not isinstance(run_id, str) or isinstance(seq, bool) or not isinstance(seq, int):
        raise InvalidResumeTokenError("last_seen", last_seen, expected)
    return run_id, seq


def _decode(fields: Mapping[Any, Any]) -> dict[str, Any] | None:
    """The event stored in a stream entry, or ``None`` if it is not a JSON object."""
    raw = fields.get(_FIELD.encode(), fields.get(_FIELD))
    try:
        event = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


class _StreamSocket:
    """The socket registered with the local bridge: skips what its client already has.

    ``position`` is the id of the last entry the client has; an entry at or before it is
    skipped, so a connection joins a user's stream at its own position and never sees an
    event twice, whoever else reads that stream on this replica.
    """

    __slots__ = ("_bridge", "position", "socket", "subscribed")

    def __init__(self, socket: SocketLike, bridge: RedisWebSocketBridge) -> None:
        self.socket = socket
        self.position: StreamId | None = None
        self.subscribed = asyncio.Event()
        self._bridge = bridge

    def __repr__(self) -> str:
        return f"<_StreamSocket position={self.position} socket={self.socket!r}>"

    def start_at(self, position: StreamId) -> None:
        self.position = position
        self.subscribed.set()

    async def send_json(self, data: Any) -> None:
        await self.subscribed.wait()
        entry = parse_stream_id(data["stream_id"])
        if self.position is not None and entry <= self.position:
            self._bridge._count("duplicates_skipped")
            return
        await self.socket.send_json(data)
        self.position = entry
        self._bridge._count("delivered")

    async def close(self, code: int = 1000) -> None:
        close = getattr(self.socket, "close", None)
        if callable(close):
            result = close(code=code)
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                await result


class _Join:
    """A connection waiting for the reader to place it in its user's stream."""

    __slots__ = ("connection", "last_seen", "resume_from", "socket", "user_id")

    def __init__(
        self,
        connection: Connection,
        socket: _StreamSocket,
        resume_from: StreamId | None,
        last_seen: tuple[str, int] | None,
    ) -> None:
        self.connection = connection
        self.socket = socket
        self.user_id = connection.user_id
        self.resume_from = resume_from
        self.last_seen = last_seen

    @property
    def resuming(self) -> bool:
        """Whether the client asked for the events it missed."""
        return self.resume_from is not None or self.last_seen is not None


_COUNTERS: Final = (
    "published",
    "undelivered_redis_down",
    "undelivered_unencodable",
    "undelivered_closed",
    "read",
    "delivered",
    "replayed",
    "duplicates_skipped",
    "resume_gaps",
    "isolation_drops",
    "reader_errors",
)


class RedisWebSocketBridge:
    """A :class:`~enginescope.engines.bridge.WebSocketBridge` shared by replicas via Redis.

    ``client`` is a ``redis.asyncio.Redis`` (yours: not closed here) or a URL (built and
    closed by :meth:`close`). Its socket timeout must exceed ``block_ms``. ``local`` holds
    this replica's sockets (a fresh :class:`AgentWebSocketBridge` by default, closed with
    this bridge; one you pass is left open).
    """

    def __init__(
        self,
        client: aioredis.Redis | str,
        *,
        local: AgentWebSocketBridge | None = None,
        stream_maxlen: int = 1000,
        replay_window_seconds: float = 60.0,
        key_prefix: str = "enginescope",
        block_ms: int = 1000,
        read_count: int = 256,
    ) -> None:
        for field, value in (
            ("stream_maxlen", stream_maxlen),
            ("block_ms", block_ms),
            ("read_count", read_count),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise BridgeConfigError(field, value)
        if isinstance(replay_window_seconds, bool) or not replay_window_seconds > 0:
            raise BridgeConfigError("replay_window_seconds", replay_window_seconds)
        self._client, self._owns_client = connect(client, socket_timeout=block_ms / 1000 + 5.0)
        self._url = describe(self._client)
        self._owns_local = local is None
        self._local = local if local is not None else AgentWebSocketBridge()
        self._maxlen = stream_maxlen
        self._window_ms = max(1, round(replay_window_seconds * 1000))
        self._prefix = key_prefix
        self._block_ms = block_ms
        self._read_count = read_count
        self._cursors: dict[str, StreamId] = {}  # followed user -> last entry read
        self._replay_until: dict[str, StreamId] = {}  # user -> end of a rewound range
        self._joins: list[_Join] = []
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._read_task: asyncio.Future[Any] | None = None  # the reader's XREAD in flight
        self._closed = False
        self._publish_failing = False
        self._counters = dict.fromkeys(_COUNTERS, 0)

    def __repr__(self) -> str:
        return (
            f"<RedisWebSocketBridge url={self._url!r} followed_users={len(self._cursors)} "
            f"connections={self._local.connection_count()} closed={self._closed}>"
        )

    @property
    def local(self) -> AgentWebSocketBridge:
        """The in-process bridge that owns this replica's sockets."""
        return self._local

    @property
    def resumable(self) -> bool:
        """``True``: a client can resume from the ``stream_id`` of its last event."""
        return True

    @property
    def url(self) -> str:
        """Where the bridge's Redis is (without credentials)."""
        return self._url

    @property
    def is_closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def key(self, user_id: str) -> str:
        """The Redis key of ``user_id``'s event stream."""
        return f"{self._prefix}:events:{user_id}"

    def _count(self, counter: str, amount: int = 1) -> None:
        self._counters[counter] += amount

    # -- publishing ------------------------------------------------------------------

    async def send_to_user(self, user_id: str, event: Mapping[str, Any]) -> int:
        """Publish ``event`` to ``user_id``'s stream; 1 if Redis took it, else 0.

        Never raises: an event Redis could not take is counted (``undelivered_*``) and
        logged, and the agent goes on.
        """
        if self._closed:
            self._count("undelivered_closed")
            return 0
        try:
            payload = json.dumps(dict(event), default=str, separators=(",", ":"))
        except (TypeError, ValueError):
            self._count("undelivered_unencodable")
            logger.warning("Agent event is not JSON-encodable; dropped", extra={"user_id": user_id})
            return 0
        return await self._publish(user_id, payload)

    async def _publish(self, user_id: str, payload: str) -> int:
        key = self.key(user_id)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.xadd(key, {_FIELD: payload}, maxlen=self._maxlen, approximate=True)
                pipe.pexpire(key, self._window_ms)
                await pipe.execute()
        except REDIS_ERRORS as error:
            self._publish_failed(user_id, error)
            return 0
        if self._publish_failing:
            self._publish_failing = False
            logger.info(
                "Publishing agent events to Redis works again", extra={"redis_url": self._url}
            )
        self._count("published")
        return 1

    def _publish_failed(self, user_id: str, error: BaseException) -> None:
        self._count("undelivered_redis_down")
        level = logging.DEBUG if self._publish_failing else logging.WARNING
        self._publish_failing = True
        logger.log(
            level,
            "Agent event not delivered: Redis is unreachable at %s (%s)",
            self._url,
            describe_error(error),
            extra={"user_id": user_id, "redis_url": self._url},
        )

    # -- connections -----------------------------------------------------------------

    def register_connection(
        self,
        user_id: str,
        socket: SocketLike,
        *,
        resume_from: str | None = None,
        last_seen: tuple[str, int] | None = None,
    ) -> Connection:
        """Register ``socket`` for ``user_id`` on this replica and follow the user's stream.

        ``resume_from`` is the ``stream_id`` of the last event the client received;
        ``last_seen`` is its ``(run_id, seq)`` instead. Returns at once; the subscription
        takes effect when the reader has placed it (see :meth:`connect`).
        """
        if self._closed:
            raise BridgeClosedError
        if resume_from is not None and last_seen is not None:
            raise InvalidResumeTokenError("last_seen", last_seen, "None when resume_from is given")
        position = None if resume_from is None else parse_stream_id(resume_from)
        seen = None if last_seen is None else _check_last_seen(last_seen)
        stream_socket = _StreamSocket(socket, self)
        connection = self._local.register_connection(user_id, stream_socket)
        self._ensure_reader()
        cursor = self._cursors.get(user_id)
        if position is None and seen is None and cursor is not None:
            stream_socket.start_at(cursor)  # live, on a stream this replica already reads
            return connection
        if position is not None:
            stream_socket.start_at(position)
        self._joins.append(_Join(connection, stream_socket, position, seen))
        self._wake.set()
        return connection

    async def connect(
        self,
        user_id: str,
        socket: SocketLike,
        *,
        resume_from: str | None = None,
        last_seen: tuple[str, int] | None = None,
    ) -> Connection:
        """:meth:`register_connection`, then wait until the subscription is in effect.

        Every event published after this returns reaches the socket. While Redis is down
        it waits for Redis; bound it with ``asyncio.timeout`` if you must.
        """
        connection = self.register_connection(
            user_id, socket, resume_from=resume_from, last_seen=last_seen
        )
        try:
            await self.wait_subscribed(connection)
        except BaseException:
            self.unregister_connection(connection)
            raise
        return connection

    async def wait_subscribed(self, connection: Connection) -> None:
        """Wait until ``connection`` follows its user's stream (or was closed)."""
        socket = connection.socket
        if not isinstance(socket, _StreamSocket):
            raise WebSocketBridgeError(
                f"{connection!r} was not registered through this RedisWebSocketBridge; "
                "register it with bridge.register_connection() or bridge.connect()."
            )
        joined = asyncio.ensure_future(self._joined(connection, socket))
        closed = asyncio.ensure_future(connection.wait_closed())
        try:
            await asyncio.wait((joined, closed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            joined.cancel()
            closed.cancel()

    async def _joined(self, connection: Connection, socket: _StreamSocket) -> None:
        await socket.subscribed.wait()
        while any(join.connection is connection for join in self._joins):
            await self._wait_progress()

    def unregister_connection(self, connection: Connection | None) -> None:
        """Unregister ``connection``; the reader stops following a user nobody holds."""
        self._local.unregister_connection(connection)

    def connection_count(self, user_id: str | None = None) -> int:
        """Open connections on this replica of ``user_id``, or of everybody."""
        return self._local.connection_count(user_id)

    # -- the reader ------------------------------------------------------------------

    async def start(self) -> None:
        """Start the reader task; idempotent (registering a connection also starts it)."""
        if self._closed:
            raise BridgeClosedError
        self._ensure_reader()

    def _ensure_reader(self) -> None:
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(
                self._read_forever(), name="enginescope-redis-reader"
            )

    async def _read_forever(self) -> None:
        backoff = Backoff()
        while not self._closed:
            self._wake.clear()
            try:
                await self._apply_joins()
                await self._read_once()
            except REDIS_ERRORS as error:
                self._count("reader_errors")
                log_failure(logger, backoff, "Reading agent events", self._url, error)
                await asyncio.sleep(backoff.failed())
                continue
            if backoff.succeeded():
                logger.info(
                    "Reading agent events from Redis works again", extra={"redis_url": self._url}
                )

    async def _apply_joins(self) -> None:
        while self._joins:
            join = self._joins[0]
            if join.connection.is_open:
                position = await self._join_position(join)
                if join.resuming:
                    await self._mark_replay(join.user_id, position)
                self._follow(join.user_id, position)
                join.socket.start_at(position)
            self._joins.pop(0)
            self._signal_progress()

    async def _join_position(self, join: _Join) -> StreamId:
        if join.resume_from is not None:
            return join.resume_from
        if join.last_seen is not None:
            found = await self._find_entry(join.user_id, *join.last_seen)
            if found is None:
                self._count("resume_gaps")
                logger.info(
                    "last_seen event is no longer in the stream; replaying all it holds",
                    extra={"user_id": join.user_id, "run_id": join.last_seen[0]},
                )
                return _START
            return found
        cursor = self._cursors.get(join.user_id)
        return cursor if cursor is not None else await self._latest(join.user_id)

    async def _mark_replay(self, user_id: str, position: StreamId) -> None:
        """Count the entries after ``position`` that exist now as ``replayed`` when read."""
        latest = await self._latest(user_id)
        if position < latest:
            self._replay_until[user_id] = max(latest, self._replay_until.get(user_id, _START))

    def _follow(self, user_id: str, position: StreamId) -> None:
        """Read ``user_id``'s stream from ``position`` on (rewinding it if needed)."""
        cursor = self._cursors.get(user_id)
        if cursor is None or position < cursor:
            self._cursors[user_id] = position

    async def _latest(self, user_id: str) -> StreamId:
        entries = stream_entries(await self._client.xrevrange(self.key(user_id), count=1))
        return parse_stream_id(text(entries[0][0])) if entries else _START

    async def _find_entry(self, user_id: str, run_id: str, seq: int) -> StreamId | None:
        """The id of ``user_id``'s entry with ``(run_id, seq)``, newest first; O(stream)."""
        upper = "+"
        while True:
            entries = stream_entries(
                await self._client.xrevrange(
                    self.key(user_id), max=upper, min="-", count=_SCAN_PAGE
                )
            )
            for entry_id, fields in entries:
                event = _decode(fields)
                if event and event.get("run_id") == run_id and event.get("seq") == seq:
                    return parse_stream_id(text(entry_id))
            if len(entries) < _SCAN_PAGE:
                return None
            upper = f"({text(entries[-1][0])}"

    def _forget_idle_users(self) -> None:
        joining = {join.user_id for join in self._joins}
        for user_id in tuple(self._cursors):
            if user_id not in joining and not self._local.connection_count(user_id):
                del self._cursors[user_id]
                self._replay_until.pop(user_id, None)
                self._signal_progress()

    async def _read_once(self) -> None:
        self._forget_idle_users()
        if not self._cursors:
            await self._wake.wait()
            return
        users = {self.key(user_id): user_id for user_id in self._cursors}
        streams = {key: _format(self._cursors[user]) for key, user in users.items()}
        result = await self._read_or_wake(streams)
        if result is not None:
            await self._dispatch(users, result)

    async def _read_or_wake(self, streams: dict[str, str]) -> Any:
        """``XREAD BLOCK`` over ``streams``, cut short (``None``) when a connection joins."""
        read = self._read_task = asyncio.ensure_future(
            self._client.xread(streams, count=self._read_count, block=self._block_ms)  # type: ignore[arg-type]
        )
        wake = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait((read, wake), return_when=asyncio.FIRST_COMPLETED)
        finally:
            wake.cancel()
            await stop_task(read)  # close() waits for it too, should we be cancelled here
        if read.cancelled():
            return None
        return read.result()

    async def _dispatch(self, users: Mapping[str, str], result: Any) -> None:
        items = result.items() if isinstance(result, dict) else result
        for raw_key, entries in items:
            user_id = users.get(text(raw_key))
            if user_id is not None and user_id in self._cursors:
                await self._deliver(user_id, entries)
        self._signal_progress()

    async def _deliver(self, user_id: str, entries: Iterable[Any]) -> None:
        for raw_id, fields in stream_entries(entries):
            entry_id = text(raw_id)
            position = parse_stream_id(entry_id)
            self._cursors[user_id] = position
            self._count("read")
            event = _decode(fields)
            if event is None or event.get("user_id") != user_id:
                self._count("isolation_drops")
                logger.error(
                    "Dropped a stream entry that is not an event of the stream's user",
                    extra={"user_id": user_id, "stream_id": entry_id},
                )
                continue
            event["stream_id"] = entry_id
            self._count_replay(user_id, position)
            await self._local.send_to_user(user_id, event)

    def _count_replay(self, user_id: str, position: StreamId) -> None:
        replay_end = self._replay_until.get(user_id)
        if replay_end is None:
            return
        if position <= replay_end:
            self._count("replayed")
        else:
            del self._replay_until[user_id]

    # -- progress, flush, close, metrics ---------------------------------------------

    def _signal_progress(self) -> None:
        self._progress.set()

    async def _wait_progress(self) -> None:
        self._progress.clear()
        await self._progress.wait()

    async def flush(self, user_id: str | None = None) -> None:
        """Wait until every event published so far (to ``user_id``, or to the users this
        replica follows) was read and sent to the local sockets (while Redis is down: only
        what was already read)."""
        while self._joins:
            await self._wait_progress()
        users = [user_id] if user_id is not None else list(self._cursors)
        try:
            targets = {user: await self._latest(user) for user in users if user in self._cursors}
        except REDIS_ERRORS:  # nothing more can be read until Redis returns
            targets = {}
        for user, target in targets.items():
            while user in self._cursors and self._cursors[user] < target:
                await self._wait_progress()
        await self._local.flush(user_id)

    async def close(self) -> None:
        """Stop the reader, close the owned local bridge and client; idempotent."""
        if self._closed:
            return
        self._closed = True
        reader, self._reader = self._reader, None
        await stop_task(reader)
        await stop_task(self._read_task)
        for join in self._joins:
            join.socket.subscribed.set()
        self._joins.clear()
        self._signal_progress()
        try:
            await self._close_connections()
        finally:
            if self._owns_client:
                await self._client.aclose()

    async def _close_connections(self) -> None:
        if self._owns_local:
            await self._local.close()
            return
        for user_id in tuple(self._cursors):
            for connection in self._local.connections_for(user_id):
                if isinstance(connection.socket, _StreamSocket):
                    self._local.unregister_connection(connection)
        self._cursors.clear()

    def get_metrics(self) -> dict[str, Any]:
        """The local bridge's metrics (same keys as :class:`AgentWebSocketBridge`), plus
        this bridge's counters since construction and its gauges.

        ``delivered`` counts events the sockets accepted; the local ``events_sent`` also
        counts the duplicates a resuming socket skipped (``duplicates_skipped``).
        """
        return {
            **self._local.get_metrics(),
            **self._counters,
            "followed_users": len(self._cursors),
            "pending_joins": len(self._joins),
            "reader_running": self._reader is not None and not self._reader.done(),
            "redis_url": self._url,
        }
