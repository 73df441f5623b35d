"""The Redis backend on a real Redis Cluster (3 primaries, 3 replicas) started by the tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio
from enginescope.containers import EngineContainer, EngineSettings
from enginescope.engines import (
    AgentRegistry,
    ExecutionEngineFactory,
    UserEngineLimitError,
    UserExecutionContext,
    UserWebSocketEmitter,
)
from enginescope.engines.redis import RedisSlotLedger, RedisWebSocketBridge
from enginescope.engines.testing import FakeSocket

if TYPE_CHECKING:
    from conftest import ClusterServers

pytestmark = [pytest.mark.redis]

ContextMaker = Callable[..., UserExecutionContext]
FactoryMaker = Callable[..., ExecutionEngineFactory]


@pytest_asyncio.fixture
async def make_factory(
    redis_cluster: ClusterServers, registry: AgentRegistry
) -> AsyncIterator[FactoryMaker]:
    """App replicas on this test's cluster: a ledger, a bridge and a factory each."""
    factories: list[ExecutionEngineFactory] = []

    def make(limit: int = 2, **ledger_options: Any) -> ExecutionEngineFactory:
        ledger = RedisSlotLedger(redis_cluster.url, cluster=True, **ledger_options)
        bridge = RedisWebSocketBridge(redis_cluster.url, cluster=True, block_ms=200)
        factory = ExecutionEngineFactory(
            bridge, agent_registry=registry, max_engines_per_user=limit, slot_ledger=ledger
        )
        factories.append(factory)
        return factory

    yield make
    for factory in reversed(factories):
        await factory.shutdown()
        bridge = factory.websocket_bridge
        assert isinstance(bridge, RedisWebSocketBridge)
        await bridge.aclose()


def _ledger(factory: ExecutionEngineFactory) -> RedisSlotLedger:
    ledger = factory.slot_ledger
    assert isinstance(ledger, RedisSlotLedger)
    return ledger


def _bridge(factory: ExecutionEngineFactory) -> RedisWebSocketBridge:
    bridge = factory.websocket_bridge
    assert isinstance(bridge, RedisWebSocketBridge)
    return bridge


def _users_on_every_primary(cluster: ClusterServers, ledger: RedisSlotLedger) -> list[str]:
    """One user id per primary, each with keys on a different node."""
    by_node: dict[int, str] = {}
    for index in range(200):
        user = f"user-{index}"
        by_node.setdefault(cluster.primary_of(ledger.key(user)).port, user)
    assert 3 == len(by_node)
    return list(by_node.values())


class TestClusterLimit:
    async def test_the_per_user_limit_holds_across_replicas_for_users_on_every_node(
        self, make_factory: FactoryMaker, make_context: ContextMaker, redis_cluster: ClusterServers
    ) -> None:
        """Two replicas share each user's limit, whichever primary holds the user's keys."""
        a, b = make_factory(limit=2), make_factory(limit=2)
        users = _users_on_every_primary(redis_cluster, _ledger(a))
        for user in users:
            await a.create_for_user(make_context(user))
            await b.create_for_user(make_context(user))
            with pytest.raises(UserEngineLimitError):
                await a.create_for_user(make_context(user))
            with pytest.raises(UserEngineLimitError):
                await b.create_for_user(make_context(user))
        assert dict.fromkeys(users, 1) == a.get_active_contexts()

    async def test_a_users_keys_share_one_hash_slot(
        self, make_factory: FactoryMaker, redis_cluster: ClusterServers
    ) -> None:
        """The slot set and the event stream of a user live in one slot (one hash tag)."""
        factory = make_factory()
        ledger, bridge = _ledger(factory), _bridge(factory)
        node = redis_cluster.servers[0]
        for user in ("alice", "bob", "carol", "u-{x}", "weird}{id"):
            slots = {
                redis_cluster.cli(node, "cluster", "keyslot", key).strip()
                for key in (ledger.key(user), bridge.key(user))
            }
            assert 1 == len(slots)


class TestClusterEvents:
    async def test_events_of_many_users_cross_replicas_each_to_its_own_socket(
        self, make_factory: FactoryMaker
    ) -> None:
        """100 users' sockets on A, their runs on B: each socket gets its 5 events in order."""
        a, b = make_factory(), make_factory()
        users = [f"user-{i}" for i in range(100)]
        sockets = {user: FakeSocket(user) for user in users}
        for user in users:
            await _bridge(a).connect(user, sockets[user])

        async def run(user: str) -> None:
            emitter = UserWebSocketEmitter(user, "t", f"run-{user}", _bridge(b))
            for step in range(5):
                assert 1 == await emitter.notify_agent_thinking("agent", "x", step=step)

        await asyncio.gather(*(run(user) for user in users))
        await _bridge(a).flush()
        assert {user: list(range(5)) for user in users} == {
            user: [m["data"]["step"] for m in socket.messages] for user, socket in sockets.items()
        }
        assert {user: {user} for user in users} == {
            user: {m["user_id"] for m in socket.messages} for user, socket in sockets.items()
        }


class TestClusterSettings:
    async def test_redis_cluster_setting_builds_cluster_clients(
        self, redis_cluster: ClusterServers
    ) -> None:
        """ENGINESCOPE_REDIS_CLUSTER=true: the container's ledger and bridge use the cluster."""
        container = EngineContainer()
        container.settings.override(
            EngineSettings(backend="redis", redis_url=redis_cluster.url, redis_cluster=True)
        )
        await container.init_resources()
        try:
            ledger = await container.slot_ledger()
            bridge = await container.websocket_bridge()
            assert isinstance(ledger, RedisSlotLedger)
            assert isinstance(bridge, RedisWebSocketBridge)
            assert (True, True) == (ledger.cluster, bridge.cluster)
            assert 1 == await ledger.acquire("alice", "slot-1", 1)
        finally:
            await container.shutdown_resources()
