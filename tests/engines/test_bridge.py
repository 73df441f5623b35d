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
    return asyncio.all_tasks() - {asyncio.current_task()}


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

        assert "<AgentWebSocketBridge users=2 connections=3 closed=False>" == repr(bridge)


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
        assert 32 == len(connection.connection_id)
        assert int(connection.connection_id, 16) >= 0
        assert (connection,) == bridge.connections_for("alice")
        assert f"connection_id={connection.connection_id!r} open" in repr(connection)

    @pytest.mark.asyncio
    async def test_counts_per_user_and_in_total(self, bridge: AgentWebSocketBridge) -> None:
        """connection_count answers per user and for everybody."""
        for user_id in ("alice", "alice", "bob"):
            bridge.register_connection(user_id, FakeSocket())

        assert (2, 1, 0, 3) == (
            bridge.connection_count("alice"),
            bridge.connection_count("bob"),
            bridge.connection_count("carol"),
            bridge.connection_count(),
        )

    @pytest.mark.parametrize("user_id", ["", "  ", None, 7])
    @pytest.mark.asyncio
    async def test_rejects_invalid_user_ids(
        self, bridge: AgentWebSocketBridge, user_id: object
    ) -> None:
        """A blank or non-string user id raises InvalidContextError naming user_id."""
        with pytest.raises(InvalidContextError) as caught:
            bridge.register_connection(user_id, FakeSocket())  # type: ignore[arg-type]

        assert "user_id" == caught.value.field
        assert 0 == bridge.connection_count()

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

        assert (False, "unregistered") == (connection.is_open, connection.close_reason)
        assert () == bridge.connections_for("alice")
        assert (0, 0) == (bridge.get_metrics()["users_connected"], bridge.connection_count())

    @pytest.mark.asyncio
    async def test_unregister_before_the_sender_ever_ran(self) -> None:
        """A connection dropped right after registering closes cleanly, leaving no task."""
        bridge = AgentWebSocketBridge()
        connection = bridge.register_connection("alice", FakeSocket())

        bridge.unregister_connection(connection)
        await connection.wait_closed()
        await bridge.close()

        assert set() == other_tasks()

    def test_unregister_after_the_loop_ended(self) -> None:
        """Unregistering from sync code once the loop is gone still closes the connection."""
        bridge = AgentWebSocketBridge()

        async def register() -> Connection:
            return bridge.register_connection("alice", FakeSocket())

        connection = asyncio.run(register())
        bridge.unregister_connection(connection)

        assert (False, 0) == (connection.is_open, bridge.connection_count())
        assert connection._closed.is_set()

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

        assert (True, True, 1) == (mine.is_open, foreign.is_open, bridge.connection_count())
        await other.close()

    @pytest.mark.asyncio
    async def test_unregistered_socket_receives_nothing_more(
        self, bridge: AgentWebSocketBridge
    ) -> None:
        """After unregistering, events for the user no longer reach that socket."""
        gone, stays = FakeSocket("gone"), FakeSocket("stays")
        bridge.unregister_connection(bridge.register_connection("alice", gone))
        bridge.register_connection("alice", stays)

        assert 1 == await bridge.send_to_user("alice", event(1))
        await bridge.flush()

        assert ([], [1]) == (seqs(gone), seqs(stays))


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

        assert [2, 2, 2] == reached
        assert ([1, 2, 3], [1, 2, 3], []) == (seqs(phone), seqs(laptop), seqs(stranger))
        assert [(3, 3), (3, 3)] == [(c.queued, c.sent) for c in bridge.connections_for("alice")]

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
        assert 50 * 3 * 20 == bridge.get_metrics()["events_sent"]

    @pytest.mark.asyncio
    async def test_user_without_connections_drops_and_counts(
        self, bridge: AgentWebSocketBridge
    ) -> None:
        """An event for a user with no connection reaches nobody and is counted as dropped."""
        bridge.register_connection("bob", bob := FakeSocket())

        assert 0 == await bridge.send_to_user("alice", event(1))
        await bridge.flush()

        assert 1 == bridge.get_metrics()["events_dropped_no_connection"]
        assert [] == bob.messages

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

        assert ([], [1]) == (seqs(blocked), seqs(fast))
        gate.set()
        await bridge.flush()
        assert [1] == seqs(blocked)

    @pytest.mark.asyncio
    async def test_metrics(self, bridge: AgentWebSocketBridge) -> None:
        """The metrics count queued, sent and dropped events and the live connections."""
        bridge.register_connection("alice", FakeSocket())
        bridge.register_connection("alice", FakeSocket())
        bridge.register_connection("bob", FakeSocket())
        await bridge.send_to_user("alice", event(1))
        await bridge.send_to_user("carol", event(1, "carol"))
        await bridge.flush()

        assert {
            "events_queued": 2,
            "events_sent": 2,
            "events_dropped_no_connection": 1,
            "slow_consumer_disconnects": 0,
            "failed_socket_disconnects": 0,
            "active_connections": 3,
            "users_connected": 2,
        } == bridge.get_metrics()


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

        assert [1, 2, 3, 4, 5] == seqs(fast)
        assert ([], True) == (seqs(slow), slow.sending.is_set())
        gate.set()
        await bridge.flush("alice")
        assert [1, 2, 3, 4, 5] == seqs(slow)

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

        assert ([], [1, 2, 3]) == (seqs(slow), seqs(fast))

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

        assert [2, 2, 1, 1] == reached
        assert slow.close_codes == [TRY_AGAIN_LATER]
        assert (False, "slow consumer") == (slow_connection.is_open, slow_connection.close_reason)
        assert [1, 2, 3, 4, 5] == seqs(healthy)
        assert (1, 1) == (
            bridge.get_metrics()["slow_consumer_disconnects"],
            bridge.connection_count("alice"),
        )
        await bridge.close()

    @pytest.mark.asyncio
    async def test_a_burst_lets_a_fast_socket_keep_up(self) -> None:
        """Many events sent back to back overflow no queue of a socket that keeps up."""
        bridge = AgentWebSocketBridge(queue_size=4)
        socket = FakeSocket()
        bridge.register_connection("alice", socket)

        reached = [await bridge.send_to_user("alice", event(n)) for n in range(1, 101)]
        await bridge.flush()

        assert [1] * 100 == reached
        assert seqs(socket) == list(range(1, 101))
        assert 0 == bridge.get_metrics()["slow_consumer_disconnects"]
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
        assert ["Closing a disconnected WebSocket failed"] == [r.message for r in caplog.records]
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

        assert (False, 1) == (
            connection.is_open,
            bridge.get_metrics()["slow_consumer_disconnects"],
        )
        await bridge.close()

    @pytest.mark.asyncio
    async def test_sync_close_is_called_too(self) -> None:
        """A socket whose close() is a plain method is closed with 1013 as well."""

        class SyncClose(FakeSocket):
            def close(self, code: int = 1000) -> None:  # type: ignore[override]
                self.close_codes.append(code)

        bridge = AgentWebSocketBridge(queue_size=1)
        socket = SyncClose(gate=asyncio.Event())
        connection = bridge.register_connection("alice", socket)
        for n in (1, 2, 3):
            await bridge.send_to_user("alice", event(n))
        await connection.wait_closed()

        assert [TRY_AGAIN_LATER] == socket.close_codes
        await bridge.close()


class TestFakeSocket:
    """The reusable FakeSocket records, delays and fails as told."""

    @pytest.mark.asyncio
    async def test_records_messages_and_close_codes(self) -> None:
        """Sent messages and close codes are recorded in order."""
        socket = FakeSocket("tab", delay=0.001)
        await socket.send_json({"type": "agent_started"})
        await socket.send_json(["not", "a", "dict"])
        await socket.close(1001)

        assert ["agent_started"] == socket.types()
        assert (2, [1001], True) == (socket.attempts, socket.close_codes, socket.closed)
        assert "<FakeSocket 'tab' messages=2 closed=True close_codes=[1001]>" == repr(socket)

    @pytest.mark.asyncio
    async def test_fails_after_the_given_number_of_sends(self) -> None:
        """fail_with raises once fail_after messages went through."""
        socket = FakeSocket(fail_with=OSError("gone"), fail_after=1)
        await socket.send_json(1)

        with pytest.raises(OSError, match="gone"):
            await socket.send_json(2)
        assert [1] == socket.messages


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
        assert (False, "send failed", []) == (
            dead_connection.is_open,
            dead_connection.close_reason,
            dead.close_codes,
        )
        assert (1, 1) == (
            bridge.get_metrics()["failed_socket_disconnects"],
            bridge.connection_count("alice"),
        )
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

        assert (False, "send timed out") == (connection.is_open, connection.close_reason)
        assert (
            hanging.close_codes,
            bridge.get_metrics()["failed_socket_disconnects"],
        ) == ([TRY_AGAIN_LATER], 1)
        assert 0 == await bridge.send_to_user("alice", event(2))
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
        assert [False] * 6 == [connection.is_open for connection in connections]
        assert {"bridge closed"} == {connection.close_reason for connection in connections}
        assert (0, 0) == (bridge.connection_count(), bridge.get_metrics()["users_connected"])
        for connection in connections:
            await asyncio.wait_for(connection.wait_closed(), timeout=1)

    @pytest.mark.asyncio
    async def test_close_is_idempotent(self) -> None:
        """Closing twice is harmless; sending afterwards reaches nobody."""
        bridge = AgentWebSocketBridge()
        bridge.register_connection("alice", FakeSocket())

        await bridge.close()
        await bridge.close()

        assert (True, 0) == (bridge.is_closed, await bridge.send_to_user("alice", event(1)))
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
