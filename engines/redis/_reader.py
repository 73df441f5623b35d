"""The reader: one task per replica follows its users' streams and feeds the local sockets.

Not API. A connection *joins* its user's stream at a position (the ``resume_from`` it was
given, or the stream's end); the reader applies joins between reads, rewinding a user's
cursor when a resuming socket needs older entries (the sockets skip what they already
have), and stops following a user nobody on this replica holds.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import redis.asyncio as aioredis

from .._lifecycle import BackgroundLoop, Backoff, stop_task
from ..bridge import AgentWebSocketBridge, Connection
from ._client import REDIS_ERRORS, log_failure, stream_entries, text
from ._publisher import FIELD
from ._socket import StreamSocket
from ._stream_ids import START, StreamId, format_stream_id, parse_stream_id

__all__ = ["StreamReader"]

logger = logging.getLogger(__name__)


def _decode(fields: Mapping[Any, Any]) -> dict[str, Any] | None:
    """The event stored in a stream entry, or ``None`` if it is not a JSON object."""
    raw = fields.get(FIELD.encode(), fields.get(FIELD))
    try:
        event = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


class _Join:
    """A connection waiting for the reader to place it in its user's stream."""

    __slots__ = ("connection", "resume_from", "socket", "user_id")

    def __init__(
        self, connection: Connection, socket: StreamSocket, resume_from: StreamId | None
    ) -> None:
        self.connection = connection
        self.socket = socket
        self.user_id = connection.user_id
        self.resume_from = resume_from


class StreamReader:
    """Follows the streams of the users connected to this replica (``XREAD BLOCK``)."""

    def __init__(
        self,
        client: aioredis.Redis,
        local: AgentWebSocketBridge,
        key: Callable[[str], str],
        counters: dict[str, int],
        *,
        url: str,
        block_ms: int,
        read_count: int,
    ) -> None:
        self._client = client
        self._local = local
        self._key = key
        self._counters = counters
        self._url = url
        self._block_ms = block_ms
        self._read_count = read_count
        self.cursors: dict[str, StreamId] = {}  # followed user -> last entry read
        self._replay_until: dict[str, StreamId] = {}  # user -> end of a rewound range
        self.joins: list[_Join] = []
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._read_task: asyncio.Future[Any] | None = None  # the XREAD in flight
        self._loop = BackgroundLoop(
            "enginescope-redis-reader",
            self._step,
            errors=REDIS_ERRORS,
            on_error=self._failed,
            on_recovered=self._recovered,
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
        self, connection: Connection, socket: StreamSocket, resume_from: StreamId | None
    ) -> None:
        """Place ``socket`` in its user's stream: at ``resume_from``, else at the end."""
        cursor = self.cursors.get(connection.user_id)
        if resume_from is None and cursor is not None:
            socket.start_at(cursor)  # live, on a stream this replica already reads
            return
        if resume_from is not None:
            socket.start_at(resume_from)
        self.joins.append(_Join(connection, socket, resume_from))
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
                position = await self._join_position(join)
                if join.resume_from is not None:
                    await self._mark_replay(join.user_id, position)
                self._follow(join.user_id, position)
                join.socket.start_at(position)
            self.joins.pop(0)
            self._progress.set()

    async def _join_position(self, join: _Join) -> StreamId:
        if join.resume_from is not None:
            return join.resume_from
        cursor = self.cursors.get(join.user_id)
        return cursor if cursor is not None else await self.latest(join.user_id)

    async def _mark_replay(self, user_id: str, position: StreamId) -> None:
        """Count the entries after ``position`` that exist now as ``replayed`` when read."""
        latest = await self.latest(user_id)
        if position < latest:
            self._replay_until[user_id] = max(latest, self._replay_until.get(user_id, START))

    def _follow(self, user_id: str, position: StreamId) -> None:
        """Read ``user_id``'s stream from ``position`` on (rewinding it if needed)."""
        cursor = self.cursors.get(user_id)
        if cursor is None or position < cursor:
            self.cursors[user_id] = position

    async def latest(self, user_id: str) -> StreamId:
        """The id of the newest entry of ``user_id``'s stream (``0-0`` if it is empty)."""
        entries = stream_entries(await self._client.xrevrange(self._key(user_id), count=1))
        return parse_stream_id(text(entries[0][0])) if entries else START

    def _forget_idle_users(self) -> None:
        joining = {join.user_id for join in self.joins}
        for user_id in tuple(self.cursors):
            if user_id not in joining and not self._local.connection_count(user_id):
                del self.cursors[user_id]
                self._replay_until.pop(user_id, None)
                self._progress.set()

    # -- reading ---------------------------------------------------------------------

    async def _step(self) -> None:
        self._wake.clear()
        await self._apply_joins()
        await self._read_once()

    def _failed(self, error: BaseException, backoff: Backoff) -> None:
        self._counters["reader_errors"] += 1
        log_failure(logger, backoff, "Reading agent events", self._url, error)

    def _recovered(self) -> None:
        logger.info("Reading agent events from Redis works again", extra={"redis_url": self._url})

    async def _read_once(self) -> None:
        self._forget_idle_users()
        if not self.cursors:
            await self._wake.wait()
            return
        users = {self._key(user_id): user_id for user_id in self.cursors}
        streams = {key: format_stream_id(self.cursors[user]) for key, user in users.items()}
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
            await stop_task(read)  # aclose() waits for it too, should we be cancelled here
        if read.cancelled():
            return None
        return read.result()

    async def _dispatch(self, users: Mapping[str, str], result: Any) -> None:
        items = result.items() if isinstance(result, dict) else result
        for raw_key, entries in items:
            user_id = users.get(text(raw_key))
            if user_id is not None and user_id in self.cursors:
                await self._deliver(user_id, entries)
        self._progress.set()

    async def _deliver(self, user_id: str, entries: Iterable[Any]) -> None:
        for raw_id, fields in stream_entries(entries):
            entry_id = text(raw_id)
            position = parse_stream_id(entry_id)
            self.cursors[user_id] = position
            self._counters["read"] += 1
            event = _decode(fields)
            if event is None or event.get("user_id") != user_id:
                self._counters["isolation_drops"] += 1
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
            targets = {user: await self.latest(user) for user in users if user in self.cursors}
        except REDIS_ERRORS:  # nothing more can be read until Redis returns
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
