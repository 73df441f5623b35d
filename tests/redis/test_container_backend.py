"""EngineContainer with ENGINESCOPE_BACKEND=redis: the same API, state shared through Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from enginescope.containers import EngineContainer, EngineSettings, user_scope
from enginescope.engines import (
    RedisSlotLedger,
    RedisWebSocketBridge,
    UserEngineLimitError,
    UserExecutionContext,
)
from enginescope.engines.testing import FakeSocket

pytestmark = [pytest.mark.redis]

MakeContext = Callable[..., UserExecutionContext]
FIVE = ["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]


def redis_container(redis_url: str, **settings: object) -> EngineContainer:
    container = EngineContainer()
    container.settings.override(
        EngineSettings(backend="redis", redis_url=redis_url, **settings)  # type: ignore[arg-type]
    )
    return container


class TestRedisBackend:
    async def test_settings_choose_the_redis_ledger_and_bridge(self, redis_url: str) -> None:
        """backend='redis' builds a RedisSlotLedger and a RedisWebSocketBridge."""
        container = redis_container(redis_url)
        await container.init_resources()
        try:
            assert isinstance(await container.slot_ledger(), RedisSlotLedger)
            assert isinstance(await container.websocket_bridge(), RedisWebSocketBridge)
        finally:
            await container.shutdown_resources()

    async def test_the_pool_settings_reach_the_ledger_and_the_bridge(self, redis_url: str) -> None:
        """ENGINESCOPE_REDIS_MAX_CONNECTIONS and _POOL_TIMEOUT_SECONDS size both pools."""
        container = redis_container(
            redis_url, redis_max_connections=7, redis_pool_timeout_seconds=0.5
        )
        await container.init_resources()
        try:
            ledger = await container.slot_ledger()
            bridge = await container.websocket_bridge()
            pools = [ledger._client.connection_pool, bridge._handle.client.connection_pool]
            assert [(7, 0.5), (7, 0.5)] == [(p.max_connections, p.timeout) for p in pools]
            assert (False, False) == (ledger.cluster, bridge.cluster)
        finally:
            await container.shutdown_resources()

    async def test_two_containers_share_the_limit_and_the_events(
        self, redis_url: str, make_context: MakeContext
    ) -> None:
        """Two replicas share one user's limit; a run on B reaches the socket held by A."""
        replica_a = redis_container(redis_url, max_engines_per_user=1)
        replica_b = redis_container(redis_url, max_engines_per_user=1)
        await replica_a.init_resources()
        await replica_b.init_resources()
        before = asyncio.all_tasks()
        try:
            bridge_a = await replica_a.websocket_bridge()
            socket = FakeSocket("alice-tab")
            connection = await bridge_a.connect("alice", socket)
            async with user_scope(make_context("alice")):
                engine = await replica_b.user_engine()
                with pytest.raises(UserEngineLimitError):
                    async with user_scope(make_context("alice")):
                        await replica_a.user_engine()
                await engine.execute_agent("demo", "hello from replica b")
            while len(socket.messages) < 5:
                await asyncio.sleep(0.01)
            assert FIVE == [event["type"] for event in socket.messages]
            assert {"alice"} == {event["user_id"] for event in socket.messages}
            bridge_a.unregister_connection(connection)
        finally:
            await replica_b.shutdown_resources()
            await replica_a.shutdown_resources()
        leftover = {t for t in asyncio.all_tasks() - before if not t.done()}
        assert set() == {t.get_name() for t in leftover if t.get_name().startswith("enginescope")}
