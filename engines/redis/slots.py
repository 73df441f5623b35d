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
from functools import partial
from typing import Any, Final

from .._lifecycle import BackgroundLoop, Backoff, check_positive
from ..errors import (
    ExecutionEngineFactoryError,
    SlotLedgerConfigError,
    SlotLedgerPoolExhaustedError,
    SlotLedgerUnavailableError,
    UserEngineLimitError,
)
from ._client import (
    ClientHandle,
    PoolExhaustedError,
    PoolOptions,
    RedisClient,
    describe_error,
    log_failure,
)
from ._keys import bucket, encode_id, user_key
from ._scripts import ACQUIRE, RENEW

__all__ = ["RedisSlotLedger"]

logger = logging.getLogger(__name__)

_RENEW_BATCH: Final = 256  # leases renewed per script call
_Slot = tuple[str, str]  # (user_id, slot_id)


class RedisSlotLedger:
    """A :class:`~enginescope.engines.slots.SlotLedger` shared by replicas through Redis.

    ``client`` is a ``redis.asyncio.Redis`` or ``RedisCluster`` (yours: not closed here)
    or a URL (a client is built, with at most ``max_connections`` pooled connections, per
    node with ``cluster=True``, each call waiting up to ``pool_timeout_seconds`` for one,
    and closed by :meth:`aclose`). Leases last ``lease_ttl_seconds`` and are renewed every
    ``heartbeat_interval_seconds`` (default: a third of the TTL).
    """

    immediate = False
    """Every call is a round trip to Redis (see :class:`~enginescope.engines.slots.SlotLedger`)."""

    def __init__(
        self,
        client: RedisClient | str,
        *,
        lease_ttl_seconds: float = 30.0,
        heartbeat_interval_seconds: float | None = None,
        key_prefix: str = "enginescope",
        max_connections: int = 50,
        pool_timeout_seconds: float = 5.0,
        cluster: bool = False,
    ) -> None:
        setting = partial(check_positive, error=SlotLedgerConfigError)
        ttl = setting("lease_ttl_seconds", lease_ttl_seconds)
        interval = ttl / 3 if heartbeat_interval_seconds is None else heartbeat_interval_seconds
        self._interval = setting("heartbeat_interval_seconds", interval)
        setting("max_connections", max_connections, integer=True)
        setting("pool_timeout_seconds", pool_timeout_seconds)
        self._ttl_ms = max(1, round(ttl * 1000))
        self._handle = ClientHandle(
            client,
            socket_timeout=max(5.0, ttl / 2),
            pool=PoolOptions(max_connections, pool_timeout_seconds, cluster),
        )
        self._client = self._handle.client
        self._url = self._handle.url
        self._prefix = key_prefix
        self._acquire = self._client.register_script(ACQUIRE)
        self._renew = self._client.register_script(RENEW)
        self._held: dict[_Slot, int] = {}  # our leases -> the limit they were taken under
        self._unleased: set[_Slot] = set()  # held, but the lease could not be re-taken
        self._releases: set[asyncio.Task[None]] = set()
        self._backoff = Backoff(base=min(0.05, self._interval), cap=self._interval)
        self._heartbeat = BackgroundLoop(
            "enginescope-slot-heartbeat",
            self._beat,
            on_error=self._beat_failed,
            on_recovered=self._beat_recovered,
            backoff=self._backoff,
        )
        self._closed = False
        self._counters = dict.fromkeys(
            (
                "acquired",
                "refused",
                "released",
                "release_errors",
                "unavailable_errors",
                "pool_exhausted_errors",
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

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._closed

    is_closed = closed

    @property
    def cluster(self) -> bool:
        """Whether the ledger talks to a Redis Cluster."""
        return self._handle.cluster

    def key(self, user_id: str) -> str:
        """The Redis key of ``user_id``'s slot set."""
        return user_key(self._prefix, "slots", user_id, cluster=self._handle.cluster)

    # -- acquire / release -----------------------------------------------------------

    async def acquire(self, user_id: str, slot_id: str, limit: int) -> int:
        """Take a lease on a slot for ``user_id``; return the user's active count.

        Raises :class:`UserEngineLimitError` when the user holds ``limit`` live leases
        across all replicas, and :class:`SlotLedgerUnavailableError` when Redis cannot be
        reached (:class:`SlotLedgerPoolExhaustedError` when Redis is up but every pooled
        connection stayed busy). An id Redis cannot store is an ``InvalidContextError``.
        If the call is cancelled after the script may have run, the slot is released
        (shielded) before the cancellation propagates.
        """
        if self._closed:
            raise ExecutionEngineFactoryError(
                "RedisSlotLedger is closed (its factory was shut down); build a new ledger."
            )
        encode_id("user_id", user_id)
        encode_id("slot_id", slot_id)
        count = await self._run_acquire(user_id, slot_id, limit)
        if count < 0:
            self._counters["refused"] += 1
            raise UserEngineLimitError(user_id, -count, limit)
        self._held[user_id, slot_id] = limit
        self._counters["acquired"] += 1
        self._heartbeat.start()
        return count

    async def _run_acquire(self, user_id: str, slot_id: str, limit: int) -> int:
        try:
            async with self._handle.turn():
                result = await self._acquire(
                    keys=[self.key(user_id)], args=[slot_id, limit, self._ttl_ms]
                )
        except asyncio.CancelledError:
            await self._release_after_cancel(user_id, slot_id)
            raise
        except PoolExhaustedError as error:
            self._counters["pool_exhausted_errors"] += 1
            raise SlotLedgerPoolExhaustedError(user_id, self._url, str(error)) from error
        except Exception as error:  # fail closed: without Redis's answer, no engine
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
            async with self._handle.turn():
                await self._client.zrem(self.key(user_id), slot_id)
        except Exception as error:  # noqa: BLE001 - a release never raises; the lease expires
            self._release_failed(user_id, slot_id, error)

    async def release(self, user_id: str, slot_id: str) -> bool:
        """Give ``slot_id`` back; ``False`` if neither we nor Redis held it.

        A Redis failure is logged and counted, not raised: the lease is no longer renewed,
        so it expires within the TTL anyway.
        """
        was_held = self._held.pop((user_id, slot_id), None) is not None
        self._unleased.discard((user_id, slot_id))
        try:
            async with self._handle.turn():
                removed = int(await self._client.zrem(self.key(user_id), slot_id))
        except Exception as error:  # noqa: BLE001 - a release never raises; the lease expires
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

    async def _beat(self) -> None:
        if not self._backoff.failing:  # after a failure, the backoff delay was the wait
            await asyncio.sleep(self._interval)
        await self.renew_leases()

    def _beat_failed(self, error: BaseException, backoff: Backoff) -> None:
        self._counters["heartbeat_errors"] += 1
        log_failure(logger, backoff, "Renewing engine slot leases", self._url, error)

    def _beat_recovered(self) -> None:
        logger.info("Engine slot leases renewed again", extra={"redis_url": self._url})

    async def renew_leases(self) -> int:
        """Renew every lease this ledger holds now; return how many were renewed.

        Called by the heartbeat; public so a test or an operator can force a renewal.
        """
        held = dict(self._held)
        slots = list(held)
        renewed = 0
        for group in self._by_bucket(slots):
            for start in range(0, len(group), _RENEW_BATCH):
                renewed += await self._renew_batch(group[start : start + _RENEW_BATCH], held)
        self._counters["heartbeats"] += 1
        await self._forget_released_during(slots)
        return renewed

    def _by_bucket(self, slots: list[_Slot]) -> list[list[_Slot]]:
        """``slots`` grouped so that one script call touches one hash slot (in a cluster)."""
        groups: dict[int, list[_Slot]] = {}
        for slot in slots:
            groups.setdefault(bucket(slot[0], cluster=self._handle.cluster), []).append(slot)
        return list(groups.values())

    async def _renew_batch(self, batch: list[_Slot], held: dict[_Slot, int]) -> int:
        args: list[Any] = [self._ttl_ms]
        for slot in batch:
            args += [slot[1], held[slot]]
        async with self._handle.turn():
            restored, lost = await self._renew(
                keys=[self.key(user) for user, _ in batch], args=args
            )
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
        async with self._handle.turn(), self._client.pipeline(transaction=False) as pipe:
            for user_id, slot_id in stale:
                pipe.zrem(self.key(user_id), slot_id)
            await pipe.execute()

    # -- lifecycle and metrics -------------------------------------------------------

    async def aclose(self) -> None:
        """Stop the heartbeat, release held slots (best effort), close an owned client."""
        if self._closed:
            return
        self._closed = True
        await self._heartbeat.aclose()
        try:
            await self._release_all()
        finally:
            if self._releases:
                await asyncio.wait(tuple(self._releases))
            await self._handle.aclose()

    async def _release_all(self) -> None:
        held, self._held = list(self._held), {}
        self._unleased.clear()
        if not held:
            return
        try:
            async with self._handle.turn(), self._client.pipeline(transaction=False) as pipe:
                for user_id, slot_id in held:
                    pipe.zrem(self.key(user_id), slot_id)
                await pipe.execute()
        except Exception as error:  # noqa: BLE001 - a release never raises; the lease expires
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
            "heartbeat_running": self._heartbeat.running,
            "lease_ttl_seconds": self._ttl_ms / 1000,
            "heartbeat_interval_seconds": self._interval,
            "redis_url": self._url,
        }
