"""The reader: one task follows a replica's users' streams and feeds the local sockets.

Not API. A connection *joins* its user's stream at a position (the ``resume_from`` it was
given, or the stream's end); the reader applies joins between reads, rewinding a user's
cursor when a resuming socket needs older entries (the sockets skip what they already
have), and stops following a user nobody on this replica holds.

One bad stream never stalls the others: when the shared ``XREAD`` fails for any reason
but Redis being unavailable, the streams are read one by one and a stream that fails by
itself is dropped (its sockets are unregistered, ``stream_errors`` counts it); an entry
that cannot be delivered is skipped (``entry_errors``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from .._lifecycle import BackgroundLoop, Backoff, stop_task
from ..bridge import AgentWebSocketBridge, Connection
from ._client import UNAVAILABLE_ERRORS, ClientHandle, describe_error, log_failure, stream_entries
from ._publisher import FIELD
from ._socket import RecentEvents, StreamSocket
from ._stream_ids import START, StreamId, entry_position, format_stream_id

__all__ = ["StreamReader"]

logger = logging.getLogger(__name__)

_FIELDS = (FIELD.encode(), FIELD)


def _decode(fields: Mapping[Any, Any]) -> dict[str, Any] | None:
    """The event stored in a stream entry, or ``None`` if it is not a JSON object."""
    raw = fields.get(_FIELDS[0], fields.get(_FIELDS[1]))
    try:
        event = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Join:
    """A connection waiting for the reader to place it in its user's stream."""

    __slots__ = ("connection", "key", "resume_from", "socket", "user_id")

    def __init__(
        self, connection: Connection, socket: StreamSocket, key: bytes, resume_from: StreamId | None
    ) -> None:
        self.connection = connection
        self.socket = socket
        self.user_id = connection.user_id
        self.key = key
        self.resume_from = resume_from


class StreamReader:
    """Follows streams of users connected to this replica with ``XREAD BLOCK``.

    In a cluster, every stream one reader follows lives in one hash slot (the bridge runs
    one reader per key bucket), so one ``XREAD`` covers them all.
    """

    def __init__(
        self,
        handle: ClientHandle,
        local: AgentWebSocketBridge,
        counters: dict[str, int],
        *,
        name: str,
        block_ms: int,
        read_count: int,
    ) -> None:
        self._handle = handle
        self._local = local
        self._counters = counters
        self._block_ms = block_ms
        self._read_count = read_count
        self.cursors: dict[str, StreamId] = {}  # followed user -> last entry read
        self._keys: dict[str, bytes] = {}  # followed user -> stream key
        self._users: dict[bytes, str] = {}  # stream key -> followed user
        self._replay_until: dict[str, StreamId] = {}  # user -> end of a rewound range
        self._recent = RecentEvents()
        self.joins: list[_Join] = []
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._read_task: asyncio.Future[Any] | None = None  # the XREAD in flight
        self._loop = BackgroundLoop(
            name, self._step, on_error=self._failed, on_recovered=self._recovered
        )

    @property
    def running(self) -> bool:
        """Whether the reader's task is alive."""
        return self._loop.running

    def start(self) -> None:
        """Start the reader's task unless it runs already."""
        self._loop.start()

    # -- joins -----------------------------------------------------------------------

    def join(
        self,
        connection: Connection,
        socket: StreamSocket,
        key: bytes,
        resume_from: StreamId | None,
    ) -> None:
        """Place ``socket`` in its user's stream ``key``: at ``resume_from``, else at the end."""
        cursor = self.cursors.get(connection.user_id)
        if resume_from is None and cursor is not None:
            socket.start_at(cursor)  # live, on a stream this replica already reads
            return
        if resume_from is not None:
            socket.start_at(resume_from)
        self.joins.append(_Join(connection, socket, key, resume_from))
        self._wake.set()

    async def wait_joined(self, connection: Connection, socket: StreamSocket) -> None:
        """Wait until the reader placed ``connection`` in its user's stream."""
        await socket.subscribed.wait()
        while any(join.connection is connection for join in self.joins):
            await self._wait_progress()

    async def _apply_joins(self) -> None:
        while self.joins:
            join = self.joins[0]
            if join.connection.is_open:
                try:
                    await self._apply(join)
                except UNAVAILABLE_ERRORS:
                    raise
                except Exception as error:  # noqa: BLE001 - one bad stream, not the reader
                    self._drop(join.user_id, error)
            self.joins.pop(0)
            self._progress.set()

    async def _apply(self, join: _Join) -> None:
        position = join.resume_from
        if position is None:
            cursor = self.cursors.get(join.user_id)
            position = cursor if cursor is not None else await self._latest(join.key)
        else:
            await self._mark_replay(join, position)
        self._follow(join.user_id, join.key, position)
        join.socket.start_at(position)

    async def _mark_replay(self, join: _Join, position: StreamId) -> None:
        """Count the entries after ``position`` that exist now as ``replayed`` when read."""
        latest = await self._latest(join.key)
        if position < latest:
            previous = self._replay_until.get(join.user_id, START)
            self._replay_until[join.user_id] = max(latest, previous)

    def _follow(self, user_id: str, key: bytes, position: StreamId) -> None:
        """Read ``user_id``'s stream from ``position`` on (rewinding it if needed)."""
        cursor = self.cursors.get(user_id)
        if cursor is None or position < cursor:
            self.cursors[user_id] = position
        self._keys[user_id] = key
        self._users[key] = user_id

    def _forget(self, user_id: str) -> None:
        del self.cursors[user_id]
        self._users.pop(self._keys.pop(user_id), None)
        self._replay_until.pop(user_id, None)
        self._recent.forget(user_id)
        self._progress.set()

    def _forget_idle_users(self) -> None:
        joining = {join.user_id for join in self.joins}
        for user_id in tuple(self.cursors):
            if user_id not in joining and not self._local.connection_count(user_id):
                self._forget(user_id)

    def _drop(self, user_id: str, error: BaseException) -> None:
        """Stop serving ``user_id``'s stream on this replica: it fails by itself."""
        self._counters["stream_errors"] += 1
        logger.error(
            "A user's event stream cannot be read (%s); its sockets on this replica are "
            "unregistered, the other users are not affected",
            describe_error(error),
            extra={"user_id": repr(user_id), "redis_url": self._handle.url},
        )
        if user_id in self.cursors:
            self._forget(user_id)
        for connection in self._local.connections_for(user_id):
            self._local.unregister_connection(connection)

    async def _latest(self, key: bytes) -> StreamId:
        entries = stream_entries(await self._handle.client.xrevrange(key, count=1))
        return entry_position(_text(entries[0][0])) if entries else START

    # -- reading ---------------------------------------------------------------------

    async def _step(self) -> None:
        self._wake.clear()
        await self._handle.ready()
        await self._apply_joins()
        await self._read_once()

    def _failed(self, error: BaseException, backoff: Backoff) -> None:
        self._counters["reader_errors"] += 1
        if isinstance(error, UNAVAILABLE_ERRORS):
            log_failure(logger, backoff, "Reading agent events", self._handle.url, error)
        else:  # pragma: no cover - a bug of ours; the loop goes on after a backoff
            logger.error("The Redis event reader failed; retrying", exc_info=error)

    def _recovered(self) -> None:
        logger.info(
            "Reading agent events from Redis works again", extra={"redis_url": self._handle.url}
        )

    async def _read_once(self) -> None:
        self._forget_idle_users()
        if not self.cursors:
            await self._wake.wait()
            return
        streams = {
            self._keys[user]: format_stream_id(cursor) for user, cursor in self.cursors.items()
        }
        try:
            result = await self._read_or_wake(streams)
        except UNAVAILABLE_ERRORS:
            raise
        except Exception:  # noqa: BLE001 - find the stream that fails and drop it alone
            result = await self._read_each(streams)
        if result:
            await self._dispatch(result)

    async def _read_or_wake(self, streams: dict[bytes, str]) -> Any:
        """``XREAD BLOCK`` over ``streams``, cut short (``None``) when a connection joins."""
        read = self._read_task = asyncio.ensure_future(
            self._handle.client.xread(streams, count=self._read_count, block=self._block_ms)  # type: ignore[arg-type]
        )
        wake = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait((read, wake), return_when=asyncio.FIRST_COMPLETED)
        finally:
            wake.cancel()
            await stop_task(read)  # aclose() waits for it too, should we be cancelled here
        if read.cancelled():
            return None
        return read.result()

    async def _read_each(self, streams: dict[bytes, str]) -> list[tuple[bytes, Any]]:
        """Read each stream alone (not blocking); drop the ones that fail by themselves."""
        result: list[tuple[bytes, Any]] = []
        for key, position in streams.items():
            try:
                reply: Any = await self._handle.client.xread(
                    {key: position}, count=self._read_count
                )
            except UNAVAILABLE_ERRORS:
                raise
            except Exception as error:  # noqa: BLE001 - this stream alone
                self._drop(self._users[key], error)
                continue
            result += list(reply.items() if isinstance(reply, dict) else reply or ())
        return result

    async def _dispatch(self, result: Any) -> None:
        items = result.items() if isinstance(result, dict) else result
        for raw_key, entries in items:
            user_id = self._users.get(raw_key if isinstance(raw_key, bytes) else raw_key.encode())
            if user_id is not None:
                await self._deliver(user_id, entries)
        self._progress.set()

    async def _deliver(self, user_id: str, entries: Iterable[Any]) -> None:
        for raw_id, fields in stream_entries(entries):
            try:
                event = self._entry_event(user_id, _text(raw_id), fields)
                if event is not None:
                    await self._local.send_to_user(user_id, event)
            except Exception:  # one entry never stops the reader
                self._counters["entry_errors"] += 1
                logger.exception(
                    "Skipped a stream entry that could not be delivered",
                    extra={"user_id": repr(user_id), "stream_id": _text(raw_id)},
                )

    def _entry_event(
        self, user_id: str, entry_id: str, fields: Mapping[Any, Any]
    ) -> dict[str, Any] | None:
        """The event to deliver from an entry the reader reached (``None``: skip it)."""
        position = entry_position(entry_id)
        self.cursors[user_id] = position
        self._counters["read"] += 1
        event = _decode(fields)
        if event is None or event.get("user_id") != user_id:
            self._counters["isolation_drops"] += 1
            logger.error(
                "Dropped a stream entry that is not an event of the stream's user",
                extra={"user_id": repr(user_id), "stream_id": entry_id},
            )
            return None
        if self._recent.is_repeat(user_id, event, position):
            self._counters["repeats_dropped"] += 1  # a publish retried after a lost reply
            return None
        event["stream_id"] = entry_id
        self._count_replay(user_id, position)
        return event

    def _count_replay(self, user_id: str, position: StreamId) -> None:
        replay_end = self._replay_until.get(user_id)
        if replay_end is None:
            return
        if position <= replay_end:
            self._counters["replayed"] += 1
        else:
            del self._replay_until[user_id]

    # -- progress, flush, close ------------------------------------------------------

    async def _wait_progress(self) -> None:
        self._progress.clear()
        await self._progress.wait()

    async def flush(self, user_id: str | None) -> None:
        """Wait until every entry in the followed streams (of ``user_id``) was read (while
        Redis is down: only what was already read)."""
        while self.joins:
            await self._wait_progress()
        users = [user_id] if user_id is not None else list(self.cursors)
        try:
            targets = {
                user: await self._latest(self._keys[user]) for user in users if user in self.cursors
            }
        except UNAVAILABLE_ERRORS:  # nothing more can be read until Redis returns
            targets = {}
        for user, target in targets.items():
            while user in self.cursors and self.cursors[user] < target:
                await self._wait_progress()

    async def aclose(self) -> None:
        """Stop the reader and release every waiting connection; idempotent."""
        await self._loop.aclose()
        await stop_task(self._read_task)
        for join in self.joins:
            join.socket.subscribed.set()
        self.joins.clear()
        self._progress.set()
