"""AgentWebSocketBridge: per-user routing, isolation, slow and dead sockets, clean shutdown."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from enginescope.engines.bridge import (
    TRY_AGAIN_LATER,
    AgentWebSocketBridge,
    BridgeClosedError,
    BridgeConfigError,
    Connection,
    InvalidSocketError,
    SocketLike,
    WebSocketBridge,
    WebSocketBridgeError,
)
from enginescope.engines.errors import InvalidContextError
from enginescope.engines.testing import FakeSocket, RecordingBridge
from enginescope.errors import EngineScopeError


def event(n: int, user_id: str = "alice") -> dict[str, Any]:
    return {"type": "agent_thinking", "user_id": user_id, "seq": n}


def seqs(socket: FakeSocket) -> list[int]:
    return [message["seq"] for message in socket.messages]


def other_tasks() -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]


@pytest_asyncio.fixture
async def bridge() -> AsyncIterator[AgentWebSocketBridge]:
    built = AgentWebSocketBridge(queue_size=8, send_timeout_seconds=5.0)
    yield built
    await built.close()
    assert set() == other_tasks()


class TestConstruction:
    """The bridge validates its settings and satisfies the protocols."""

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("queue_size", 0),
            ("queue_size", -1),
            ("queue_size", 1.5),
            ("queue_size", True),
            ("send_timeout_seconds", 0),
            ("send_timeout_seconds", -0.1),
            ("send_timeout_seconds", float("nan")),
            ("send_timeout_seconds", "10"),
        ],
    )
    def test_rejects_settings_that_are_not_positive(self, field: str, value: object) -> None:
        """A non-positive or non-numeric setting is a ValueError naming the setting."""
        with pytest.raises(BridgeConfigError, match=field) as caught:
            AgentWebSocketBridge(**{field: value})  # type: ignore[arg-type]

        assert isinstance(caught.value, ValueError)
        assert isinstance(caught.value, EngineScopeError)
        assert field == caught.value.field

    def test_satisfies_the_bridge_protocol(self) -> None:
        """The bridge and the recording fake are both WebSocketBridges; FakeSocket a socket."""
        assert isinstance(AgentWebSocketBridge(), WebSocketBridge)
        assert isinstance(RecordingBridge(), WebSocketBridge)
        assert isinstance(FakeSocket(), SocketLike)

    @pytest.mark.asyncio
    async def test_repr_counts_users_and_connections(self, bridge: AgentWebSocketBridge) -> None:
        """The repr says how many users and connections the bridge holds."""
        bridge.register_connection("alice", FakeSocket())
        bridge.register_connection("alice", FakeSocket())
        bridge.register_connection("bob", FakeSocket())

        assert repr(bridge) == "<AgentWebSocketBridge users=2 connections=3 closed=False>"


class TestRegistration:
    """Connections are registered per user and unregistered idempotently."""

    @pytest.mark.asyncio
    async def test_register_returns_an_open_connection(self, bridge: AgentWebSocketBridge) -> None:
        """A registered socket gets a Connection with a fresh hex id and no traffic yet."""
        socket = FakeSocket()
        connection = bridge.register_connection("alice", socket)

        assert ("alice", socket, True, 0, 0) == (
            connection.user_id,
            connection.socket,
            connection.is_open,
            connection.queued,
            connection.sent,
        )
        assert len(connection.connection_id) == 32
        assert int(connection.connection_id, 16) >= 0
        assert (connection,) == bridge.connections_for("alice")
        assert f"connection_id={connection.connection_id!r} open" in repr(connection)

    @pytest.mark.asyncio
    async def test_counts_per_user_and_in_total(self, bridge: AgentWebSocketBridge) -> None:
        """connection_count answers per user and for everybody."""
        for user_id in ("alice", "alice", "bob"):
            bridge.register_connection(user_id, FakeSocket())

        assert (
            bridge.connection_count("alice"),
            bridge.connection_count("bob"),
            bridge.connection_count("carol"),
            bridge.connection_count(),
        ) == (2, 1, 0, 3)

    @pytest.mark.parametrize("user_id", ["", "  ", None, 7])
    @pytest.mark.asyncio
    async def test_rejects_invalid_user_ids(
        self, bridge: AgentWebSocketBridge, user_id: object
    ) -> None:
        """A blank or non-string user id raises InvalidContextError naming user_id."""
        with pytest.raises(InvalidContextError) as caught:
            bridge.register_connection(user_id, FakeSocket())  # type: ignore[arg-type]

        assert caught.value.field == "user_id"
        assert bridge.connection_count() == 0

    @pytest.mark.parametrize("socket", [None, object(), "socket"])
    @pytest.mark.asyncio
    async def test_rejects_objects_without_send_json(
        self, bridge: AgentWebSocketBridge, socket: object
    ) -> None:
        """Something that cannot send_json is refused with a TypeError."""
        with pytest.raises(InvalidSocketError, match="send_json") as caught:
            bridge.register_connection("alice", socket)  # type: ignore[arg-type]

        assert isinstance(caught.value, TypeError)

    def test_needs_a_running_loop(self) -> None:
        """Registering from sync code without a loop is a clear error, not a stray task."""
        with pytest.raises(WebSocketBridgeError, match="running event loop"):
            AgentWebSocketBridge().register_connection("alice", FakeSocket())

    @pytest.mark.asyncio
    async def test_register_after_close_is_refused(self) -> None:
        """A closed bridge refuses new connections."""
        bridge = AgentWebSocketBridge()
        await bridge.close()

        with pytest.raises(BridgeClosedError, match="closed"):
            bridge.register_connection("alice", FakeSocket())
        assert isinstance(BridgeClosedError(), RuntimeError)

    @pytest.mark.asyncio
    async def test_unregister_is_idempotent_and_removes_empty_users(
        self, bridge: AgentWebSocketBridge
    ) -> None:
        """Unregistering twice is fine; a user without connections is forgotten."""
        connection = bridge.register_connection("alice", FakeSocket())

        bridge.unregister_connection(connection)
        bridge.unregister_connection(connection)
        await connection.wait_closed()

        assert (connection.is_open, connection.close_reason) == (False, "unregistered")
        assert bridge.connections_for("alice") == ()
        assert (bridge.get_metrics()["users_connected"], bridge.connection_count()) == (0, 0)

    @pytest.mark.asyncio
    async def test_unregister_before_the_sender_ever_ran(self) -> None:
        """A connection dropped right after registering closes cleanly, leaving no task."""
        bridge = AgentWebSocketBridge()
        connection = bridge.register_connection("alice", FakeSocket())

        bridge.unregister_connection(connection)
        await connection.wait_closed()
        await bridge.close()

        assert set() == other_tasks()

    @pytest.mark.asyncio
    async def test_unregister_none_or_foreign_connection_is_a_noop(
        self, bridge: AgentWebSocketBridge
    ) -> None:
        """None, or a connection of another bridge, changes nothing."""
        mine = bridge.register_connection("alice", FakeSocket())
        other = AgentWebSocketBridge()
        foreign = other.register_connection("alice", FakeSocket())

        bridge.unregister_connection(None)
        bridge.unregister_connection(foreign)

        assert (mine.is_open, foreign.is_open, bridge.connection_count()) == (True, True, 1)
        await other.close()

    @pytest.mark.asyncio
    async def test_unregistered_socket_receives_nothing_more(
        self, bridge: AgentWebSocketBridge
    ) -> None:
        """After unregistering, events for the user no longer reach that socket."""
        gone, stays = FakeSocket("gone"), FakeSocket("stays")
        bridge.unregister_connection(bridge.register_connection("alice", gone))
        bridge.register_connection("alice", stays)

        assert await bridge.send_to_user("alice", event(1)) == 1
        await bridge.flush()

        assert (seqs(gone), seqs(stays)) == ([], [1])


class TestDelivery:
    """Each event reaches every socket of its user, in order, and no other user's."""

    @pytest.mark.asyncio
    async def test_reaches_every_socket_of_the_user(self, bridge: AgentWebSocketBridge) -> None:
        """All of a user's sockets get every event, in order; others get none."""
        phone, laptop, stranger = FakeSocket("phone"), FakeSocket("laptop"), FakeSocket("x")
        for user_id, socket in (("alice", phone), ("alice", laptop), ("bob", stranger)):
            bridge.register_connection(user_id, socket)

        reached = [await bridge.send_to_user("alice", event(n)) for n in (1, 2, 3)]
        await bridge.flush()

        assert reached == [2, 2, 2]
        assert (seqs(phone), seqs(laptop), seqs(stranger)) == ([1, 2, 3], [1, 2, 3], [])
        assert [(c.queued, c.sent) for c in bridge.connections_for("alice")] == [(3, 3), (3, 3)]

    @pytest.mark.asyncio
    async def test_isolation_across_many_users_with_concurrent_sends(
        self, bridge: AgentWebSocketBridge
    ) -> None:
        """50 users x 3 sockets sending concurrently: each socket gets exactly its user's events."""
        users = [f"user-{n}" for n in range(50)]
        sockets = {user_id: [FakeSocket(f"{user_id}/{k}") for k in range(3)] for user_id in users}
        for user_id, user_sockets in sockets.items():
            for socket in user_sockets:
                bridge.register_connection(user_id, socket)

        async def run(user_id: str) -> None:
            for n in range(1, 21):
                await bridge.send_to_user(user_id, event(n, user_id))
                if random.random() < 0.5:
                    await asyncio.sleep(0)

        await asyncio.gather(*(run(user_id) for user_id in users))
        await bridge.flush()

        for user_id, user_sockets in sockets.items():
            for socket in user_sockets:
                assert {user_id} == {message["user_id"] for message in socket.messages}
                assert list(range(1, 21)) == seqs(socket)
        assert bridge.get_metrics()["events_sent"] == 50 * 3 * 20

    @pytest.mark.asyncio
    async def test_user_without_connections_drops_and_counts(
        self, bridge: AgentWebSocketBridge
    ) -> None:
        """An event for a user with no connection reaches nobody and is counted as dropped."""
        bridge.register_connection("bob", bob := FakeSocket())

        assert await bridge.send_to_user("alice", event(1)) == 0
        await bridge.flush()

        assert bridge.get_metrics()["events_dropped_no_connection"] == 1
        assert bob.messages == []

    @pytest.mark.asyncio
    async def test_flush_of_one_user_waits_only_for_that_user(
        self, bridge: AgentWebSocketBridge
    ) -> None:
        """flush(user_id) returns once that user's queues are drained, whatever others do."""
        gate = asyncio.Event()
        blocked, fast = FakeSocket("blocked", gate=gate), FakeSocket("fast")
        bridge.register_connection("alice", blocked)
        bridge.register_connection("bob", fast)
        await bridge.send_to_user("alice", event(1))
        await bridge.send_to_user("bob", event(1, "bob"))

        await bridge.flush("bob")

        assert (seqs(blocked), seqs(fast)) == ([], [1])
        gate.set()
        await bridge.flush()
        assert seqs(blocked) == [1]

    @pytest.mark.asyncio
    async def test_metrics(self, bridge: AgentWebSocketBridge) -> None:
        """The metrics count queued, sent and dropped events and the live connections."""
        bridge.register_connection("alice", FakeSocket())
        bridge.register_connection("alice", FakeSocket())
        bridge.register_connection("bob", FakeSocket())
        await bridge.send_to_user("alice", event(1))
        await bridge.send_to_user("carol", event(1, "carol"))
        await bridge.flush()

        assert bridge.get_metrics() == {
            "events_queued": 2,
            "events_sent": 2,
            "events_dropped_no_connection": 1,
            "slow_consumer_disconnects": 0,
            "failed_socket_disconnects": 0,
            "active_connections": 3,
            "users_connected": 2,
        }


class TestSlowConsumers:
    """A slow socket never delays anybody else; an overflowing one is disconnected."""

    @pytest.mark.asyncio
    async def test_blocked_socket_does_not_delay_another_user(
        self, bridge: AgentWebSocketBridge
    ) -> None:
        """While one user's socket is stuck, another user's socket receives everything."""
        gate = asyncio.Event()
        slow, fast = FakeSocket("slow", gate=gate), FakeSocket("fast")
        bridge.register_connection("alice", slow)
        bridge.register_connection("bob", fast)

        for n in (1, 2, 3, 4, 5):
            await bridge.send_to_user("alice", event(n))
            await bridge.send_to_user("bob", event(n, "bob"))
        await bridge.flush("bob")

        assert seqs(fast) == [1, 2, 3, 4, 5]
        assert (seqs(slow), slow.sending.is_set()) == ([], True)
        gate.set()
        await bridge.flush("alice")
        assert seqs(slow) == [1, 2, 3, 4, 5]

    @pytest.mark.asyncio
    async def test_blocked_socket_does_not_delay_the_same_users_other_socket(
        self, bridge: AgentWebSocketBridge
    ) -> None:
        """A stuck tab of a user does not hold back the user's other tab."""
        slow, fast = FakeSocket("slow", gate=asyncio.Event()), FakeSocket("fast")
        bridge.register_connection("alice", slow)
        bridge.register_connection("alice", fast)

        for n in (1, 2, 3):
            await bridge.send_to_user("alice", event(n))
        while len(fast.messages) < 3:
            await asyncio.sleep(0)

        assert (seqs(slow), seqs(fast)) == ([], [1, 2, 3])

    @pytest.mark.asyncio
    async def test_queue_overflow_disconnects_with_try_again_later(self) -> None:
        """A full queue unregisters the slow socket and closes it with code 1013."""
        bridge = AgentWebSocketBridge(queue_size=2)
        slow, healthy = FakeSocket("slow", gate=asyncio.Event()), FakeSocket("healthy")
        slow_connection = bridge.register_connection("alice", slow)
        bridge.register_connection("alice", healthy)
        await bridge.send_to_user("alice", event(1))
        await slow.sending.wait()  # event 1 is stuck in the socket; the queue is empty

        reached = [await bridge.send_to_user("alice", event(n)) for n in (2, 3, 4, 5)]
        await slow_connection.wait_closed()
        await bridge.flush()

        assert reached == [2, 2, 1, 1]
        assert slow.close_codes == [TRY_AGAIN_LATER]
        assert (slow_connection.is_open, slow_connection.close_reason) == (False, "slow consumer")
        assert seqs(healthy) == [1, 2, 3, 4, 5]
        assert (
            bridge.get_metrics()["slow_consumer_disconnects"],
            bridge.connection_count("alice"),
        ) == (1, 1)
        await bridge.close()

    @pytest.mark.asyncio
    async def test_a_burst_lets_a_fast_socket_keep_up(self) -> None:
        """Many events sent back to back overflow no queue of a socket that keeps up."""
        bridge = AgentWebSocketBridge(queue_size=4)
        socket = FakeSocket()
        bridge.register_connection("alice", socket)

        reached = [await bridge.send_to_user("alice", event(n)) for n in range(1, 101)]
        await bridge.flush()

        assert reached == [1] * 100
        assert seqs(socket) == list(range(1, 101))
        assert bridge.get_metrics()["slow_consumer_disconnects"] == 0
        await bridge.close()

    @pytest.mark.asyncio
    async def test_failing_close_is_logged_not_raised(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A socket whose close() raises is still disconnected; the failure is logged."""
        bridge = AgentWebSocketBridge(queue_size=1)
        socket = FakeSocket(gate=asyncio.Event(), close_error=RuntimeError("already gone"))
        connection = bridge.register_connection("alice", socket)
        await bridge.send_to_user("alice", event(1))
        await socket.sending.wait()

        with caplog.at_level(logging.WARNING, logger="enginescope.engines.bridge"):
            for n in (2, 3):
                await bridge.send_to_user("alice", event(n))
            await connection.wait_closed()

        assert socket.close_codes == [TRY_AGAIN_LATER]
        assert [r.message for r in caplog.records] == ["Closing a disconnected WebSocket failed"]
        await bridge.close()

    @pytest.mark.asyncio
    async def test_socket_without_close_is_just_dropped(self) -> None:
        """A SocketLike without close() is unregistered without being closed."""

        class SendOnly:
            def __init__(self) -> None:
                self.gate = asyncio.Event()

            async def send_json(self, data: Any) -> None:
                await self.gate.wait()

        bridge = AgentWebSocketBridge(queue_size=1)
        connection = bridge.register_connection("alice", SendOnly())
        for n in (1, 2, 3):
            await bridge.send_to_user("alice", event(n))
        await connection.wait_closed()

        assert (
            connection.is_open,
            bridge.get_metrics()["slow_consumer_disconnects"],
        ) == (False, 1)
        await bridge.close()


class TestDeadSockets:
    """A socket that fails or hangs is unregistered, never retried forever."""

    @pytest.mark.parametrize("fail_after", [0, 2])
    @pytest.mark.asyncio
    async def test_failing_socket_is_unregistered_and_counted(
        self, bridge: AgentWebSocketBridge, fail_after: int, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A send that raises unregisters that socket only; the user's other socket goes on."""
        dead = FakeSocket(
            "dead", fail_with=ConnectionResetError("peer gone"), fail_after=fail_after
        )
        alive = FakeSocket("alive")
        dead_connection = bridge.register_connection("alice", dead)
        bridge.register_connection("alice", alive)

        with caplog.at_level(logging.WARNING, logger="enginescope.engines.bridge"):
            for n in (1, 2, 3, 4):
                await bridge.send_to_user("alice", event(n))
            await dead_connection.wait_closed()
            await bridge.flush()

        assert (list(range(1, fail_after + 1)), [1, 2, 3, 4]) == (seqs(dead), seqs(alive))
        assert fail_after + 1 == dead.attempts
        assert (
            dead_connection.is_open,
            dead_connection.close_reason,
            dead.close_codes,
        ) == (False, "send failed", [])
        assert (
            bridge.get_metrics()["failed_socket_disconnects"],
            bridge.connection_count("alice"),
        ) == (1, 1)
        [record] = caplog.records
        assert ("alice", dead_connection.connection_id) == (
            record.user_id,  # type: ignore[attr-defined]
            record.connection_id,  # type: ignore[attr-defined]
        )

    @pytest.mark.asyncio
    async def test_hanging_socket_times_out_and_is_unregistered(self) -> None:
        """A send that never completes times out; the socket is unregistered and closed."""
        bridge = AgentWebSocketBridge(send_timeout_seconds=0.01)
        hanging = FakeSocket("hanging", gate=asyncio.Event())
        connection = bridge.register_connection("alice", hanging)

        await bridge.send_to_user("alice", event(1))
        await connection.wait_closed()

        assert (connection.is_open, connection.close_reason) == (False, "send timed out")
        assert (
            hanging.close_codes,
            bridge.get_metrics()["failed_socket_disconnects"],
        ) == ([TRY_AGAIN_LATER], 1)
        assert await bridge.send_to_user("alice", event(2)) == 0
        await bridge.close()


class TestShutdown:
    """close() unregisters everything and leaves no task behind."""

    @pytest.mark.asyncio
    async def test_close_leaves_no_pending_task(self) -> None:
        """After close(), not one task of the bridge is pending, even with stuck sockets."""
        bridge = AgentWebSocketBridge(queue_size=4)
        gate = asyncio.Event()
        connections: list[Connection] = []
        for user_id in ("alice", "bob", "carol"):
            connections.append(bridge.register_connection(user_id, FakeSocket(gate=gate)))
            connections.append(bridge.register_connection(user_id, FakeSocket()))
            await bridge.send_to_user(user_id, event(1, user_id))
        await asyncio.sleep(0)

        await bridge.close()

        assert set() == other_tasks()
        assert [connection.is_open for connection in connections] == [False] * 6
        assert {"bridge closed"} == {connection.close_reason for connection in connections}
        assert (bridge.connection_count(), bridge.get_metrics()["users_connected"]) == (0, 0)
        for connection in connections:
            await asyncio.wait_for(connection.wait_closed(), timeout=1)

    @pytest.mark.asyncio
    async def test_close_is_idempotent(self) -> None:
        """Closing twice is harmless; sending afterwards reaches nobody."""
        bridge = AgentWebSocketBridge()
        bridge.register_connection("alice", FakeSocket())

        await bridge.close()
        await bridge.close()

        assert (bridge.is_closed, await bridge.send_to_user("alice", event(1))) == (True, 0)
        assert "closed=True" in repr(bridge)

    @pytest.mark.asyncio
    async def test_close_waits_for_every_sender_after_many_registrations(self) -> None:
        """Sockets registered and unregistered in bulk leave no sender running."""
        bridge = AgentWebSocketBridge()
        for n in range(100):
            connection = bridge.register_connection(f"user-{n % 7}", FakeSocket())
            if n % 3 == 0:
                bridge.unregister_connection(connection)

        await bridge.close()

        assert set() == other_tasks()
