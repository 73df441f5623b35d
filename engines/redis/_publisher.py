"""Publishing: an agent event becomes an entry of its user's Redis stream (not API)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, Final

import redis.asyncio as aioredis

from ._client import REDIS_ERRORS, describe_error

__all__ = ["FIELD", "Publisher"]

logger = logging.getLogger(__name__)

FIELD: Final = "event"
"""The stream entry field holding the event's JSON."""


class Publisher:
    """Appends events to users' streams (``XADD ... MAXLEN ~``, then ``PEXPIRE``).

    Never raises for an event it cannot publish: it counts it (``undelivered_*``), logs
    it (once per outage at WARNING) and returns 0.
    """

    __slots__ = ("_client", "_counters", "_failing", "_key", "_maxlen", "_url", "_window_ms")

    def __init__(
        self,
        client: aioredis.Redis,
        key: Callable[[str], str],
        counters: dict[str, int],
        *,
        url: str,
        maxlen: int,
        window_ms: int,
    ) -> None:
        self._client = client
        self._key = key
        self._counters = counters
        self._url = url
        self._maxlen = maxlen
        self._window_ms = window_ms
        self._failing = False

    async def publish(self, user_id: str, event: Mapping[str, Any]) -> int:
        """Append ``event`` to ``user_id``'s stream; 1 if Redis took it, else 0."""
        try:
            payload = json.dumps(dict(event), default=str, separators=(",", ":"))
        except (TypeError, ValueError):
            self._counters["undelivered_unencodable"] += 1
            logger.warning("Agent event is not JSON-encodable; dropped", extra={"user_id": user_id})
            return 0
        return await self._append(user_id, payload)

    async def _append(self, user_id: str, payload: str) -> int:
        key = self._key(user_id)
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.xadd(key, {FIELD: payload}, maxlen=self._maxlen, approximate=True)
                pipe.pexpire(key, self._window_ms)
                await pipe.execute()
        except REDIS_ERRORS as error:
            self._failed(user_id, error)
            return 0
        if self._failing:
            self._failing = False
            logger.info(
                "Publishing agent events to Redis works again", extra={"redis_url": self._url}
            )
        self._counters["published"] += 1
        return 1

    def _failed(self, user_id: str, error: BaseException) -> None:
        self._counters["undelivered_redis_down"] += 1
        level = logging.DEBUG if self._failing else logging.WARNING
        self._failing = True
        logger.log(
            level,
            "Agent event not delivered: Redis is unreachable at %s (%s)",
            self._url,
            describe_error(error),
            extra={"user_id": user_id, "redis_url": self._url},
        )
