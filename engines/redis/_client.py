"""Building a Redis client from a URL, describing it, and explaining its failures (not API).

Only imported when the Redis backend is chosen; ``engines/__init__`` never imports it.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from .._lifecycle import Backoff

__all__ = [
    "REDIS_ERRORS",
    "connect",
    "describe",
    "describe_error",
    "log_failure",
    "stream_entries",
    "text",
]

REDIS_ERRORS: Final = (RedisError, OSError)
"""What a Redis call raises when the server is down, unreachable or refuses the command."""


def connect(client: aioredis.Redis | str, *, socket_timeout: float) -> tuple[aioredis.Redis, bool]:
    """The client to use and whether we own it (built from a URL, so we close it).

    A client built here fails fast: a short connect timeout and one quick retry of a
    refused connection (a stale pooled socket after a Redis restart), never a timeout,
    so a command that may have run is never sent twice.
    """
    if not isinstance(client, str):
        return client, False
    retry = Retry(
        ExponentialBackoff(cap=0.05, base=0.01), retries=1, supported_errors=(RedisConnectionError,)
    )
    built = aioredis.Redis.from_url(
        client,
        socket_connect_timeout=2.0,
        socket_timeout=socket_timeout,
        retry=retry,
        health_check_interval=30,
    )
    return built, True


def describe(client: aioredis.Redis) -> str:
    """Where ``client`` points, as a URL without credentials (safe to log and to show)."""
    try:
        kwargs = client.connection_pool.connection_kwargs
    except AttributeError:  # pragma: no cover - a client without a pool
        return repr(client)
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
