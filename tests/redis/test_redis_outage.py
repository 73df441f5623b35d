"""Redis killed and restarted under two running replicas: fail closed, count, recover unaided."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from enginescope.engines import UserEngineLimitError, UserExecutionContext, UserWebSocketEmitter
from enginescope.engines.errors import SlotLedgerUnavailableError
from enginescope.engines.testing import FakeSocket

if TYPE_CHECKING:
    from conftest import RedisServer, ReplicaMaker

pytestmark = [pytest.mark.redis]

ContextMaker = Callable[..., UserExecutionContext]


async def _until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


class TestRedisRestartMidRun:
    async def test_replicas_fail_closed_while_down_and_recover_without_a_restart(
        self,
        make_replica: ReplicaMaker,
        make_context: ContextMaker,
        redis_server: RedisServer,
    ) -> None:
        """Kill Redis under live replicas: new engines are refused with the clear error,
        running engines' events are counted undelivered, and after Redis restarts the same
        objects admit, renew and deliver again."""
        a = make_replica("A", limit=2, lease_ttl_seconds=1, heartbeat_interval_seconds=0.05)
        b = make_replica("B", limit=2, lease_ttl_seconds=1, heartbeat_interval_seconds=0.05)
        socket = FakeSocket("on-A")
        await a.bridge.connect("u-1", socket)
        running = await b.factory.create_for_user(make_context("u-1", run_id="before"))
        assert (await running.execute_agent("demo", "before the crash")).success
        await _until(lambda: len(socket.messages) == 5)

        redis_server.kill()
        with pytest.raises(SlotLedgerUnavailableError, match="Redis is unreachable at"):
            await b.factory.create_for_user(make_context("u-1"))
        emitter = running.websocket_emitter
        assert isinstance(emitter, UserWebSocketEmitter)
        during = await running.execute_agent("demo", "while Redis is down")
        assert during.success  # the agent is never failed by its events
        assert 5 == b.bridge.get_metrics()["undelivered_redis_down"]
        assert 5 == emitter.events_undelivered
        assert 1 == b.factory.get_factory_metrics()["creation_errors"]

        redis_server.start()  # empty: leases and streams are gone
        await _until(lambda: b.ledger.get_metrics()["leases_restored"] >= 1)
        second = await a.factory.create_for_user(make_context("u-1", run_id="after"))
        with pytest.raises(UserEngineLimitError, match=r"\(2/2\)"):
            await a.factory.create_for_user(make_context("u-1"))  # the restored lease counts
        assert (await second.execute_agent("demo", "after the restart")).success
        await _until(lambda: len(socket.messages) == 10)
        assert ["before"] * 5 + ["after"] * 5 == [m["run_id"] for m in socket.messages]
        assert a.bridge.get_metrics()["reader_errors"] > 0
        assert b.ledger.get_metrics()["heartbeat_errors"] > 0
