"""RedisSlotLedger: per-user engine slots as leases shared by replicas."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from enginescope.engines import (
    ExecutionEngineFactoryError,
    SlotLedger,
    UserEngineLimitError,
    UserExecutionContext,
)
from enginescope.engines.errors import SlotLedgerUnavailableError
from enginescope.engines.redis import RedisSlotLedger

if TYPE_CHECKING:
    from conftest import RedisServer, ReplicaMaker

pytestmark = [pytest.mark.redis]

LedgerMaker = Callable[..., RedisSlotLedger]
ContextMaker = Callable[..., UserExecutionContext]


@pytest_asyncio.fixture
async def make_ledger(redis_url: str) -> AsyncIterator[LedgerMaker]:
    """Ledgers on this test's Redis, closed at the end."""
    ledgers: list[RedisSlotLedger] = []

    def make(**options: object) -> RedisSlotLedger:
        ledger = RedisSlotLedger(redis_url, **options)  # type: ignore[arg-type]
        ledgers.append(ledger)
        return ledger

    yield make
    for ledger in ledgers:
        await ledger.aclose()


async def _members(client: aioredis.Redis, user_id: str) -> set[str]:
    return set(await client.zrange(f"enginescope:slots:{user_id}", 0, -1))


class TestAdmission:
    async def test_acquire_counts_and_refuses_at_the_limit(self, make_ledger: LedgerMaker) -> None:
        """Slots are granted up to the limit, then refused naming the user and (active/limit)."""
        ledger = make_ledger()
        assert [1, 2] == [await ledger.acquire("u-1", slot, 2) for slot in ("a", "b")]
        with pytest.raises(UserEngineLimitError, match=r"'u-1'.*\(2/2\)") as refused:
            await ledger.acquire("u-1", "c", 2)
        assert (refused.value.active, refused.value.limit) == (2, 2)
        assert (2, 1) == (ledger.get_metrics()["acquired"], ledger.get_metrics()["refused"])

    async def test_acquiring_a_held_slot_again_takes_no_second_slot(
        self, make_ledger: LedgerMaker, redis_client: aioredis.Redis
    ) -> None:
        """A retried acquire of the same slot id renews it instead of counting it twice."""
        ledger = make_ledger()
        assert 1 == await ledger.acquire("u-1", "a", 1)
        assert 1 == await ledger.acquire("u-1", "a", 1)
        assert {"a"} == await _members(redis_client, "u-1")

    async def test_users_are_independent(self, make_ledger: LedgerMaker) -> None:
        """One user at the limit does not affect another user."""
        ledger = make_ledger()
        await ledger.acquire("u-1", "a", 1)
        assert 1 == await ledger.acquire("u-2", "a", 1)

    @pytest.mark.parametrize("limit", [1, 3, 7])
    async def test_two_replicas_admit_exactly_the_limit_under_200_concurrent_creates(
        self,
        make_replica: ReplicaMaker,
        make_context: ContextMaker,
        redis_client: aioredis.Redis,
        limit: int,
    ) -> None:
        """200 concurrent creates for one user, split over two factories, admit the limit."""
        replicas = [make_replica("A", limit=limit), make_replica("B", limit=limit)]
        creates = [replicas[i % 2].factory.create_for_user(make_context("u-1")) for i in range(200)]
        results = await asyncio.gather(*creates, return_exceptions=True)
        admitted = [result for result in results if not isinstance(result, BaseException)]
        refused = [result for result in results if isinstance(result, UserEngineLimitError)]
        assert (limit, 200 - limit) == (len(admitted), len(refused))
        assert {engine.engine_id for engine in admitted} == await _members(redis_client, "u-1")
        rejections = sum(r.factory.get_factory_metrics()["user_limit_rejections"] for r in replicas)
        assert 200 - limit == rejections

    async def test_the_slot_key_expires_with_its_newest_lease(
        self, make_ledger: LedgerMaker, redis_client: aioredis.Redis
    ) -> None:
        """The user's key carries an expiry no later than the lease TTL (no orphaned keys)."""
        ledger = make_ledger(lease_ttl_seconds=5)
        await ledger.acquire("u-1", "a", 1)
        assert 0 < await redis_client.pttl("enginescope:slots:u-1") <= 5000

    async def test_satisfies_the_protocol_and_tells_where_it_points(
        self, make_ledger: LedgerMaker, redis_url: str
    ) -> None:
        """The ledger is a SlotLedger; its repr and url name the server without credentials."""
        ledger = make_ledger()
        assert isinstance(ledger, SlotLedger)
        assert redis_url == ledger.url
        assert f"<RedisSlotLedger url={redis_url!r} held=0 ttl=30s closed=False>" == repr(ledger)

    @pytest.mark.parametrize(
        ("option", "value"),
        [("lease_ttl_seconds", 0), ("lease_ttl_seconds", True), ("heartbeat_interval_seconds", -1)],
    )
    def test_rejects_bad_settings(self, option: str, value: object) -> None:
        """A non-positive TTL or heartbeat interval is a clear error naming the setting."""
        with pytest.raises(ExecutionEngineFactoryError, match=option):
            RedisSlotLedger("redis://127.0.0.1:1/0", **{option: value})  # type: ignore[arg-type]


class TestRelease:
    async def test_engine_cleanup_releases_its_slot(
        self,
        make_replica: ReplicaMaker,
        make_context: ContextMaker,
        redis_client: aioredis.Redis,
    ) -> None:
        """Closing an engine gives its slot back in Redis, so another replica can use it."""
        a, b = make_replica("A", limit=1), make_replica("B", limit=1)
        async with a.factory.user_execution_scope(make_context("u-1")):
            with pytest.raises(UserEngineLimitError):
                await b.factory.create_for_user(make_context("u-1"))
        assert set() == await _members(redis_client, "u-1")
        engine = await b.factory.create_for_user(make_context("u-1"))
        assert {engine.engine_id} == await _members(redis_client, "u-1")

    async def test_release_reports_whether_the_slot_was_held(
        self, make_ledger: LedgerMaker
    ) -> None:
        """Release returns True once, then False; an unknown slot is False."""
        ledger = make_ledger()
        await ledger.acquire("u-1", "a", 1)
        assert [True, False, False] == [
            await ledger.release("u-1", "a"),
            await ledger.release("u-1", "a"),
            await ledger.release("ghost", "a"),
        ]

    async def test_aclose_releases_held_slots_and_stops_the_heartbeat(
        self, make_ledger: LedgerMaker, redis_client: aioredis.Redis
    ) -> None:
        """Closing the ledger frees its slots at once; a closed ledger admits nothing."""
        ledger = make_ledger()
        await ledger.acquire("u-1", "a", 2)
        await ledger.acquire("u-2", "b", 2)
        await ledger.aclose()
        await ledger.aclose()
        assert (set(), set()) == (
            await _members(redis_client, "u-1"),
            await _members(redis_client, "u-2"),
        )
        assert (0, False) == (
            ledger.get_metrics()["held_slots"],
            ledger.get_metrics()["heartbeat_running"],
        )
        with pytest.raises(ExecutionEngineFactoryError, match="closed"):
            await ledger.acquire("u-1", "c", 2)

    async def test_a_client_passed_in_is_left_open(self, redis_client: aioredis.Redis) -> None:
        """The ledger closes only a client it built; yours stays usable."""
        ledger = RedisSlotLedger(redis_client)
        await ledger.acquire("u-1", "a", 1)
        await ledger.aclose()
        assert await redis_client.ping()


class TestLeases:
    async def test_the_heartbeat_keeps_live_slots_beyond_the_ttl(
        self, make_ledger: LedgerMaker
    ) -> None:
        """A replica that keeps heartbeating keeps its slots long after one TTL."""
        holder = make_ledger(lease_ttl_seconds=0.3, heartbeat_interval_seconds=0.05)
        other = make_ledger(lease_ttl_seconds=0.3)
        await holder.acquire("u-1", "a", 1)
        await asyncio.sleep(0.9)
        with pytest.raises(UserEngineLimitError):
            await other.acquire("u-1", "b", 1)
        assert holder.get_metrics()["heartbeats"] >= 3

    async def test_a_replica_that_stops_heartbeating_loses_its_slots_within_the_ttl(
        self, make_ledger: LedgerMaker
    ) -> None:
        """When a replica dies (its heartbeat stops), its leases expire and others get in."""
        crashed = make_ledger(lease_ttl_seconds=0.5, heartbeat_interval_seconds=0.05)
        survivor = make_ledger(lease_ttl_seconds=0.5)
        await crashed.acquire("u-1", "a", 1)
        heartbeat = crashed._heartbeat.task
        assert heartbeat is not None
        heartbeat.cancel()  # the process is gone: nothing renews its leases any more
        with pytest.raises(UserEngineLimitError):
            await survivor.acquire("u-1", "b", 1)
        await asyncio.sleep(0.6)
        assert 1 == await survivor.acquire("u-1", "b", 1)

    async def test_renewal_restores_leases_lost_with_redis_data(
        self, make_ledger: LedgerMaker, redis_client: aioredis.Redis
    ) -> None:
        """After Redis loses its data, the next heartbeat re-takes the live engines' leases."""
        ledger = make_ledger(heartbeat_interval_seconds=3600)
        await ledger.acquire("u-1", "a", 2)
        await ledger.acquire("u-1", "b", 2)
        await redis_client.flushall()
        assert 2 == await ledger.renew_leases()
        assert {"a", "b"} == await _members(redis_client, "u-1")
        assert 2 == ledger.get_metrics()["leases_restored"]

    async def test_a_lease_taken_over_meanwhile_is_reported_lost(
        self, make_ledger: LedgerMaker
    ) -> None:
        """If others filled the user while the lease was gone, it is counted lost, not forced."""
        ledger = make_ledger(heartbeat_interval_seconds=3600, lease_ttl_seconds=0.2)
        other = make_ledger(heartbeat_interval_seconds=3600)
        await ledger.acquire("u-1", "a", 1)
        await asyncio.sleep(0.3)
        await other.acquire("u-1", "b", 1)
        assert 0 == await ledger.renew_leases()
        assert (1, 1) == (
            ledger.get_metrics()["leases_lost"],
            ledger.get_metrics()["unleased_slots"],
        )
        await other.release("u-1", "b")
        assert 1 == await ledger.renew_leases()
        assert (1, 0) == (
            ledger.get_metrics()["leases_lost"],
            ledger.get_metrics()["unleased_slots"],
        )

    async def test_a_slot_released_during_its_renewal_stays_released(
        self, make_ledger: LedgerMaker, redis_client: aioredis.Redis
    ) -> None:
        """A release racing the heartbeat wins: the renewal does not resurrect the slot."""
        ledger = make_ledger(heartbeat_interval_seconds=3600)
        for slot in range(50):
            await ledger.acquire("u-1", str(slot), 100)
        renewal = asyncio.create_task(ledger.renew_leases())
        await asyncio.gather(*(ledger.release("u-1", str(slot)) for slot in range(50)))
        await renewal
        assert set() == await _members(redis_client, "u-1")


class TestCancellation:
    async def test_acquires_cancelled_at_any_point_leak_no_slot(
        self, make_ledger: LedgerMaker, redis_client: aioredis.Redis
    ) -> None:
        """Cancelled acquires leave exactly the slots the ledger believes it holds."""
        ledger = make_ledger()
        rng = random.Random(7)
        tasks = [asyncio.create_task(ledger.acquire("u-1", str(i), 1000)) for i in range(200)]
        for task in tasks:
            asyncio.get_running_loop().call_later(rng.uniform(0, 0.02), task.cancel)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        if ledger._releases:
            await asyncio.wait(tuple(ledger._releases))
        granted = {str(i) for i, result in enumerate(results) if isinstance(result, int)}
        cancelled = sum(isinstance(result, asyncio.CancelledError) for result in results)
        assert cancelled > 0
        assert granted == {slot for _, slot in ledger._held}
        assert granted == await _members(redis_client, "u-1")

    async def test_cancelled_creates_leave_only_the_live_engines_slots(
        self,
        make_replica: ReplicaMaker,
        make_context: ContextMaker,
        redis_client: aioredis.Redis,
    ) -> None:
        """Through the factory: after cancelled creates, Redis holds exactly the live engines."""
        replica = make_replica(limit=500)
        tasks = [
            asyncio.create_task(replica.factory.create_for_user(make_context("u-1")))
            for _ in range(100)
        ]
        await asyncio.sleep(0)
        for task in tasks[::2]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if replica.ledger._releases:
            await asyncio.wait(tuple(replica.ledger._releases))
        live = {engine.engine_id for engine in replica.factory.engines_for_user("u-1")}
        assert live == await _members(redis_client, "u-1")


class TestRedisDown:
    async def test_acquire_fails_closed_with_a_clear_error(
        self, make_ledger: LedgerMaker, redis_server: RedisServer
    ) -> None:
        """With Redis gone, an engine is refused (never admitted past the limit), saying why."""
        ledger = make_ledger()
        redis_server.stop()
        with pytest.raises(SlotLedgerUnavailableError) as unavailable:
            await ledger.acquire("u-1", "a", 1)
        message = str(unavailable.value)
        assert f"Redis is unreachable at {redis_server.url}" in message
        assert "ENGINESCOPE_REDIS_URL" in message
        assert isinstance(unavailable.value, ExecutionEngineFactoryError)
        assert (1, 0) == (
            ledger.get_metrics()["unavailable_errors"],
            ledger.get_metrics()["held_slots"],
        )

    async def test_release_failure_is_counted_not_raised(
        self, make_ledger: LedgerMaker, redis_server: RedisServer
    ) -> None:
        """A release while Redis is down is logged and counted; the lease will expire."""
        ledger = make_ledger()
        await ledger.acquire("u-1", "a", 1)
        redis_server.stop()
        assert await ledger.release("u-1", "a")
        assert (1, 0) == (
            ledger.get_metrics()["release_errors"],
            ledger.get_metrics()["held_slots"],
        )

    async def test_the_heartbeat_survives_an_outage_and_restores_the_leases(
        self,
        make_ledger: LedgerMaker,
        redis_server: RedisServer,
        redis_client: aioredis.Redis,
    ) -> None:
        """The heartbeat keeps running through errors and re-takes the leases on its own."""
        ledger = make_ledger(lease_ttl_seconds=1, heartbeat_interval_seconds=0.05)
        await ledger.acquire("u-1", "a", 1)
        redis_server.kill()
        await asyncio.sleep(0.3)
        redis_server.start()
        async with asyncio.timeout(5):
            while {"a"} != await _members(redis_client, "u-1"):
                await asyncio.sleep(0.02)
        metrics = ledger.get_metrics()
        assert metrics["heartbeat_running"]
        assert metrics["heartbeat_errors"] > 0
        assert metrics["leases_restored"] == 1
