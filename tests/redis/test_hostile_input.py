"""Hostile input never stops delivery for other users: resume ids, keys and ids Redis refuses."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest
import redis.asyncio as aioredis
from enginescope.engines import (
    AgentWebSocketBridge,
    InvalidContextError,
    InvalidResumeTokenError,
    UserWebSocketEmitter,
)
from enginescope.engines.redis import RedisSlotLedger, RedisWebSocketBridge
from enginescope.engines.testing import FakeSocket

from tests.redis.conftest import BridgeMaker

pytestmark = [pytest.mark.redis]

LONE_SURROGATE = "eve\ud800"


async def _emit(bridge: RedisWebSocketBridge, user_id: str, count: int) -> None:
    emitter = UserWebSocketEmitter(user_id, "t", f"run-{user_id}", bridge)
    for step in range(count):
        assert 1 == await emitter.notify_agent_thinking("agent", "x", step=step)


async def _received(socket: FakeSocket, count: int) -> list[int]:
    async with asyncio.timeout(5):
        while len(socket.messages) < count:
            await asyncio.sleep(0.005)
    return [message["data"]["step"] for message in socket.messages]


class TestResumeIds:
    @pytest.mark.parametrize(
        "resume_from",
        [
            "99999999999999999999999-0",
            "18446744073709551616-0",
            "0-18446744073709551616",
            "\u0661-0",  # an Arabic-Indic digit: a digit to Python, not to Redis
            "1-",
            "-1",
        ],
    )
    async def test_a_stream_id_redis_would_refuse_is_refused_at_registration(
        self, make_bridge: BridgeMaker, resume_from: str
    ) -> None:
        """Each part must be a decimal number of at most 2**64-1; anything else is refused."""
        bridge = make_bridge()
        with pytest.raises(InvalidResumeTokenError, match="resume_from"):
            bridge.register_connection("u-1", FakeSocket(), resume_from=resume_from)
        assert 0 == bridge.connection_count()

    async def test_the_largest_stream_id_is_accepted(self, make_bridge: BridgeMaker) -> None:
        """``2**64-1`` in both parts is a valid (if future) position."""
        a, b = make_bridge(), make_bridge()
        top = f"{2**64 - 1}-{2**64 - 1}"
        await a.connect("u-1", FakeSocket(), resume_from=top)
        live = FakeSocket("live")
        await a.connect("u-2", live)
        await _emit(b, "u-2", 2)
        assert [0, 1] == await _received(live, 2)

    async def test_a_huge_resume_id_from_one_user_leaves_the_others_their_events(
        self, make_bridge: BridgeMaker
    ) -> None:
        """The attack of the issue: a victim on the same replica still gets every event."""
        a, b = make_bridge(), make_bridge()
        victim = FakeSocket("victim")
        await a.connect("victim", victim)
        with pytest.raises(InvalidResumeTokenError):
            await a.connect("attacker", FakeSocket(), resume_from="99999999999999999999999-0")
        await _emit(b, "victim", 3)
        assert [0, 1, 2] == await _received(victim, 3)
        assert 0 == a.get_metrics()["reader_errors"]


class TestBadStreams:
    async def test_a_key_of_the_wrong_type_does_not_stall_the_other_users(
        self, make_bridge: BridgeMaker, redis_client: aioredis.Redis
    ) -> None:
        """A user whose stream key holds a string loses its sockets; everybody else reads on."""
        a, b = make_bridge(), make_bridge()
        good = FakeSocket("good")
        await a.connect("good", good)
        await redis_client.set(a.key("broken"), "not a stream")
        broken = FakeSocket("broken")
        await a.connect("broken", broken)
        await _emit(b, "good", 3)
        assert [0, 1, 2] == await _received(good, 3)
        assert 0 == a.connection_count("broken")
        assert 1 == a.get_metrics()["stream_errors"]

    async def test_a_stream_that_turns_bad_while_followed_is_dropped_alone(
        self, make_bridge: BridgeMaker, redis_client: aioredis.Redis
    ) -> None:
        """The shared XREAD fails for one stream; the others are read one by one, then on."""
        a, b = make_bridge(block_ms=50), make_bridge()
        good, broken = FakeSocket("good"), FakeSocket("broken")
        await a.connect("good", good)
        await a.connect("broken", broken)
        await redis_client.set(a.key("broken"), "not a stream")
        await asyncio.sleep(0.1)
        await _emit(b, "good", 2)
        assert [0, 1] == await _received(good, 2)
        assert (0, 1) == (a.connection_count("broken"), a.get_metrics()["stream_errors"])


class _FailingLocalBridge(AgentWebSocketBridge):
    """Refuses, with an exception, events of the ``fails`` step (a recording fake)."""

    def __init__(self, fails: int) -> None:
        super().__init__()
        self.fails = fails
        self.raised = 0

    async def send_to_user(self, user_id: str, event: Mapping[str, Any]) -> int:
        if event.get("data", {}).get("step") == self.fails:
            self.raised += 1
            raise RuntimeError("this entry cannot be delivered")
        return await super().send_to_user(user_id, event)


class TestReaderSurvives:
    async def test_an_entry_that_fails_is_skipped_and_the_reader_goes_on(
        self, make_bridge: BridgeMaker
    ) -> None:
        """An exception while delivering one entry skips that entry alone."""
        local = _FailingLocalBridge(fails=1)
        a, b = make_bridge(local=local), make_bridge()
        socket = FakeSocket()
        try:
            await a.connect("u-1", socket)
            await _emit(b, "u-1", 3)
            assert [0, 2] == await _received(socket, 2)
            assert (1, 1) == (local.raised, a.get_metrics()["entry_errors"])
            assert a.get_metrics()["reader_running"]
        finally:
            await local.aclose()


class TestUnencodableIds:
    async def test_a_lone_surrogate_user_is_refused_and_the_reader_lives_on(
        self, make_bridge: BridgeMaker
    ) -> None:
        """Registering a socket for an id Redis cannot store is a clear error; others read on."""
        a, b = make_bridge(), make_bridge()
        live = FakeSocket("live")
        await a.connect("bob", live)
        with pytest.raises(InvalidContextError, match="user_id"):
            a.register_connection(LONE_SURROGATE, FakeSocket())
        await _emit(b, "bob", 2)
        assert [0, 1] == await _received(live, 2)
        assert a.get_metrics()["reader_running"]

    async def test_send_to_user_never_raises_for_an_unencodable_user(
        self, make_bridge: BridgeMaker
    ) -> None:
        """send_to_user counts the event undelivered and returns 0; other events still go."""
        bridge = make_bridge()
        event = {"type": "x", "user_id": LONE_SURROGATE, "data": {}}
        sent = await asyncio.gather(
            bridge.send_to_user(LONE_SURROGATE, event),
            bridge.send_to_user("bob", {**event, "user_id": "bob"}),
        )
        assert [0, 1] == sent
        assert 1 == bridge.get_metrics()["undelivered_unencodable"]

    @pytest.mark.parametrize(
        ("user_id", "slot_id", "field"),
        [(LONE_SURROGATE, "s", "user_id"), ("u", "s\udfff", "slot_id")],
    )
    async def test_the_ledger_refuses_an_unencodable_id_clearly(
        self, redis_url: str, user_id: str, slot_id: str, field: str
    ) -> None:
        """acquire raises InvalidContextError naming the id, not a UnicodeEncodeError."""
        ledger = RedisSlotLedger(redis_url)
        try:
            with pytest.raises(InvalidContextError, match=field):
                await ledger.acquire(user_id, slot_id, 1)
            assert 1 == await ledger.acquire("bob", "s", 1)
        finally:
            await ledger.aclose()
