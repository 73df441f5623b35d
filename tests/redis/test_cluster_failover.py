"""A Redis Cluster primary killed under a storm of creates: the ledger fails closed while
the slot has no primary, recovers by itself after the failover, and the test reports how
many engines were admitted over the limit."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import TYPE_CHECKING

import pytest
from enginescope.engines import (
    AgentRegistry,
    ExecutionEngineFactory,
    SlotLedgerUnavailableError,
    UserEngineLimitError,
    UserExecutionContext,
    UserExecutionEngine,
)
from enginescope.engines.redis import RedisSlotLedger, RedisWebSocketBridge
from enginescope.engines.redis._keys import BUCKETS, bucket

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import ClusterServers, RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.slow]

LIMIT = 1
USERS_PER_NODE = 8
FRESH_USERS = 40


def _factory(url: str, registry: AgentRegistry) -> ExecutionEngineFactory:
    ledger = RedisSlotLedger(url, cluster=True, lease_ttl_seconds=30, pool_timeout_seconds=2)
    bridge = RedisWebSocketBridge(url, cluster=True)
    return ExecutionEngineFactory(
        bridge, agent_registry=registry, max_engines_per_user=LIMIT, slot_ledger=ledger
    )


class Storm:
    """Both replicas try to create an engine for every user, round after round."""

    def __init__(
        self,
        factories: list[ExecutionEngineFactory],
        make_context: Callable[..., UserExecutionContext],
    ) -> None:
        self.factories = factories
        self.make_context = make_context
        self.engines: list[UserExecutionEngine] = []
        self.outcomes: Counter[tuple[str, str]] = Counter()  # (phase, outcome)

    async def round(self, users: list[str], phase: str) -> dict[str, str]:
        """One create per user per replica at once; the outcome per user (worst first)."""
        creates = [
            factory.create_for_user(self.make_context(user))
            for user in users
            for factory in self.factories
        ]
        results = await asyncio.gather(*creates, return_exceptions=True)
        outcome: dict[str, str] = {}
        for index, result in enumerate(results):
            user = users[index // len(self.factories)]
            if isinstance(result, UserExecutionEngine):
                self.engines.append(result)
                kind = "admitted"
            elif isinstance(result, SlotLedgerUnavailableError):
                kind = "unavailable"
            elif isinstance(result, UserEngineLimitError):
                kind = "refused"
            else:
                raise TypeError(f"unexpected outcome for {user}: {result!r}")
            self.outcomes[phase, kind] += 1
            outcome[user] = max(outcome.get(user, kind), kind, key=_severity)
        return outcome

    def over_limit(self) -> int:
        live = Counter(engine.context.user_id for engine in self.engines if engine.is_active())
        return sum(max(0, count - LIMIT) for count in live.values())


def _severity(kind: str) -> int:
    return {"refused": 0, "admitted": 1, "unavailable": 2}[kind]


def _users_by_node(
    cluster: ClusterServers, ledger: RedisSlotLedger, count: int
) -> dict[int, list[str]]:
    """``count`` user ids per primary (by the node serving their keys' hash slot)."""
    node_of_bucket = {
        b: cluster.primary_of(ledger.key(_user_in_bucket(b))).port for b in range(BUCKETS)
    }
    by_node: dict[int, list[str]] = {port: [] for port in set(node_of_bucket.values())}
    index = 0
    while min(len(users) for users in by_node.values()) < count:
        user = f"user-{index}"
        users = by_node[node_of_bucket[bucket(user, cluster=True)]]
        if len(users) < count:
            users.append(user)
        index += 1
    return by_node


def _user_in_bucket(wanted: int) -> str:
    return next(f"probe-{i}" for i in range(10_000) if bucket(f"probe-{i}", cluster=True) == wanted)


class TestPrimaryKilledUnderAStormOfCreates:
    async def test_the_ledger_fails_closed_then_recovers_by_itself(
        self,
        fresh_redis_cluster: ClusterServers,
        registry: AgentRegistry,
        make_context: Callable[..., UserExecutionContext],
    ) -> None:
        """Users on the dead primary get SlotLedgerUnavailableError while it has no primary;
        after the replica takes over, creates are answered again by themselves; users on
        the other primaries are served throughout; no user holds more than the limit."""
        cluster = fresh_redis_cluster
        factories = [_factory(cluster.url, registry) for _ in range(2)]
        storm = Storm(factories, make_context)
        ledger = factories[0].slot_ledger
        assert isinstance(ledger, RedisSlotLedger)
        by_node = _users_by_node(cluster, ledger, USERS_PER_NODE + FRESH_USERS)
        victim_port, victim_users = next(iter(by_node.items()))
        victim: RedisServer = next(s for s in cluster.servers if s.port == victim_port)
        settled = victim_users[:USERS_PER_NODE]
        fresh = victim_users[USERS_PER_NODE:]  # first admitted during the storm
        elsewhere = [u for port, users in by_node.items() if port != victim_port for u in users]
        try:
            assert {"admitted"} == set((await storm.round(settled, "before")).values())
            killed_at = 0.0
            outage: dict[str, str] = {}
            while not killed_at or time.monotonic() - killed_at < 20:
                arriving = [fresh.pop() for _ in range(min(4, len(fresh)))]
                creates = asyncio.ensure_future(storm.round(arriving, "storm"))
                if not killed_at and len(fresh) <= FRESH_USERS // 2:
                    await asyncio.sleep(0.002)  # the kill lands while creates are in flight
                    victim.kill()
                    killed_at = time.monotonic()
                await creates
                if not killed_at:
                    continue
                outage = await storm.round(settled, "outage")
                others = await storm.round(elsewhere, "outage, other nodes")
                assert "unavailable" not in others.values()
                if "unavailable" not in outage.values() and not fresh:
                    break
            recovered_after = time.monotonic() - killed_at
            assert storm.outcomes["outage", "unavailable"] > 0
            assert {"refused"} == set(outage.values()), "the failover did not end the outage"
            admitted = sorted({engine.context.user_id for engine in storm.engines})
            after = await storm.round(admitted, "after")
            over = storm.over_limit()
            print(  # noqa: T201 - the numbers the README quotes
                f"\nfailover: answered again {recovered_after:.1f}s after the kill; "
                f"outcomes {dict(storm.outcomes)}; engines over the limit: {over}"
            )
            assert 0 == over
            assert {"refused"} == set(after.values())
        finally:
            for factory in factories:
                await factory.shutdown()
                bridge = factory.websocket_bridge
                assert isinstance(bridge, RedisWebSocketBridge)
                await bridge.aclose()
