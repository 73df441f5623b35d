"""A publish retried after a lost reply reaches each socket once (de-duplicated by run and seq)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
import redis.asyncio as aioredis
from enginescope.engines import UserWebSocketEmitter
from enginescope.engines.redis import RedisWebSocketBridge
from enginescope.engines.testing import FakeSocket

if TYPE_CHECKING:
    from conftest import ReplyDroppingProxy

pytestmark = [pytest.mark.redis]


async def _steps(socket: FakeSocket, count: int) -> list[int]:
    async with asyncio.timeout(5):
        while len(socket.messages) < count:
            await asyncio.sleep(0.005)
    return [message["data"]["step"] for message in socket.messages]


class TestRetriedPublish:
    async def test_an_event_appended_twice_reaches_the_socket_once(
        self,
        redis_url: str,
        reply_dropping_proxy: ReplyDroppingProxy,
        redis_client: aioredis.Redis,
    ) -> None:
        """Redis appended the event, the reply was lost, the client retried: the socket gets
        it once."""
        receiver = RedisWebSocketBridge(redis_url)
        publisher = RedisWebSocketBridge(reply_dropping_proxy.url)
        socket = FakeSocket()
        try:
            await receiver.connect("u-1", socket)
            emitter = UserWebSocketEmitter("u-1", "t", "run-1", publisher)
            await emitter.notify_agent_thinking("agent", "x", step=0)
            reply_dropping_proxy.drop_reply_to(b'"step":1')
            await emitter.notify_agent_thinking("agent", "x", step=1)
            await emitter.notify_agent_thinking("agent", "x", step=2)
            await receiver.flush()
            assert 1 == reply_dropping_proxy.dropped
            assert 4 == await redis_client.xlen(receiver.key("u-1"))  # step 1 was appended twice
            assert [0, 1, 2] == await _steps(socket, 3)
            assert 1 == receiver.get_metrics()["repeats_dropped"]
        finally:
            await publisher.aclose()
            await receiver.aclose()

    async def test_a_resuming_socket_skips_the_repeat_too(
        self,
        redis_url: str,
        reply_dropping_proxy: ReplyDroppingProxy,
        redis_client: aioredis.Redis,
    ) -> None:
        """Replaying a stream that holds a repeated entry still sends each event once."""
        publisher = RedisWebSocketBridge(reply_dropping_proxy.url)
        receiver = RedisWebSocketBridge(redis_url)
        socket = FakeSocket()
        try:
            emitter = UserWebSocketEmitter("u-1", "t", "run-1", publisher)
            reply_dropping_proxy.drop_reply_to(b'"step":1')
            for step in range(3):
                await emitter.notify_agent_thinking("agent", "x", step=step)
            assert 4 == await redis_client.xlen(receiver.key("u-1"))
            await receiver.connect("u-1", socket, resume_from="0-0")
            await receiver.flush()
            assert [0, 1, 2] == await _steps(socket, 3)
        finally:
            await publisher.aclose()
            await receiver.aclose()

    async def test_two_runs_that_share_a_run_id_are_not_taken_for_repeats(
        self, redis_url: str
    ) -> None:
        """Two emitters with one run_id both start at seq 1; their events differ in time."""
        bridge = RedisWebSocketBridge(redis_url)
        socket = FakeSocket()
        try:
            await bridge.connect("u-1", socket)
            for _ in range(2):
                emitter = UserWebSocketEmitter("u-1", "t", "run-1", bridge)
                await emitter.notify_agent_thinking("agent", "x", step=0)
            await bridge.flush()
            assert [0, 0] == await _steps(socket, 2)
        finally:
            await bridge.aclose()
