"""Building a Redis client from a URL, describing it, and explaining its failures (not API).

Only imported when the Redis backend is chosen; ``engines/__init__`` never imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as aioredis
from redis.asyncio import BlockingConnectionPool, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import (
    ClusterError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .._lifecycle import Backoff

__all__ = [
    "REDIS_ERRORS",
    "UNAVAILABLE_ERRORS",
    "ClientHandle",
    "PoolExhaustedError",
    "PoolOptions",
    "RedisClient",
    "describe",
    "describe_error",
    "log_failure",
    "stream_entries",
    "text",
]

REDIS_ERRORS: Final = (RedisError, RedisClusterException, OSError)
"""What a Redis call raises when the server is down, unreachable or refuses the command."""

UNAVAILABLE_ERRORS: Final = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    ClusterError,
    TryAgainError,
    ReadOnlyError,
    RedisClusterException,
)
"""What a Redis call raises when Redis (or the node owning a slot) cannot serve it now;
any other error is about the command or its key (a key of the wrong type, say)."""

RedisClient = aioredis.Redis | RedisCluster
"""A client of one Redis server or of a Redis Cluster."""


class PoolExhaustedError(RedisConnectionError):
    """Every pooled connection stayed busy for ``timeout`` seconds: Redis is up, we are
    asking too much of it at once."""

    def __init__(self, size: int, timeout: float | None) -> None:
        self.size = size
        self.timeout = timeout
        super().__init__(
            f"all {size} pooled connections stayed busy for {timeout}s "
            "(the connection pool is exhausted)"
        )


class _WaitingPool(BlockingConnectionPool):
    """A bounded pool that waits ``timeout`` for a free connection, then says it is full."""

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        except RedisConnectionError as error:
            if isinstance(error.__cause__, asyncio.TimeoutError):
                raise PoolExhaustedError(self.max_connections, self.timeout) from error
            raise


class _Gate:
    """At most ``size`` of our calls at once; a call waits ``timeout`` for its turn.

    Redis Cluster clients keep a pool per node that refuses, instead of waiting, past its
    size; the gate makes them wait like :class:`_WaitingPool`.
    """

    __slots__ = ("_free", "_size", "_timeout")

    def __init__(self, size: int, timeout: float) -> None:
        self._free = asyncio.Semaphore(size)
        self._size = size
        self._timeout = timeout

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self._timeout):
                await self._free.acquire()
        except TimeoutError:
            raise PoolExhaustedError(self._size, self._timeout) from None
        try:
            yield
        finally:
            self._free.release()


@dataclass(frozen=True)
class PoolOptions:
    """How a client built from a URL connects: ``max_connections`` at most (per node in a
    cluster), each call waiting up to ``timeout_seconds`` for a free one."""

    max_connections: int = 50
    timeout_seconds: float = 5.0
    cluster: bool = False


class ClientHandle:
    """The Redis client a component uses, where it points, and whether we close it."""

    __slots__ = ("_gate", "_ready", "_ready_lock", "client", "cluster", "owned", "url")

    def __init__(self, client: RedisClient | str, *, socket_timeout: float, pool: PoolOptions):
        if isinstance(client, str):
            self.client: RedisClient = _build(client, socket_timeout, pool)
            self.owned = True
        else:
            self.client, self.owned = client, False
        self.cluster = isinstance(self.client, RedisCluster)
        self.url = describe(self.client)
        self._gate = _Gate(pool.max_connections, pool.timeout_seconds) if self.cluster else None
        self._ready = not self.cluster
        self._ready_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<ClientHandle url={self.url!r} cluster={self.cluster} owned={self.owned}>"

    async def ready(self) -> None:
        """Learn a cluster's topology once, before the first command: redis-py's cluster
        client, first used by several commands at once, can hand one of them a
        connection another is still opening."""
        if self._ready:
            return
        async with self._ready_lock:
            if not self._ready and isinstance(self.client, RedisCluster):
                await self.client.initialize()
            self._ready = True

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Wait for a free connection (a cluster's gate; a plain client's pool waits itself)."""
        if self._gate is None:
            yield
            return
        await self.ready()
        async with self._gate.turn():
            yield

    async def aclose(self) -> None:
        """Close the client if we built it."""
        if self.owned:
            await self.client.aclose()


def _retry() -> Retry:
    """One quick retry of a refused connection (a stale pooled socket after a restart)."""
    return Retry(
        ExponentialBackoff(cap=0.05, base=0.01), retries=1, supported_errors=(RedisConnectionError,)
    )


def _build(url: str, socket_timeout: float, pool: PoolOptions) -> RedisClient:
    """A client that fails fast: a short connect timeout and one quick retry of a refused
    connection, never of a timeout (a command that may have run is not sent twice)."""
    options: dict[str, Any] = {
        "socket_connect_timeout": 2.0,
        "socket_timeout": socket_timeout,
        "retry": _retry(),
        "health_check_interval": 30,
    }
    if pool.cluster:  # without full coverage, healthy primaries serve while one fails over
        return RedisCluster.from_url(
            url, max_connections=pool.max_connections, require_full_coverage=False, **options
        )
    connection_pool = _WaitingPool.from_url(
        url, max_connections=pool.max_connections, timeout=pool.timeout_seconds, **options
    )
    return aioredis.Redis.from_pool(connection_pool)


def describe(client: RedisClient) -> str:
    """Where ``client`` points, as a URL without credentials (safe to log and to show)."""
    if isinstance(client, RedisCluster):
        seeds = [f"{node.host}:{node.port}" for node in client.nodes_manager.startup_nodes.values()]
        return f"redis+cluster://{seeds[0] if seeds else '?'}"
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    host = kwargs.get("host", "localhost")
    port = kwargs.get("port", 6379)
    return f"redis://{host}:{port}/{kwargs.get('db', 0)}"


def describe_error(error: BaseException) -> str:
    """``Type: message`` of ``error``, for a one-line explanation."""
    message = str(error).strip()
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def text(value: object) -> str:
    """A Redis reply as ``str``, whether or not the client decodes responses."""
    return value.decode() if isinstance(value, bytes) else str(value)


def stream_entries(reply: object) -> list[tuple[Any, Any]]:
    """The ``(id, fields)`` pairs of an ``XRANGE``-style reply (``None`` reads as empty)."""
    if not isinstance(reply, list | tuple):
        return []
    return [(entry[0], entry[1] or {}) for entry in reply]


def log_failure(
    logger: logging.Logger, backoff: Backoff, what: str, url: str, error: BaseException
) -> None:
    """Log the first failure of a run at WARNING and the repeats at DEBUG."""
    level = logging.DEBUG if backoff.failing else logging.WARNING
    logger.log(
        level,
        "%s failed: Redis is unreachable at %s (%s); retrying with backoff",
        what,
        url,
        describe_error(error),
        extra={"redis_url": url},
    )
