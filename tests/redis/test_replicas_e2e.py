"""Two real uvicorn replicas of the chat example sharing one real redis-server.

Each test starts a fresh redis-server and two ``python -m examples.chat`` processes with
``ENGINESCOPE_BACKEND=redis`` and the same ``CHAT_SECRET``, so a token issued by one
replica is good on the other; `websockets` clients talk to both.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from ..e2e.conftest import ChatServer
from .conftest import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.e2e]

FIVE = ["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]
Event = dict[str, Any]
StartReplicas = Callable[..., tuple[ChatServer, ChatServer]]


@pytest.fixture
def start_replicas(redis_server: RedisServer, tmp_path: Path) -> Iterator[StartReplicas]:
    """``start_replicas(**env)``: two healthy replicas on ``redis_server``; afterwards both
    are stopped with SIGTERM and must have shut down gracefully, leaving no lease."""
    servers: list[ChatServer] = []

    def start(**env: str) -> tuple[ChatServer, ChatServer]:
        env = {"ENGINESCOPE_BACKEND": "redis", "ENGINESCOPE_REDIS_URL": redis_server.url, **env}
        pair = (
            ChatServer(tmp_path / f"replica-{len(servers) + 1}.log", env),
            ChatServer(tmp_path / f"replica-{len(servers) + 2}.log", env),
        )
        servers.extend(pair)
        for server in pair:
            server.wait_healthy()
        return pair

    yield start
    codes = [server.terminate() for server in servers]
    assert [] == [server for server in servers if server.process.poll() is None]
    assert set(codes) <= {0, -signal.SIGTERM}, [server.log for server in servers]
    assert all("Application shutdown complete." in server.log for server in servers)
    with redis.Redis.from_url(redis_server.url) as client:
        assert [] == client.keys("enginescope:slots:*")


@pytest.fixture
async def sockets() -> AsyncIterator[Callable[..., Any]]:
    """``await open_socket(server, token, resume_from=None)``: an authenticated socket and
    its ``session`` greeting; every socket is closed afterwards."""
    opened: list[ClientConnection] = []

    async def open_socket(
        server: ChatServer, token: str, resume_from: object = None
    ) -> tuple[ClientConnection, Event]:
        socket = await connect(server.ws_url)
        opened.append(socket)
        auth: Event = {"type": "auth", "token": token}
        if resume_from is not None:
            auth["resume_from"] = resume_from
        await socket.send(json.dumps(auth))
        return socket, await receive(socket)

    yield open_socket
    for socket in opened:
        await socket.close()


async def receive(socket: ClientConnection, timeout: float = 10.0) -> Event:
    return dict(json.loads(await asyncio.wait_for(socket.recv(), timeout)))


async def receive_until_completed(socket: ClientConnection, runs: int = 1) -> list[Event]:
    """Every frame until ``runs`` runs completed, then anything arriving just after."""
    events: list[Event] = []
    while sum(event["type"] == "agent_completed" for event in events) < runs:
        events.append(await receive(socket))
    await expect_silence(socket)
    return events


async def expect_silence(socket: ClientConnection, seconds: float = 0.5) -> None:
    try:
        frame = await receive(socket, timeout=seconds)
    except TimeoutError:
        return
    pytest.fail(f"unexpected frame {frame}")


async def send_message(socket: ClientConnection, text: str) -> None:
    await socket.send(json.dumps({"type": "message", "text": text}))


def by_run(events: list[Event]) -> dict[str, list[str]]:
    """Each run's event types, but its streamed text (agent_text_delta)."""
    runs: dict[str, list[str]] = {}
    for event in events:
        if event["type"] != "agent_text_delta":
            runs.setdefault(event["run_id"], []).append(event["type"])
    return runs


def metrics(server: ChatServer) -> dict[str, Any]:
    return dict(httpx.get(f"{server.url}/api/metrics", timeout=5).json())


class TestEventsAcrossReplicas:
    async def test_a_run_on_replica_2_reaches_the_users_sockets_on_both_replicas_only(
        self, start_replicas: StartReplicas, sockets: Callable[..., Any]
    ) -> None:
        """Alice holds a socket on each replica and runs on replica 2 while Bob runs on
        replica 1: both of Alice's sockets get exactly her five events, Bob only his."""
        replica_1, replica_2 = start_replicas(CHAT_TOOL_DELAY_SECONDS="0.05")
        alice, bob = replica_1.login("Alice"), replica_1.login("Bob")
        alice_1, _ = await sockets(replica_1, alice["token"])
        alice_2, alice_session = await sockets(replica_2, alice["token"])
        bob_1, _ = await sockets(replica_1, bob["token"])
        await send_message(alice_2, "2 + 3 * 4")
        await send_message(bob_1, "7 * 6")
        seen_1, seen_2, seen_bob = await asyncio.gather(
            receive_until_completed(alice_1),
            receive_until_completed(alice_2),
            receive_until_completed(bob_1),
        )
        assert [FIVE] == list(by_run(seen_1).values())
        assert seen_1 == seen_2
        assert {alice["user_id"]} == {event["user_id"] for event in seen_1}
        assert {alice_session["thread_id"]} == {event["thread_id"] for event in seen_1}
        assert [FIVE] == list(by_run(seen_bob).values())
        assert {bob["user_id"]} == {event["user_id"] for event in seen_bob}
        assert "7 * 6 = 42" == seen_bob[-1]["data"]["result"]
        assert (1, 1) == (
            metrics(replica_1)["total_engines_created"],  # Bob's run
            metrics(replica_2)["total_engines_created"],  # Alice's run
        )


class TestLimitAcrossReplicas:
    async def test_a_run_on_replica_1_makes_a_message_on_replica_2_hit_the_limit(
        self, start_replicas: StartReplicas, sockets: Callable[..., Any]
    ) -> None:
        """One engine per user: while Alice's slow run is active on replica 1, her message
        on replica 2 gets ``engine_limit``; once it completes, replica 2 runs hers."""
        replica_1, replica_2 = start_replicas(
            ENGINESCOPE_MAX_ENGINES_PER_USER="1", CHAT_TOOL_DELAY_SECONDS="1"
        )
        token = replica_1.login("Alice")["token"]
        alice_1, _ = await sockets(replica_1, token)
        alice_2, _ = await sockets(replica_2, token)
        await send_message(alice_1, "a slow one")
        assert "agent_started" == (await receive(alice_2))["type"]
        await send_message(alice_2, "one too many")
        seen_1, seen_2 = await asyncio.gather(
            receive_until_completed(alice_1), receive_until_completed(alice_2)
        )
        errors = [event for event in seen_2 if event["type"] == "error"]
        assert ["engine_limit"] == [error["code"] for error in errors]
        assert "(1/1)" in errors[0]["message"]
        assert [FIVE] == list(by_run(seen_1).values())
        assert [FIVE[1:]] == list(by_run([e for e in seen_2 if e["type"] != "error"]).values())
        assert (0, 1) == (
            metrics(replica_1)["user_limit_rejections"],
            metrics(replica_2)["user_limit_rejections"],
        )
        await send_message(alice_2, "my turn now")
        assert [FIVE] == list(by_run(await receive_until_completed(alice_2)).values())


class TestResumeOnTheOtherReplica:
    async def test_a_socket_that_reconnects_to_the_other_replica_loses_nothing(
        self, start_replicas: StartReplicas, sockets: Callable[..., Any]
    ) -> None:
        """Alice's socket on replica 1 drops after the first event of a run on replica 2
        and misses the rest and a whole second run; reconnecting to replica 2 with the
        last ``stream_id`` it saw, it receives exactly the missed events, in order."""
        replica_1, replica_2 = start_replicas(CHAT_TOOL_DELAY_SECONDS="0.3")
        token = replica_1.login("Alice")["token"]
        dropped, _ = await sockets(replica_1, token)
        sender, _ = await sockets(replica_2, token)
        await send_message(sender, "count these words")
        last_seen = await receive(dropped)
        await dropped.close()
        await send_message(sender, "and these too")
        everything = await receive_until_completed(sender, runs=2)
        resumed, session = await sockets(replica_2, token, last_seen["stream_id"])
        replayed = await receive_until_completed(resumed, runs=2)
        assert "session" == session["type"]
        assert last_seen == everything[0]
        assert everything[1:] == replayed
        assert [FIVE, FIVE] == list(by_run(everything).values())
        stream_ids = [event["stream_id"] for event in everything]
        assert sorted(stream_ids, key=lambda s: tuple(map(int, s.split("-")))) == stream_ids

    @pytest.mark.parametrize("resume_from", ["yesterday", "1-2-3", 42, {"seq": 1}])
    async def test_a_malformed_resume_from_is_refused_with_an_error_event_and_1008(
        self, start_replicas: StartReplicas, sockets: Callable[..., Any], resume_from: object
    ) -> None:
        """A ``resume_from`` that is no stream id: an ``invalid_resume`` error, then 1008;
        the replica goes on serving."""
        replica_1, _ = start_replicas()
        token = replica_1.login("Mallory")["token"]
        socket, refusal = await sockets(replica_1, token, resume_from)
        with pytest.raises(ConnectionClosed) as closed:
            await receive(socket)
        assert ("error", "invalid_resume") == (refusal["type"], refusal["code"])
        assert "resume_from" in refusal["message"]
        assert closed.value.rcvd is not None
        assert 1008 == closed.value.rcvd.code
        _, session = await sockets(replica_1, token)
        assert "session" == session["type"]


async def send_until_admitted(socket: ClientConnection, text: str, timeout: float = 15.0) -> Event:
    """Send ``text`` again while the answer is ``backend_unavailable``; the first other
    frame (``agent_started`` once the replica reaches Redis again)."""
    async with asyncio.timeout(timeout):
        while True:
            await send_message(socket, text)
            frame = await receive(socket)
            if frame.get("code") != "backend_unavailable":
                return frame
            await asyncio.sleep(0.2)


class TestRedisOutage:
    async def test_while_redis_is_down_runs_and_sockets_are_refused_then_all_recovers(
        self,
        start_replicas: StartReplicas,
        sockets: Callable[..., Any],
        redis_server: RedisServer,
    ) -> None:
        """Redis killed: Alice's message gets ``backend_unavailable`` and admits no engine;
        Bob's new socket cannot subscribe (``backend_unavailable``, then 1013) while Alice's
        open sockets stay open; Redis back: a run on replica 2 reaches Alice's sockets on
        both replicas again, with no restart of either."""
        replica_1, replica_2 = start_replicas(
            CHAT_TOOL_DELAY_SECONDS="0.05", CHAT_SUBSCRIBE_TIMEOUT_SECONDS="1"
        )
        token, bob_token = (replica_1.login(name)["token"] for name in ("Alice", "Bob"))
        alice_1, _ = await sockets(replica_1, token)
        alice_2, _ = await sockets(replica_2, token)
        redis_server.kill()
        await send_message(alice_2, "anyone there?")
        refused = await receive(alice_2)
        late, refusal = await sockets(replica_1, bob_token)
        with pytest.raises(ConnectionClosed) as closed:
            await receive(late)
        assert ("error", "backend_unavailable") == (refused["type"], refused["code"])
        assert ("error", "backend_unavailable") == (refusal["type"], refusal["code"])
        assert closed.value.rcvd is not None
        assert 1013 == closed.value.rcvd.code
        assert 0 == metrics(replica_2)["total_engines_created"]
        redis_server.start()
        started = await send_until_admitted(alice_2, "2 + 2")
        seen_1, seen_2 = await asyncio.gather(
            receive_until_completed(alice_1), receive_until_completed(alice_2)
        )
        assert [FIVE] == list(by_run([started, *seen_2]).values())
        assert [FIVE] == list(by_run(seen_1).values())
        assert "2 + 2 = 4" == seen_1[-1]["data"]["result"]
