"""Publishing: agent events become entries of their users' Redis streams (not API).

Events wait in one queue; a single flusher sends everything queued as one call of the
``PUBLISH`` script (``XADD ... MAXLEN ~`` per event, one ``PEXPIRE`` per stream; in a
cluster, one call per key bucket), so a replica publishes over one connection however
many runs it has, and a user's events keep their order.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Final

from .._lifecycle import BackgroundLoop
from ._client import REDIS_ERRORS, ClientHandle, PoolExhaustedError, describe_error
from ._keys import bucket
from ._scripts import PUBLISH

__all__ = ["FIELD", "Publisher"]

logger = logging.getLogger(__name__)

FIELD: Final = "event"
"""The stream entry field holding the event's JSON."""

_BATCH: Final = 1000  # events per pipeline at most

_Item = tuple[str, bytes, bytes, "asyncio.Future[int]"]  # user id, key, payload, result
_FIELD_BYTES: Final = FIELD.encode()


class Publisher:
    """Appends events to users' streams, batching whatever is queued into one pipeline.

    Never raises for an event it cannot publish: it counts it (``undelivered_*``), logs
    it (once per outage at WARNING) and returns 0.
    """

    def __init__(
        self,
        handle: ClientHandle,
        key: Callable[[str], str],
        counters: dict[str, int],
        *,
        maxlen: int,
        window_ms: int,
    ) -> None:
        self._handle = handle
        self._key = key
        self._counters = counters
        self._maxlen = maxlen
        self._window_ms = window_ms
        self._queue: deque[_Item] = deque()
        self._batch: list[_Item] = []  # the batch in flight
        self._queued = asyncio.Event()
        self._failing = False
        self._script = handle.client.register_script(PUBLISH)
        self._loop = BackgroundLoop("enginescope-redis-publisher", self._flush)

    async def publish(self, user_id: str, event: Mapping[str, Any]) -> int:
        """Append ``event`` to ``user_id``'s stream; 1 if Redis took it, else 0."""
        try:
            key = self._key(user_id).encode()
            payload = json.dumps(dict(event), default=str, separators=(",", ":")).encode()
        except (TypeError, ValueError):  # UnicodeEncodeError is a ValueError
            self._counters["undelivered_unencodable"] += 1
            logger.warning(
                "Agent event (or its user id) cannot be encoded; dropped",
                extra={"user_id": repr(user_id)},
            )
            return 0
        result: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._queue.append((user_id, key, payload, result))
        self._queued.set()
        self._loop.start()
        return await result

    async def _flush(self) -> None:
        await self._queued.wait()
        self._queued.clear()
        while self._queue:
            count = min(len(self._queue), _BATCH)
            self._batch = [self._queue.popleft() for _ in range(count)]
            results = await self._send(self._batch)
            for (_, _, _, future), result in zip(self._batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
            self._batch = []

    async def _send(self, batch: list[_Item]) -> list[int]:
        try:
            results = await self._append(batch)
        except Exception as error:  # noqa: BLE001 - send_to_user never raises
            self._failed(batch, error)
            return [0] * len(batch)
        self._counters["published"] += sum(results)
        self._counters["undelivered_rejected"] += len(batch) - sum(results)
        if self._failing:
            self._failing = False
            logger.info(
                "Publishing agent events to Redis works again",
                extra={"redis_url": self._handle.url},
            )
        return results

    async def _append(self, batch: list[_Item]) -> list[int]:
        """One script call (per key bucket in a cluster); one flag per event."""
        if not self._handle.cluster:
            return await self._call(batch)
        groups: dict[int, list[int]] = {}
        for index, item in enumerate(batch):
            groups.setdefault(bucket(item[0], cluster=True), []).append(index)
        flags = await asyncio.gather(*(self._call([batch[i] for i in g]) for g in groups.values()))
        results = [0] * len(batch)
        for indexes, group_flags in zip(groups.values(), flags, strict=True):
            for index, flag in zip(indexes, group_flags, strict=True):
                results[index] = flag
        return results

    async def _call(self, batch: list[_Item]) -> list[int]:
        args: list[bytes | int] = [self._maxlen, self._window_ms, _FIELD_BYTES]
        args += [item[2] for item in batch]
        async with self._handle.turn():
            flags = await self._script(keys=[item[1] for item in batch], args=args)
        return [int(flag) for flag in flags]

    def _failed(self, batch: list[_Item], error: BaseException) -> None:
        exhausted = isinstance(error, PoolExhaustedError)
        if not exhausted and not isinstance(error, REDIS_ERRORS):  # pragma: no cover - a bug
            logger.error("Publishing agent events failed unexpectedly", exc_info=error)
        counter = "undelivered_pool_exhausted" if exhausted else "undelivered_redis_down"
        self._counters[counter] += len(batch)
        level = logging.DEBUG if self._failing else logging.WARNING
        self._failing = True
        why = "the connection pool is exhausted" if exhausted else "Redis is unreachable"
        logger.log(
            level,
            "%d agent events not delivered: %s at %s (%s)",
            len(batch),
            why,
            self._handle.url,
            describe_error(error),
            extra={"user_id": batch[0][0], "redis_url": self._handle.url},
        )

    async def aclose(self) -> None:
        """Stop the flusher; events it had not sent are counted undelivered (0)."""
        await self._loop.aclose()
        for _, _, _, future in (*self._batch, *self._queue):
            if not future.done():
                self._counters["undelivered_closed"] += 1
                future.set_result(0)
        self._batch = []
        self._queue.clear()
