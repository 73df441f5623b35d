"""Per-user engine slots shared by every replica: leases in Redis.

Each user has a sorted set ``{prefix}:slots:{user_id}``: one member per engine slot, scored
by the lease's expiry in milliseconds of the Redis server's clock (``TIME`` inside Lua, so
the replicas' own clocks never matter). One Lua script drops expired leases, checks the
count against the limit and adds the new lease, atomically, so exactly ``limit`` engines
are admitted however many replicas ask at once.

A heartbeat renews every lease this ledger holds (one script call per interval, O(held)),
so live engines keep their slots while a crashed replica's slots expire within the TTL.
When Redis is unreachable ``acquire`` fails closed with :class:`SlotLedgerUnavailableError`:
an engine is refused rather than admitted past the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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
)
from .errors import (
    ExecutionEngineFactoryError,
    SlotLedgerUnavailableError,
    UserEngineLimitError,
)

__all__ = ["RedisSlotLedger", "SlotLedgerUnavailableError"]

logger = logging.getLogger(__name__)

_RENEW_BATCH: Final = 256  # leases renewed per script call

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

_EXPIRE_WITH_NEWEST = """
local function expire_with_newest(key)
  local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if newest[2] then
    redis.call('PEXPIREAT', key, math.floor(tonumber(newest[2])))
  end
end
"""

# KEYS[1] the user's slot set; ARGV: slot id, limit, lease ttl (ms).
# Returns the user's count with this slot, or minus the count when the user is full.
# Acquiring a slot already held renews it (a retried call never takes two slots).
_ACQUIRE: Final = (
    _NOW
    + _EXPIRE_WITH_NEWEST
    + """
local key = KEYS[1]
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
local held = redis.call('ZCARD', key)
if not redis.call('ZSCORE', key, ARGV[1]) then
  if held >= tonumber(ARGV[2]) then
    return -held
  end
  held = held + 1
end
redis.call('ZADD', key, now + tonumber(ARGV[3]), ARGV[1])
expire_with_newest(key)
return held
"""
)

# KEYS: one slot set per lease; ARGV[1] lease ttl (ms), then (slot id, limit) per key.
# Renews each lease; re-takes a lease that vanished (Redis restarted empty, or the lease
# expired during an outage) while the user has room; reports the ones it could not re-take.
_RENEW: Final = (
    _NOW
    + _EXPIRE_WITH_NEWEST
    + """
local expiry = now + tonumber(ARGV[1])
local restored, lost = 0, {}
for i, key in ipairs(KEYS) do
  local slot, limit = ARGV[2 * i], tonumber(ARGV[2 * i + 1])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZSCORE', key, slot) then
    redis.call('ZADD', key, expiry, slot)
  elseif redis.call('ZCARD', key) < limit then
    redis.call('ZADD', key, expiry, slot)
    restored = restored + 1
  else
    lost[#lost + 1] = i
  end
  expire_with_newest(key)
end
return {restored, lost}
"""
)

_Slot = tuple[str, str]  # (user_id, slot_id)


def _check_positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ExecutionEngineFactoryError(
            f"RedisSlotLedger {name} must be a positive number, got {value!r}; pass {name} > 0."
        )
    return float(value)


class RedisSlotLedger:
    """A :class:`~enginescope.engines.slots.SlotLedger` shared by replicas through Redis.

    ``client`` is a ``redis.asyncio.Redis`` (yours: not closed here) or a URL (a client is
    built and closed by :meth:`aclose`). Leases last ``lease_ttl_seconds`` and are renewed
    every ``heartbeat_interval_seconds`` (default: a third of the TTL).
    """

    immediate = False
    """Every call is a round trip to Redis (see :class:`~enginescope.engines.slots.SlotLedger`)."""

    def __init__(
        self,
        client: aioredis.Redis | str,
        *,
        lease_ttl_seconds: float = 30.0,
        heartbeat_interval_seconds: float | None = None,
        key_prefix: str = "enginescope",
    ) -> None:
        ttl = _check_positive("lease_ttl_seconds", lease_ttl_seconds)
        interval = ttl / 3 if heartbeat_interval_seconds is None else heartbeat_interval_seconds
        self._interval = _check_positive("heartbeat_interval_seconds", interval)
        self._ttl_ms = max(1, round(ttl * 1000))
        self._client, self._owns_client = connect(client, socket_timeout=max(5.0, ttl / 2))
        self._url = describe(self._client)
        self._prefix = key_prefix
        self._acquire = self._client.register_script(_ACQUIRE)
        self._renew = self._client.register_script(_RENEW)
        self._held: dict[_Slot, int] = {}  # our leases -> the limit they were taken under
        self._unleased: set[_Slot] = set()  # held, but the lease could not be re-taken
        self._releases: set[asyncio.Task[None]] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        self._closed = False
        self._counters = dict.fromkeys(
            (
                "acquired",
                "refused",
                "released",
                "release_errors",
                "unavailable_errors",
                "heartbeats",
                "heartbeat_errors",
                "leases_restored",
                "leases_lost",
            ),
            0,
        )

    def __repr__(self) -> str:
        return (
            f"<RedisSlotLedger url={self._url!r} held={len(self._held)} "
            f"ttl={self._ttl_ms / 1000:g}s closed={self._closed}>"
        )

    @property
    def url(self) -> str:
        """Where the ledger's Redis is (without credentials)."""
        return self._url

    def key(self, user_id: str) -> str:
        """The Redis key of ``user_id``'s slot set."""
        return f"{self._prefix}:slots:{user_id}"

    # -- acquire / release -----------------------------------------------------------

    async def acquire(self, user_id: str, slot_id: str, limit: int) -> int:
        """Take a lease on a slot for ``user_id``; return the user's active count.

        Raises :class:`UserEngineLimitError` when the user holds ``limit`` live leases
        across all replicas, and :class:`SlotLedgerUnavailableError` when Redis cannot be
        reached. If the call is cancelled after the script may have run, the slot is
        released (shielded) before the cancellation propagates.
        """
        if self._closed:
            raise ExecutionEngineFactoryError(
                "RedisSlotLedger is closed (its factory was shut down); build a new ledger."
            )
        count = await self._run_acquire(user_id, slot_id, limit)
        if count < 0:
            self._counters["refused"] += 1
            raise UserEngineLimitError(user_id, -count, limit)
        self._held[user_id, slot_id] = limit
        self._counters["acquired"] += 1
        self._ensure_heartbeat()
        return count

    async def _run_acquire(self, user_id: str, slot_id: str, limit: int) -> int:
        try:
            result = await self._acquire(
                keys=[self.key(user_id)], args=[slot_id, limit, self._ttl_ms]
            )
        except asyncio.CancelledError:
            await self._release_after_cancel(user_id, slot_id)
            raise
        except REDIS_ERRORS as error:
            self._counters["unavailable_errors"] += 1
            raise SlotLedgerUnavailableError(user_id, self._url, describe_error(error)) from error
        return int(result)

    async def _release_after_cancel(self, user_id: str, slot_id: str) -> None:
        """Give back a slot the cancelled script may have taken; survives a second cancel."""
        task = asyncio.get_running_loop().create_task(self._release_quietly(user_id, slot_id))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)
        with contextlib.suppress(asyncio.CancelledError):  # it goes on; aclose() waits
            await asyncio.shield(task)

    async def _release_quietly(self, user_id: str, slot_id: str) -> None:
        try:
            await self._client.zrem(self.key(user_id), slot_id)
        except REDIS_ERRORS as error:
            self._release_failed(user_id, slot_id, error)

    async def release(self, user_id: str, slot_id: str) -> bool:
        """Give ``slot_id`` back; ``False`` if neither we nor Redis held it.

        A Redis failure is logged and counted, not raised: the lease is no longer renewed,
        so it expires within the TTL anyway.
        """
        was_held = self._held.pop((user_id, slot_id), None) is not None
        self._unleased.discard((user_id, slot_id))
        try:
            removed = int(await self._client.zrem(self.key(user_id), slot_id))
        except REDIS_ERRORS as error:
            self._release_failed(user_id, slot_id, error)
            return was_held
        if was_held or removed:
            self._counters["released"] += 1
        return was_held or removed > 0

    def _release_failed(self, user_id: str, slot_id: str, error: BaseException) -> None:
        self._counters["release_errors"] += 1
        logger.warning(
            "Could not release an engine slot in Redis at %s (%s); its lease expires within %.3gs",
            self._url,
            describe_error(error),
            self._ttl_ms / 1000,
            extra={"user_id": user_id, "slot_id": slot_id, "redis_url": self._url},
        )

    # -- the heartbeat ---------------------------------------------------------------

    def _ensure_heartbeat(self) -> None:
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.get_running_loop().create_task(
                self._beat_forever(), name="enginescope-slot-heartbeat"
            )

    async def _beat_forever(self) -> None:
        backoff = Backoff(base=min(0.05, self._interval), cap=self._interval)
        delay = self._interval  # leases were just taken: the first renewal is one beat away
        while not self._closed:
            await asyncio.sleep(delay)
            try:
                await self.renew_leases()
            except REDIS_ERRORS as error:
                self._counters["heartbeat_errors"] += 1
                log_failure(logger, backoff, "Renewing engine slot leases", self._url, error)
                delay = backoff.failed()
                continue
            if backoff.succeeded():
                logger.info("Engine slot leases renewed again", extra={"redis_url": self._url})
            delay = self._interval

    async def renew_leases(self) -> int:
        """Renew every lease this ledger holds now; return how many were renewed.

        Called by the heartbeat; public so a test or an operator can force a renewal.
        """
        held = dict(self._held)
        slots = list(held)
        renewed = 0
        for start in range(0, len(slots), _RENEW_BATCH):
            renewed += await self._renew_batch(slots[start : start + _RENEW_BATCH], held)
        self._counters["heartbeats"] += 1
        await self._forget_released_during(slots)
        return renewed

    async def _renew_batch(self, batch: list[_Slot], held: dict[_Slot, int]) -> int:
        args: list[Any] = [self._ttl_ms]
        for slot in batch:
            args += [slot[1], held[slot]]
        restored, lost = await self._renew(keys=[self.key(user) for user, _ in batch], args=args)
        lost_slots = {batch[int(index) - 1] for index in lost}
        self._counters["leases_restored"] += int(restored)
        self._counters["leases_lost"] += len(lost_slots - self._unleased)
        self._unleased = (self._unleased - set(batch)) | lost_slots
        if lost_slots:
            logger.warning(
                "%d live engine slots lost their Redis lease and the users are full again; "
                "they are retried on the next heartbeat",
                len(lost_slots),
                extra={"redis_url": self._url},
            )
        return len(batch) - len(lost_slots)

    async def _forget_released_during(self, slots: list[_Slot]) -> None:
        """A slot released while its renewal was in flight may have been re-taken: drop it."""
        stale = [slot for slot in slots if slot not in self._held]
        if not stale:
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for user_id, slot_id in stale:
                pipe.zrem(self.key(user_id), slot_id)
            await pipe.execute()

    # -- lifecycle and metrics -------------------------------------------------------

    async def aclose(self) -> None:
        """Stop the heartbeat, release held slots (best effort), close an owned client."""
        if self._closed:
            return
        self._closed = True
        heartbeat, self._heartbeat = self._heartbeat, None
        await stop_task(heartbeat)
        try:
            await self._release_all()
        finally:
            if self._releases:
                await asyncio.wait(tuple(self._releases))
            if self._owns_client:
                await self._client.aclose()

    async def _release_all(self) -> None:
        held, self._held = list(self._held), {}
        self._unleased.clear()
        if not held:
            return
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for user_id, slot_id in held:
                    pipe.zrem(self.key(user_id), slot_id)
                await pipe.execute()
        except REDIS_ERRORS as error:
            self._counters["release_errors"] += len(held)
            logger.warning(
                "Could not release %d engine slots in Redis at %s on close (%s); their leases "
                "expire within %.3gs",
                len(held),
                self._url,
                describe_error(error),
                self._ttl_ms / 1000,
                extra={"redis_url": self._url},
            )
        else:
            self._counters["released"] += len(held)

    def get_metrics(self) -> dict[str, Any]:
        """Counters since construction and the current gauges."""
        return {
            **self._counters,
            "held_slots": len(self._held),
            "unleased_slots": len(self._unleased),
            "heartbeat_running": self._heartbeat is not None and not self._heartbeat.done(),
            "lease_ttl_seconds": self._ttl_ms / 1000,
            "heartbeat_interval_seconds": self._interval,
            "redis_url": self._url,
        }
