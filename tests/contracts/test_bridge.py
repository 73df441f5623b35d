"""The connection-bridge contract: whatever the backend, a user's events reach that
user's sockets, in order, and nobody else's; a dead socket never blocks the others."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from enginescope.engines import (
    BridgeClosedError,
    Connection,
    ConnectionBridge,
    ResumableBridge,
    WebSocketBridge,
)
from enginescope.engines.testing import FakeSocket


async def attach(bridge: ConnectionBridge, user_id: str, socket: Any) -> Connection:
    """Register ``socket`` the way the gateway does: through ``connect`` when resumable."""
    if bridge.resumable:
        assert isinstance(bridge, ResumableBridge)
        return await bridge.connect(user_id, socket)
    return bridge.register_connection(user_id, socket)


def event(user_id: str, seq: int) -> dict[str, Any]:
    return {"type": "agent_thinking", "user_id": user_id, "run_id": "r-1", "seq": seq}


def seqs(socket: FakeSocket) -> list[int]:
    return [message["seq"] for message in socket.messages]


class TestProtocol:
    def test_it_is_a_connection_bridge(self, bridge: ConnectionBridge) -> None:
        """Every bridge satisfies both protocols and says whether it can resume."""
        assert isinstance(bridge, WebSocketBridge)
        assert isinstance(bridge, ConnectionBridge)
        assert isinstance(bridge.resumable, bool)
        assert bridge.resumable == isinstance(bridge, ResumableBridge)


class TestDelivery:
    async def test_events_reach_the_users_sockets_in_order(self, bridge: ConnectionBridge) -> None:
        """Every socket of the user gets every event once, in the order sent."""
        sockets = [FakeSocket(), FakeSocket()]
        for socket in sockets:
            await attach(bridge, "alice", socket)
        for seq in range(1, 21):
            assert await bridge.send_to_user("alice", event("alice", seq)) >= 1
        await bridge.flush()
        assert [list(range(1, 21))] * 2 == [seqs(socket) for socket in sockets]

    async def test_users_never_see_each_others_events(self, bridge: ConnectionBridge) -> None:
        """Alice's events reach only Alice; Bob's only Bob."""
        alice, bob = FakeSocket(), FakeSocket()
        await attach(bridge, "alice", alice)
        await attach(bridge, "bob", bob)
        for seq in range(1, 6):
            await bridge.send_to_user("alice", event("alice", seq))
            await bridge.send_to_user("bob", event("bob", seq * 10))
        await bridge.flush()
        assert {"alice"} == {message["user_id"] for message in alice.messages}
        assert {"bob"} == {message["user_id"] for message in bob.messages}
        assert ([1, 2, 3, 4, 5], [10, 20, 30, 40, 50]) == (seqs(alice), seqs(bob))

    async def test_a_user_without_sockets_is_not_an_error(self, bridge: ConnectionBridge) -> None:
        """Sending to a user with no connection returns a count and raises nothing."""
        reached = await bridge.send_to_user("nobody", event("nobody", 1))
        assert isinstance(reached, int)
        assert reached >= 0


class TestConnections:
    async def test_an_unregistered_socket_gets_nothing_more(self, bridge: ConnectionBridge) -> None:
        """After unregister_connection, the socket receives no further event."""
        kept, dropped = FakeSocket(), FakeSocket()
        await attach(bridge, "alice", kept)
        gone = await attach(bridge, "alice", dropped)
        await bridge.send_to_user("alice", event("alice", 1))
        await bridge.flush()
        bridge.unregister_connection(gone)
        bridge.unregister_connection(gone)  # idempotent
        bridge.unregister_connection(None)
        await bridge.send_to_user("alice", event("alice", 2))
        await bridge.flush()
        assert ([1, 2], [1]) == (seqs(kept), seqs(dropped))

    async def test_a_failing_socket_does_not_block_the_others(
        self, bridge: ConnectionBridge
    ) -> None:
        """A socket whose send raises is dropped; the user's other socket keeps receiving."""
        healthy, broken = FakeSocket(), FakeSocket(fail_with=ConnectionResetError("gone"))
        await attach(bridge, "alice", healthy)
        await attach(bridge, "alice", broken)
        for seq in range(1, 4):
            await bridge.send_to_user("alice", event("alice", seq))
        await bridge.flush()
        await asyncio.sleep(0)
        assert [1, 2, 3] == seqs(healthy)
        assert [] == seqs(broken)

    async def test_a_closed_bridge_refuses_new_sockets(self, bridge: ConnectionBridge) -> None:
        """After close, registering a socket raises BridgeClosedError."""
        close = getattr(bridge, "aclose", None) or bridge.close  # type: ignore[attr-defined]
        await close()
        with pytest.raises(BridgeClosedError):
            bridge.register_connection("alice", FakeSocket())
