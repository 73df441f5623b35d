"""RedisWebSocketBridge: events travel through Redis streams to the replica holding the socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
import redis.asyncio as aioredis
from enginescope.engines import (
    AgentWebSocketBridge,
    UserExecutionContext,
    UserWebSocketEmitter,
    WebSocketBridge,
)
from enginescope.engines.errors import BridgeClosedError, BridgeConfigError, InvalidResumeTokenError
from enginescope.engines.redis import RedisWebSocketBridge
from enginescope.engines.testing import FakeSocket

from tests.redis.conftest import BridgeMaker

if TYPE_CHECKING:
    from conftest import RedisServer, ReplicaMaker

pytestmark = [pytest.mark.redis]

ContextMaker = Callable[..., UserExecutionContext]
RUN_TYPES = [
    "agent_started",
    "agent_thinking",
    "tool_executing",
    "tool_completed",
    "agent_completed",
]


async def _emit(bridge: RedisWebSocketBridge, user_id: str, count: int, run_id: str = "r") -> None:
    emitter = UserWebSocketEmitter(user_id, "t", run_id, bridge)
    for step in range(count):
        assert 1 == await emitter.notify_agent_thinking("agent", f"step {step}", step=step)


async def _received(socket: FakeSocket, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    async with asyncio.timeout(timeout):
        while len(socket.messages) < count:
            await asyncio.sleep(0.005)
    return list(socket.messages)


def _steps(messages: list[dict[str, Any]]) -> list[int]:
    return [message["data"]["step"] for message in messages]


class TestCrossReplicaDelivery:
    async def test_a_run_on_replica_b_reaches_the_socket_on_replica_a(
        self, make_replica: ReplicaMaker, make_context: ContextMaker
    ) -> None:
        """The user's socket is on A, the engine on B: every event arrives, in order."""
        a, b = make_replica("A"), make_replica("B")
        socket = FakeSocket("on-A")
        await a.bridge.connect("u-1", socket)
        async with b.factory.user_execution_scope(make_context("u-1", run_id="run-1")) as engine:
            result = await engine.execute_agent("demo", "hello there world")
        assert result.success
        messages = await _received(socket, 5)
        assert RUN_TYPES == socket.types()
        assert [1, 2, 3, 4, 5] == [message["seq"] for message in messages]
        assert {("u-1", "run-1")} == {(m["user_id"], m["run_id"]) for m in messages}
        assert all(isinstance(message["stream_id"], str) for message in messages)

    async def test_users_never_receive_each_others_events(
        self, make_replica: ReplicaMaker, make_context: ContextMaker
    ) -> None:
        """Concurrent runs of X and Y on B: X's sockets get only X's events, Y's only Y's."""
        a, b = make_replica("A"), make_replica("B")
        sockets = {user: FakeSocket(user) for user in ("user-x", "user-y")}
        for user, socket in sockets.items():
            await a.bridge.connect(user, socket)

        async def run(user: str) -> None:
            async with b.factory.user_execution_scope(make_context(user)) as engine:
                for _ in range(3):
                    assert (await engine.execute_agent("demo", f"hi from {user}")).success

        await asyncio.gather(run("user-x"), run("user-y"), run("user-x"), run("user-y"))
        await a.bridge.flush()
        for user, socket in sockets.items():
            assert 30 == len(socket.messages)
            assert {user} == {message["user_id"] for message in socket.messages}

    async def test_every_replica_holding_a_socket_of_the_user_delivers(
        self, make_bridge: BridgeMaker
    ) -> None:
        """Two tabs of one user, on different replicas, both receive the events."""
        a, b, c = make_bridge(), make_bridge(), make_bridge()
        on_a, on_b = FakeSocket("a"), FakeSocket("b")
        await a.connect("u-1", on_a)
        await b.connect("u-1", on_b)
        await _emit(c, "u-1", 4)
        assert [0, 1, 2, 3] == _steps(await _received(on_a, 4))
        assert [0, 1, 2, 3] == _steps(await _received(on_b, 4))

    async def test_a_socket_receives_only_events_published_after_it_subscribed(
        self, make_bridge: BridgeMaker
    ) -> None:
        """Without a resume token, a new socket starts with the next event (no history)."""
        a, b = make_bridge(), make_bridge()
        await _emit(b, "u-1", 3, run_id="old")
        socket = FakeSocket()
        await a.connect("u-1", socket)
        await _emit(b, "u-1", 2, run_id="new")
        await a.flush()
        assert ["new", "new"] == [message["run_id"] for message in socket.messages]

    async def test_register_connection_is_a_drop_in_for_the_local_bridge(
        self, make_bridge: BridgeMaker
    ) -> None:
        """The synchronous register_connection works like AgentWebSocketBridge's."""
        a, b = make_bridge(), make_bridge()
        socket = FakeSocket()
        connection = a.register_connection("u-1", socket)
        await a.wait_subscribed(connection)
        await _emit(b, "u-1", 2)
        assert [0, 1] == _steps(await _received(socket, 2))
        assert 1 == a.connection_count("u-1")
        a.unregister_connection(connection)
        assert 0 == a.connection_count()

    async def test_a_new_user_joining_wakes_the_blocked_reader(
        self, make_bridge: BridgeMaker
    ) -> None:
        """A reader blocked on other users' streams starts following a new user at once."""
        a, b = make_bridge(block_ms=60_000), make_bridge()
        await a.connect("u-1", FakeSocket())
        await asyncio.sleep(0.05)  # the reader is now blocked in XREAD on u-1 only
        socket = FakeSocket()
        async with asyncio.timeout(2):
            await a.connect("u-2", socket)
        await _emit(b, "u-2", 1)
        await _received(socket, 1, timeout=2)

    async def test_a_forged_entry_for_another_user_is_dropped(
        self, make_bridge: BridgeMaker, redis_client: aioredis.Redis
    ) -> None:
        """An entry in X's stream that names user Y is never delivered, and is counted."""
        a = make_bridge()
        socket = FakeSocket()
        await a.connect("user-x", socket)
        forged = {"type": "agent_thinking", "user_id": "user-y", "seq": 1}
        await redis_client.xadd("enginescope:events:user-x", {"event": json.dumps(forged)})
        await redis_client.xadd("enginescope:events:user-x", {"event": "not json"})
        await a.flush()
        assert [] == socket.messages
        assert 2 == a.get_metrics()["isolation_drops"]


class TestResume:
    async def test_reconnecting_with_the_last_stream_id_loses_nothing(
        self, make_bridge: BridgeMaker
    ) -> None:
        """Events published while the client was away arrive after resume, once, in order."""
        a, b = make_bridge(), make_bridge()
        first = FakeSocket("first")
        connection = await a.connect("u-1", first)
        await _emit(b, "u-1", 3)
        seen = await _received(first, 3)
        a.unregister_connection(connection)
        await _emit(b, "u-1", 4, run_id="r2")
        second = FakeSocket("second")
        await a.connect("u-1", second, resume_from=seen[-1]["stream_id"])
        await _emit(b, "u-1", 1, run_id="r3")
        await a.flush()
        assert ["r2"] * 4 + ["r3"] == [message["run_id"] for message in second.messages]
        assert (4, 0) == (a.get_metrics()["replayed"], a.get_metrics()["duplicates_skipped"])

    async def test_resuming_on_another_replica_loses_nothing(
        self, make_bridge: BridgeMaker
    ) -> None:
        """The client reconnects through the load balancer to a different replica."""
        a, b, c = make_bridge(), make_bridge(), make_bridge()
        first = FakeSocket("on-A")
        await a.connect("u-1", first)
        await _emit(c, "u-1", 2)
        last = (await _received(first, 2))[-1]
        await a.close()
        await _emit(c, "u-1", 3, run_id="while-away")
        second = FakeSocket("on-B")
        await b.connect("u-1", second, resume_from=last["stream_id"])
        assert ["while-away"] * 3 == [m["run_id"] for m in await _received(second, 3)]

    async def test_a_resuming_tab_does_not_duplicate_events_for_a_live_tab(
        self, make_bridge: BridgeMaker
    ) -> None:
        """Rewinding the user's stream for one socket sends the replay to that socket only."""
        a, b = make_bridge(), make_bridge()
        live, resumed = FakeSocket("live"), FakeSocket("resumed")
        await a.connect("u-1", live)
        await _emit(b, "u-1", 5)
        first = (await _received(live, 5))[0]
        await a.connect("u-1", resumed, resume_from=first["stream_id"])
        await _emit(b, "u-1", 2, run_id="after")
        await a.flush()
        assert [0, 1, 2, 3, 4, 0, 1] == _steps(live.messages)
        assert [1, 2, 3, 4, 0, 1] == _steps(resumed.messages)
        metrics = a.get_metrics()
        assert (4, 4) == (metrics["replayed"], metrics["duplicates_skipped"])

    @pytest.mark.parametrize(
        ("options", "field"),
        [
            ({"resume_from": "yesterday"}, "resume_from"),
            ({"resume_from": "1-2-3"}, "resume_from"),
        ],
    )
    async def test_a_malformed_resume_token_is_a_clear_error(
        self, make_bridge: BridgeMaker, options: dict[str, Any], field: str
    ) -> None:
        """A bad resume_from is refused, naming the argument, and registers nothing."""
        bridge = make_bridge()
        with pytest.raises(InvalidResumeTokenError, match=field):
            bridge.register_connection("u-1", FakeSocket(), **options)
        assert 0 == bridge.connection_count()


class TestStreams:
    async def test_streams_are_bounded_and_expire_after_the_replay_window(
        self, make_bridge: BridgeMaker, redis_client: aioredis.Redis
    ) -> None:
        """A user's stream keeps about stream_maxlen events and expires after the window."""
        bridge = make_bridge(stream_maxlen=10, replay_window_seconds=30)
        await _emit(bridge, "u-1", 500)
        assert await redis_client.xlen("enginescope:events:u-1") < 500
        assert 0 < await redis_client.pttl("enginescope:events:u-1") <= 30_000

    async def test_send_to_user_publishes_and_counts(self, make_bridge: BridgeMaker) -> None:
        """send_to_user returns 1 once Redis holds the event, even with nobody connected."""
        bridge = make_bridge()
        assert isinstance(bridge, WebSocketBridge)
        assert 1 == await bridge.send_to_user("u-1", {"type": "x", "user_id": "u-1"})
        assert 1 == bridge.get_metrics()["published"]

    async def test_an_unencodable_event_is_counted_not_raised(
        self, make_bridge: BridgeMaker
    ) -> None:
        """An event json cannot encode (a cycle) is dropped and counted."""
        bridge = make_bridge()
        event: dict[str, Any] = {"type": "x"}
        event["self"] = event
        assert 0 == await bridge.send_to_user("u-1", event)
        assert 1 == bridge.get_metrics()["undelivered_unencodable"]


class TestLifecycle:
    async def test_close_leaves_no_task_and_refuses_new_connections(
        self, make_bridge: BridgeMaker
    ) -> None:
        """close() stops the reader and the sockets' senders; it is idempotent."""
        before = asyncio.all_tasks()
        bridge = make_bridge()
        await bridge.start()
        await bridge.start()
        await bridge.connect("u-1", FakeSocket())
        await bridge.close()
        await bridge.close()
        assert before == asyncio.all_tasks()
        assert (bridge.is_closed, bridge.get_metrics()["reader_running"]) == (True, False)
        with pytest.raises(BridgeClosedError):
            bridge.register_connection("u-1", FakeSocket())
        assert 0 == await bridge.send_to_user("u-1", {"type": "x"})
        assert 1 == bridge.get_metrics()["undelivered_closed"]

    async def test_a_local_bridge_passed_in_stays_open_without_our_sockets(
        self, make_bridge: BridgeMaker
    ) -> None:
        """close() unregisters its own sockets from a caller's local bridge but keeps it."""
        local = AgentWebSocketBridge()
        bridge = make_bridge(local=local)
        own = FakeSocket()
        local.register_connection("u-1", own)
        await bridge.connect("u-1", FakeSocket())
        await bridge.close()
        assert (1, False) == (local.connection_count("u-1"), local.is_closed)
        await local.close()

    async def test_a_disconnected_user_is_no_longer_followed(
        self, make_bridge: BridgeMaker
    ) -> None:
        """Once a user's last socket leaves, the reader stops reading their stream."""
        a, b = make_bridge(block_ms=50), make_bridge()
        connection = await a.connect("u-1", FakeSocket())
        assert 1 == a.get_metrics()["followed_users"]
        a.unregister_connection(connection)
        await _emit(b, "u-1", 1)
        async with asyncio.timeout(2):
            while a.get_metrics()["followed_users"]:
                await asyncio.sleep(0.01)

    async def test_repr_and_metrics_describe_the_bridge(
        self, make_bridge: BridgeMaker, redis_url: str
    ) -> None:
        """The repr names the server and the gauges; metrics carry the local bridge's keys."""
        bridge = make_bridge()
        await bridge.connect("u-1", FakeSocket())
        assert (
            f"<RedisWebSocketBridge url={redis_url!r} followed_users=1 connections=1 closed=False>"
        ) == repr(bridge)
        metrics = bridge.get_metrics()
        assert AgentWebSocketBridge().get_metrics().keys() <= metrics.keys()
        assert (1, 1) == (metrics["active_connections"], metrics["users_connected"])

    @pytest.mark.parametrize(
        ("option", "value"),
        [
            ("stream_maxlen", 0),
            ("block_ms", -1),
            ("read_count", True),
            ("replay_window_seconds", 0),
        ],
    )
    def test_rejects_bad_settings(self, option: str, value: object) -> None:
        """A non-positive setting is a clear error naming it."""
        with pytest.raises(BridgeConfigError, match=option):
            RedisWebSocketBridge("redis://127.0.0.1:1/0", **{option: value})


class TestRedisDown:
    async def test_events_are_counted_undelivered_and_never_raise(
        self, make_bridge: BridgeMaker, redis_server: RedisServer
    ) -> None:
        """With Redis gone, send_to_user returns 0 and counts the event; agents go on."""
        bridge = make_bridge()
        redis_server.stop()
        emitter = UserWebSocketEmitter("u-1", "t", "r", bridge)
        assert 0 == await emitter.notify_agent_thinking("agent", "x")
        assert (1, 1) == (
            emitter.events_undelivered,
            bridge.get_metrics()["undelivered_redis_down"],
        )

    async def test_the_reader_recovers_by_itself_when_redis_returns(
        self, make_bridge: BridgeMaker, redis_server: RedisServer
    ) -> None:
        """A reader whose Redis restarts keeps its sockets and delivers again, unaided."""
        a, b = make_bridge(block_ms=100), make_bridge()
        socket = FakeSocket()
        await a.connect("u-1", socket)
        redis_server.kill()
        await asyncio.sleep(0.3)
        assert a.get_metrics()["reader_errors"] > 0
        redis_server.start()
        async with asyncio.timeout(10):
            while not await b.send_to_user("u-1", {"type": "x", "user_id": "u-1", "data": {}}):
                await asyncio.sleep(0.05)
        await _received(socket, 1, timeout=10)
        assert a.get_metrics()["reader_running"]
