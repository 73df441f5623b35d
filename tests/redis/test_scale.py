"""The Redis backend at the load users outgrow one process at: hundreds of concurrent
operations, on a few connections, against a real redis-server."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
import redis.asyncio as aioredis
from enginescope.engines import (
    ExecutionEngineFactory,
    SlotLedgerPoolExhaustedError,
    SlotLedgerUnavailableError,
    UserEngineLimitError,
    UserExecutionContext,
    UserWebSocketEmitter,
)
from enginescope.engines.redis import RedisSlotLedger, RedisWebSocketBridge
from enginescope.engines.testing import FakeSocket

if TYPE_CHECKING:
    from conftest import ReplicaMaker

pytestmark = [pytest.mark.redis]

ContextMaker = Callable[..., UserExecutionContext]


async def _client_count(client: aioredis.Redis) -> int:
    return len(await client.client_list())


class TestManyConcurrentCreates:
    async def test_150_concurrent_creates_for_150_users_are_all_admitted(
        self, make_replica: ReplicaMaker, make_context: ContextMaker
    ) -> None:
        """More concurrent creates than the pool has connections wait for one; none fail."""
        replica = make_replica("A", limit=1)
        contexts = [make_context(f"u-{i}") for i in range(150)]
        results = await asyncio.gather(
            *(replica.factory.create_for_user(ctx) for ctx in contexts), return_exceptions=True
        )
        failures = [result for result in results if isinstance(result, BaseException)]
        assert [] == failures
        assert 150 == replica.ledger.get_metrics()["held_slots"]

    async def test_500_creates_with_random_cancellations_admit_the_rest_and_leak_nothing(
        self, make_replica: ReplicaMaker, make_context: ContextMaker, redis_client: aioredis.Redis
    ) -> None:
        """Cancelled creates give their slot back; every create not cancelled is admitted."""
        replica = make_replica("A", limit=1)
        rng = random.Random(11)
        tasks = [
            asyncio.ensure_future(replica.factory.create_for_user(make_context(f"u-{i}")))
            for i in range(500)
        ]
        for task in rng.sample(tasks, 100):
            asyncio.get_running_loop().call_later(rng.uniform(0, 0.05), task.cancel)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        admitted = [r for r in results if not isinstance(r, BaseException)]
        errors = [
            r for r in results if not isinstance(r, asyncio.CancelledError) and r not in admitted
        ]
        assert [] == errors
        assert len(admitted) == replica.ledger.get_metrics()["held_slots"]
        await replica.factory.shutdown()
        assert [] == await redis_client.keys("enginescope:slots:*")

    async def test_an_exhausted_pool_is_told_apart_from_redis_being_down(
        self, redis_url: str
    ) -> None:
        """When every pooled connection stays busy, acquire says so, naming the settings."""
        ledger = RedisSlotLedger(redis_url, max_connections=1, pool_timeout_seconds=0.05)
        pool = ledger._client.connection_pool
        held = await pool.get_connection()
        try:
            with pytest.raises(SlotLedgerPoolExhaustedError) as caught:
                await ledger.acquire("u-1", "slot", 1)
        finally:
            await pool.release(held)
            await ledger.aclose()
        assert isinstance(caught.value, SlotLedgerUnavailableError)
        assert "is up, but all 1 pooled connections stayed busy" in str(caught.value)
        assert "ENGINESCOPE_REDIS_MAX_CONNECTIONS" in str(caught.value)
        assert 1 == ledger.get_metrics()["pool_exhausted_errors"]

    async def test_a_pool_that_frees_up_within_the_timeout_admits(self, redis_url: str) -> None:
        """A create that finds the pool busy waits for a connection instead of failing."""
        ledger = RedisSlotLedger(redis_url, max_connections=1, pool_timeout_seconds=5)
        pool = ledger._client.connection_pool
        held = await pool.get_connection()
        acquire = asyncio.ensure_future(ledger.acquire("u-1", "slot", 1))
        await asyncio.sleep(0.05)
        assert not acquire.done()
        await pool.release(held)
        try:
            assert 1 == await acquire
        finally:
            await ledger.aclose()

    async def test_the_limit_still_holds_under_300_concurrent_creates_of_one_user(
        self, make_replica: ReplicaMaker, make_context: ContextMaker
    ) -> None:
        """Waiting for connections admits no more than the limit."""
        a, b = make_replica("A", limit=3), make_replica("B", limit=3)
        results = await asyncio.gather(
            *((a if i % 2 else b).factory.create_for_user(make_context("u-1")) for i in range(300)),
            return_exceptions=True,
        )
        refused = [r for r in results if isinstance(r, UserEngineLimitError)]
        assert (3, 297) == (len(results) - len(refused), len(refused))


class TestManyConcurrentPublishers:
    async def test_200_users_publishing_at_once_all_receive_every_event_in_order(
        self, make_replica: ReplicaMaker, redis_client: aioredis.Redis
    ) -> None:
        """200 users' runs publishing together reach every socket, each event once, in order."""
        a, b = make_replica("A"), make_replica("B")
        users = [f"u-{i}" for i in range(200)]
        sockets = {user: FakeSocket(user) for user in users}
        for user in users:
            await a.bridge.connect(user, sockets[user])

        async def run(user: str) -> None:
            emitter = UserWebSocketEmitter(user, "t", f"run-{user}", b.bridge)
            for step in range(10):
                assert 1 == await emitter.notify_agent_thinking("agent", "x", step=step)

        await asyncio.gather(*(run(user) for user in users))
        await a.bridge.flush()
        expected = {user: list(range(10)) for user in users}
        assert expected == {
            user: [m["data"]["step"] for m in socket.messages] for user, socket in sockets.items()
        }

    async def test_a_replica_publishes_and_reads_over_a_few_connections(
        self, redis_url: str, redis_client: aioredis.Redis
    ) -> None:
        """However many runs publish at once, a bridge holds two connections: one publishing
        (queued events go out as one pipeline) and one reading."""
        bridge = RedisWebSocketBridge(redis_url)
        before = await _client_count(redis_client)
        try:
            await bridge.connect("reader", FakeSocket())
            event = {"type": "x", "user_id": "u", "data": {}}
            assert [1] * 300 == await asyncio.gather(
                *(bridge.send_to_user(f"u-{i}", {**event, "user_id": f"u-{i}"}) for i in range(300))
            )
            assert 2 >= await _client_count(redis_client) - before
        finally:
            await bridge.aclose()


class TestFactoryOverRedis:
    async def test_engines_of_many_users_run_through_one_factory(
        self, make_replica: ReplicaMaker, make_context: ContextMaker
    ) -> None:
        """150 users' runs at once on one replica all complete."""
        replica = make_replica("A")
        factory: ExecutionEngineFactory = replica.factory

        async def run(i: int) -> bool:
            async with factory.user_execution_scope(make_context(f"u-{i}")) as engine:
                return (await engine.execute_agent("demo", "hello world")).success

        assert [True] * 150 == await asyncio.gather(*(run(i) for i in range(150)))
