"""The Redis bridge: a user's events travel through Redis to whichever replica holds the socket.

``send_to_user`` appends the event to the user's stream ``{prefix}:events:{user_id}``
(``XADD ... MAXLEN ~ stream_maxlen``; the key expires ``replay_window_seconds`` after the
user's last event); events queued while a call is in flight go out together as one
script call. Every replica runs one reader task (one per key bucket in a Redis Cluster)
that follows, with ``XREAD BLOCK``, the streams of the users connected to it and hands
each entry to a local :class:`~enginescope.engines.bridge.AgentWebSocketBridge`, which
owns the sockets (one bounded queue and sender per socket, as in one process). An entry
that repeats an earlier one (a publish retried after a lost reply) is dropped.

Resume. Every event delivered by this bridge carries one extra key, ``stream_id``: the
Redis stream entry id (``"1718000000000-0"``), increasing per user. A client that
reconnects passes the last one it received::

    connection = await bridge.connect(user_id, websocket, resume_from=last_stream_id)

and receives every event after it (while the stream still holds it: within the replay
window and the last ``stream_maxlen`` events), then live events, each exactly once and in
order. Without it, the socket receives the events published after it subscribed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from functools import partial
from typing import Any, Final

from .._lifecycle import check_positive
from ..bridge import AgentWebSocketBridge, Connection, SocketLike
from ..errors import BridgeClosedError, BridgeConfigError, WebSocketBridgeError
from ._client import ClientHandle, PoolOptions, RedisClient
from ._keys import BUCKETS, bucket, encode_id, user_key
from ._publisher import Publisher
from ._reader import StreamReader
from ._socket import StreamSocket
from ._stream_ids import parse_stream_id

__all__ = ["RedisWebSocketBridge"]

_COUNTERS: Final = (
    "published",
    "undelivered_redis_down",
    "undelivered_pool_exhausted",
    "undelivered_rejected",
    "undelivered_unencodable",
    "undelivered_closed",
    "read",
    "delivered",
    "replayed",
    "duplicates_skipped",
    "repeats_dropped",
    "isolation_drops",
    "stream_errors",
    "entry_errors",
    "reader_errors",
)
_setting = partial(check_positive, error=BridgeConfigError)


class RedisWebSocketBridge:
    """A :class:`~enginescope.engines.bridge.WebSocketBridge` shared by replicas via Redis.

    ``client`` is a ``redis.asyncio.Redis`` or ``RedisCluster`` (yours: not closed here)
    or a URL (a client is built, with at most ``max_connections`` pooled connections, per
    node with ``cluster=True``, each call waiting up to ``pool_timeout_seconds`` for one,
    and closed by :meth:`aclose`). Its socket timeout must exceed ``block_ms``. ``local``
    holds this replica's sockets (a fresh :class:`AgentWebSocketBridge` by default, closed
    with this bridge; one you pass is left open).

    A replica publishes over one connection (events queued meanwhile go out as one
    pipeline) and reads over one (one per key bucket in a cluster).
    """

    def __init__(
        self,
        client: RedisClient | str,
        *,
        local: AgentWebSocketBridge | None = None,
        stream_maxlen: int = 1000,
        replay_window_seconds: float = 60.0,
        key_prefix: str = "enginescope",
        block_ms: int = 1000,
        read_count: int = 256,
        max_connections: int = 50,
        pool_timeout_seconds: float = 5.0,
        cluster: bool = False,
    ) -> None:
        for field, value in (
            ("stream_maxlen", stream_maxlen),
            ("block_ms", block_ms),
            ("read_count", read_count),
            ("max_connections", max_connections),
        ):
            _setting(field, value, integer=True)
        _setting("replay_window_seconds", replay_window_seconds)
        _setting("pool_timeout_seconds", pool_timeout_seconds)
        self._handle = ClientHandle(
            client,
            socket_timeout=block_ms / 1000 + 5.0,
            pool=PoolOptions(max_connections, pool_timeout_seconds, cluster),
        )
        self._url = self._handle.url
        self._owns_local = local is None
        self._local = local if local is not None else AgentWebSocketBridge()
        self._prefix = key_prefix
        self._closed = False
        self._counters = dict.fromkeys(_COUNTERS, 0)
        self._publisher = Publisher(
            self._handle,
            self.key,
            self._counters,
            maxlen=stream_maxlen,
            window_ms=max(1, round(replay_window_seconds * 1000)),
        )
        self._readers = [
            StreamReader(
                self._handle,
                self._local,
                self._counters,
                name=f"enginescope-redis-reader-{index}",
                block_ms=block_ms,
                read_count=read_count,
            )
            for index in range(BUCKETS if self._handle.cluster else 1)
        ]

    def __repr__(self) -> str:
        return (
            f"<RedisWebSocketBridge url={self._url!r} "
            f"followed_users={self._followed_users()} "
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
    def closed(self) -> bool:
        """Whether :meth:`aclose` (or :meth:`close`) was called."""
        return self._closed

    is_closed = closed

    @property
    def cluster(self) -> bool:
        """Whether the bridge talks to a Redis Cluster."""
        return self._handle.cluster

    def key(self, user_id: str) -> str:
        """The Redis key of ``user_id``'s event stream."""
        return user_key(self._prefix, "events", user_id, cluster=self._handle.cluster)

    def _reader_for(self, user_id: str) -> StreamReader:
        return self._readers[bucket(user_id, cluster=self._handle.cluster)]

    def _followed_users(self) -> int:
        return sum(len(reader.cursors) for reader in self._readers)

    # -- publishing ------------------------------------------------------------------

    async def send_to_user(self, user_id: str, event: Mapping[str, Any]) -> int:
        """Publish ``event`` to ``user_id``'s stream; 1 if Redis took it, else 0.

        Never raises: an event Redis could not take is counted (``undelivered_*``) and
        logged, and the agent goes on.
        """
        if self._closed:
            self._counters["undelivered_closed"] += 1
            return 0
        return await self._publisher.publish(user_id, event)

    # -- connections -----------------------------------------------------------------

    def register_connection(
        self, user_id: str, socket: SocketLike, *, resume_from: str | None = None
    ) -> Connection:
        """Register ``socket`` for ``user_id`` on this replica and follow the user's stream.

        ``resume_from`` is the ``stream_id`` of the last event the client received.
        Returns at once; the subscription takes effect when the reader has placed it (see
        :meth:`connect`).
        """
        if self._closed:
            raise BridgeClosedError
        position = None if resume_from is None else parse_stream_id(resume_from)
        key = encode_id("user_id", self.key(user_id))
        stream_socket = StreamSocket(socket, self._counters)
        connection = self._local.register_connection(user_id, stream_socket)
        reader = self._reader_for(user_id)
        reader.start()
        reader.join(connection, stream_socket, key, position)
        return connection

    async def connect(
        self, user_id: str, socket: SocketLike, *, resume_from: str | None = None
    ) -> Connection:
        """:meth:`register_connection`, then wait until the subscription is in effect.

        Every event published after this returns reaches the socket. While Redis is down
        it waits for Redis; bound it with ``asyncio.timeout`` if you must.
        """
        connection = self.register_connection(user_id, socket, resume_from=resume_from)
        try:
            await self.wait_subscribed(connection)
        except BaseException:
            self.unregister_connection(connection)
            raise
        return connection

    async def wait_subscribed(self, connection: Connection) -> None:
        """Wait until ``connection`` follows its user's stream (or was closed)."""
        socket = connection.socket
        if not isinstance(socket, StreamSocket):
            raise WebSocketBridgeError(
                f"{connection!r} was not registered through this RedisWebSocketBridge; "
                "register it with bridge.register_connection() or bridge.connect()."
            )
        reader = self._reader_for(connection.user_id)
        joined = asyncio.ensure_future(reader.wait_joined(connection, socket))
        closed = asyncio.ensure_future(connection.wait_closed())
        try:
            await asyncio.wait((joined, closed), return_when=asyncio.FIRST_COMPLETED)
        finally:
            joined.cancel()
            closed.cancel()

    def unregister_connection(self, connection: Connection | None) -> None:
        """Unregister ``connection``; the reader stops following a user nobody holds."""
        self._local.unregister_connection(connection)

    def connection_count(self, user_id: str | None = None) -> int:
        """Open connections on this replica of ``user_id``, or of everybody."""
        return self._local.connection_count(user_id)

    # -- lifecycle and metrics -------------------------------------------------------

    async def start(self) -> None:
        """Start the reader task; idempotent (registering a connection also starts it)."""
        if self._closed:
            raise BridgeClosedError
        self._readers[0].start()

    async def flush(self, user_id: str | None = None) -> None:
        """Wait until every event published so far (to ``user_id``, or to the users this
        replica follows) was read and sent to the local sockets (while Redis is down: only
        what was already read)."""
        readers = self._readers if user_id is None else [self._reader_for(user_id)]
        for reader in readers:
            await reader.flush(user_id)
        await self._local.flush(user_id)

    async def aclose(self) -> None:
        """Stop the reader, close the owned local bridge and client; idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._publisher.aclose()
        for reader in self._readers:
            await reader.aclose()
        try:
            await self._close_connections()
        finally:
            await self._handle.aclose()

    close = aclose
    """The same as :meth:`aclose`."""

    async def _close_connections(self) -> None:
        if self._owns_local:
            await self._local.aclose()
            return
        for reader in self._readers:
            for user_id in tuple(reader.cursors):
                for connection in self._local.connections_for(user_id):
                    if isinstance(connection.socket, StreamSocket):
                        self._local.unregister_connection(connection)
            reader.cursors.clear()

    def get_metrics(self) -> dict[str, Any]:
        """The local bridge's metrics (same keys as :class:`AgentWebSocketBridge`), plus
        this bridge's counters since construction and its gauges.

        ``delivered`` counts events the sockets accepted; the local ``events_sent`` also
        counts the duplicates a resuming socket skipped (``duplicates_skipped``).
        """
        return {
            **self._local.get_metrics(),
            **self._counters,
            "followed_users": self._followed_users(),
            "pending_joins": sum(len(reader.joins) for reader in self._readers),
            "reader_running": any(reader.running for reader in self._readers),
            "redis_url": self._url,
        }
