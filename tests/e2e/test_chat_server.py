"""The chat example over real sockets: a uvicorn subprocess and `websockets` clients."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from examples.chat.auth import TokenSigner

from .conftest import SECRET, ChatServer, StartServer

pytestmark = pytest.mark.e2e

FIVE = ["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]
AGENT_EVENTS = {*FIVE, "agent_error", "agent_stopped"}


async def open_session(server: ChatServer, name: str) -> tuple[ClientConnection, dict[str, Any]]:
    """Log in, connect, authenticate with the first frame; returns the socket and session."""
    token = server.login(name)["token"]
    socket = await connect(server.ws_url)
    await socket.send(json.dumps({"type": "auth", "token": token}))
    session = await receive(socket)
    assert "session" == session["type"]
    return socket, session


async def receive(socket: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    return dict(json.loads(await asyncio.wait_for(socket.recv(), timeout)))


async def receive_runs(socket: ClientConnection, runs: int) -> list[dict[str, Any]]:
    """Every frame until ``runs`` runs completed, then anything arriving just after."""
    events: list[dict[str, Any]] = []
    while sum(event["type"] == "agent_completed" for event in events) < runs:
        events.append(await receive(socket))
    with pytest.raises(TimeoutError):
        events.append(await receive(socket, timeout=0.3))
    return events


async def close_code(socket: ClientConnection, timeout: float = 10.0) -> int:
    """Read until the server closes; the close code it sent."""

    async def drain() -> None:
        while True:
            await socket.recv()

    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(drain(), timeout)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


def by_run(events: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Each run's event types, but its streamed text (see :func:`streamed_text`)."""
    runs: dict[str, list[str]] = {}
    for event in events:
        if event["type"] != "agent_text_delta":
            runs.setdefault(event["run_id"], []).append(event["type"])
    return runs


def streamed_text(events: list[dict[str, Any]]) -> dict[str, tuple[str, Any]]:
    """Each completed run's joined text deltas and its result."""
    text: dict[str, str] = {}
    for event in events:
        if event["type"] == "agent_text_delta":
            text[event["run_id"]] = text.get(event["run_id"], "") + event["data"]["delta"]
    return {
        event["run_id"]: (text.get(event["run_id"], ""), event["data"]["result"])
        for event in events
        if event["type"] == "agent_completed"
    }


class TestTwoUsers:
    async def test_each_user_receives_exactly_their_own_five_events_per_message(
        self, chat_server: ChatServer
    ) -> None:
        """Alice and Bob send two messages each at once; each sees only their own runs."""
        (alice, alice_session), (bob, bob_session) = await asyncio.gather(
            open_session(chat_server, "Alice"), open_session(chat_server, "Bob")
        )
        async with alice, bob:
            for socket, texts in ((alice, ("2 + 3 * 4", "hello there")), (bob, ("7 * 6", "hi"))):
                for text in texts:
                    await socket.send(json.dumps({"type": "message", "text": text}))
            alice_events, bob_events = await asyncio.gather(
                receive_runs(alice, 2), receive_runs(bob, 2)
            )
        for events, session in ((alice_events, alice_session), (bob_events, bob_session)):
            assert [FIVE, FIVE] == list(by_run(events).values())
            for streamed, result in streamed_text(events).values():
                assert result == streamed
            assert {session["user_id"]} == {event["user_id"] for event in events}
            assert {session["thread_id"]} == {event["thread_id"] for event in events}
        assert not set(by_run(alice_events)) & set(by_run(bob_events))
        answers = [e["data"]["result"] for e in bob_events if e["type"] == "agent_completed"]
        assert "7 * 6 = 42" in answers

    async def test_a_user_cannot_use_another_users_thread_id(self, chat_server: ChatServer) -> None:
        """Bob naming Alice's thread gets an error event; nothing runs."""
        (alice, alice_session), (bob, _) = await asyncio.gather(
            open_session(chat_server, "Alice"), open_session(chat_server, "Bob")
        )
        async with alice, bob:
            message = {"type": "message", "text": "hi", "thread_id": alice_session["thread_id"]}
            await bob.send(json.dumps(message))
            error = await receive(bob)
            with pytest.raises(TimeoutError):
                await receive(alice, timeout=0.3)
        assert ("error", "unknown_thread") == (error["type"], error["code"])


class TestAuthentication:
    @staticmethod
    def forged_tokens(server: ChatServer) -> dict[str, str]:
        genuine = server.login("Mallory")["token"]
        version, payload, signature = genuine.split(".")
        other_secret = TokenSigner("another-secret-of-at-least-32-characters", 3600)
        expired = TokenSigner(SECRET, 60).issue(
            "mallory-1", "Mallory", issued_at=time.time() - 3600
        )
        return {
            "tampered signature": f"{version}.{payload}.{signature[:-2]}AA",
            "other user's payload": f"{version}.{payload.replace('M', 'N', 1)}.{signature}",
            "other secret": other_secret.issue("mallory-1", "Mallory"),
            "garbage": "not-a-token",
            "expired": expired,
        }

    @pytest.mark.parametrize(
        "case", ["tampered signature", "other user's payload", "other secret", "garbage", "expired"]
    )
    @pytest.mark.parametrize("via", ["query", "first frame"])
    async def test_a_forged_or_expired_token_is_refused_with_1008(
        self, chat_server: ChatServer, case: str, via: str
    ) -> None:
        """Whichever way the token comes, a bad one closes the socket with 1008."""
        token = self.forged_tokens(chat_server)[case]
        if via == "query":
            socket = await connect(f"{chat_server.ws_url}?token={token}")
        else:
            socket = await connect(chat_server.ws_url)
            await socket.send(json.dumps({"type": "auth", "token": token}))
        async with socket:
            assert 1008 == await close_code(socket)

    @pytest.mark.parametrize(
        "first_frame",
        [None, '{"type": "auth"}', '{"type": "message", "text": "hi"}', "not json"],
    )
    async def test_a_missing_token_is_refused_with_1008(
        self, chat_server: ChatServer, first_frame: str | None
    ) -> None:
        """No token (silence past the auth timeout, or a first frame without one): 1008."""
        async with connect(chat_server.ws_url) as socket:
            if first_frame is not None:
                await socket.send(first_frame)
            assert 1008 == await close_code(socket)

    async def test_a_genuine_token_in_the_query_is_refused(self, chat_server: ChatServer) -> None:
        """``/ws?token=`` would land in uvicorn's access log: even a valid token there is 1008."""
        login = chat_server.login("Quinn")
        async with connect(f"{chat_server.ws_url}?token={login['token']}") as socket:
            assert 1008 == await close_code(socket)


class TestBadInput:
    async def test_a_frame_over_the_limit_closes_with_1009(self, chat_server: ChatServer) -> None:
        """The app's 8 KiB limit closes the socket with 1009."""
        socket, _ = await open_session(chat_server, "Olga")
        async with socket:
            await socket.send(json.dumps({"type": "message", "text": "x" * 9000}))
            assert 1009 == await close_code(socket)

    async def test_a_huge_frame_is_refused_by_the_transport_with_1009(
        self, chat_server: ChatServer
    ) -> None:
        """Frames over 64 KiB never reach the app: uvicorn closes with 1009."""
        socket, _ = await open_session(chat_server, "Olga")
        async with socket:
            await socket.send("x" * (128 * 1024))
            assert 1009 == await close_code(socket)

    async def test_malformed_and_unknown_messages_get_error_events_and_the_socket_stays_open(
        self, chat_server: ChatServer
    ) -> None:
        """Bad JSON and unknown types are answered with error events; then a run works."""
        socket, _ = await open_session(chat_server, "Pat")
        async with socket:
            await socket.send("{this is not json")
            await socket.send(json.dumps({"type": "rm -rf"}))
            await socket.send(json.dumps(["a", "list"]))
            errors = [await receive(socket) for _ in range(3)]
            await socket.send(json.dumps({"type": "message", "text": "1 + 1"}))
            events = await receive_runs(socket, 1)
        assert ["invalid_json", "unknown_type", "invalid_message"] == [e["code"] for e in errors]
        assert [FIVE] == list(by_run(events).values())

    async def test_lone_surrogate_escapes_get_an_error_event_and_the_socket_stays_open(
        self, chat_server: ChatServer
    ) -> None:
        """A frame whose strings are not Unicode (a lone surrogate escape such as \\ud800, in
        a run id to cancel, a thread id, a text or a key) is ``invalid_message``: nothing of
        it is echoed or run, the socket stays open, and a run works after."""
        frames = [
            '{"type": "cancel", "run_id": "\\ud800"}',
            '{"type": "message", "text": "hi", "thread_id": "\\udfff"}',
            '{"type": "message", "text": "hi \\ud83d"}',
            '{"type": "ping", "\\ud800": 1}',
        ]
        socket, _ = await open_session(chat_server, "Sam")
        async with socket:
            for frame in frames:
                await socket.send(frame)
            errors = [await receive(socket) for _ in frames]
            await socket.send(json.dumps({"type": "message", "text": "1 + 1"}))
            events = await receive_runs(socket, 1)
        assert ["invalid_message"] * len(frames) == [e["code"] for e in errors]
        assert [FIVE] == list(by_run(events).values())


class TestEndpoints:
    def test_healthz_metrics_and_the_page(self, chat_server: ChatServer) -> None:
        """/healthz is ok, /metrics is Prometheus text, / is the chat page."""
        health = httpx.get(f"{chat_server.url}/healthz")
        metrics = httpx.get(f"{chat_server.url}/metrics")
        page = httpx.get(chat_server.url)
        assert {"status": "ok"} == health.json()
        assert metrics.headers["content-type"].startswith("text/plain")
        assert "# TYPE enginescope_active_engines gauge" in metrics.text
        assert "enginescope_engines_created_total" in metrics.text
        assert "<title>enginescope chat</title>" in page.text

    def test_the_favicon_is_served(self, chat_server: ChatServer) -> None:
        """/favicon.ico is an image, not a 404 in every browser's console."""
        icon = httpx.get(f"{chat_server.url}/favicon.ico")
        assert (200, "image/svg+xml") == (icon.status_code, icon.headers["content-type"])
        assert "<svg" in icon.text

    def test_polls_stay_out_of_the_access_log(self, chat_server: ChatServer) -> None:
        """The page's metrics polls, scrapes and health checks add no access-log line;
        other requests still do."""
        for _ in range(3):
            httpx.get(f"{chat_server.url}/api/metrics")
            httpx.get(f"{chat_server.url}/metrics")
        httpx.get(f"{chat_server.url}/favicon.ico")
        marker = f"/login-check-{time.monotonic_ns()}"
        httpx.get(f"{chat_server.url}{marker}")  # a 404, logged like any request
        deadline = time.monotonic() + 10
        while marker not in chat_server.log and time.monotonic() < deadline:
            time.sleep(0.05)
        assert f'"GET {marker} HTTP/1.1" 404' in chat_server.log
        for quiet in ("/api/metrics", "/metrics", "/healthz", "/favicon.ico"):
            assert f'"GET {quiet} HTTP/1.1"' not in chat_server.log

    def test_login_refuses_an_empty_name(self, chat_server: ChatServer) -> None:
        """A blank name is a 422, not a token."""
        response = httpx.post(f"{chat_server.url}/login", json={"name": "   "})
        assert 422 == response.status_code


def metric(server: ChatServer, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"{name} not in /metrics"
    return float(match.group(1))


class TestLimitsAndShutdown:
    async def test_a_user_at_the_engine_limit_gets_an_error_event(
        self, start_server: StartServer
    ) -> None:
        """One engine per user and a slow tool: the second message is refused, the first
        completes, and the server keeps serving."""
        server = start_server(ENGINESCOPE_MAX_ENGINES_PER_USER="1", CHAT_TOOL_DELAY_SECONDS="1")
        socket, _ = await open_session(server, "Lena")
        async with socket:
            await socket.send(json.dumps({"type": "message", "text": "slow one"}))
            assert "agent_started" == (await receive(socket))["type"]
            await socket.send(json.dumps({"type": "message", "text": "too many"}))
            events = await receive_runs(socket, 1)
        errors = [event for event in events if event["type"] == "error"]
        assert ["engine_limit"] == [error["code"] for error in errors]
        assert "(1/1)" in errors[0]["message"]
        runs = by_run([event for event in events if event["type"] in AGENT_EVENTS])
        assert [FIVE[1:]] == list(runs.values())  # agent_started was read above
        assert 1 == metric(server, "enginescope_user_limit_rejections_total")
        assert 0 == metric(server, "enginescope_active_engines")

    async def test_sigterm_during_runs_closes_sockets_1001_and_leaves_no_engine(
        self, start_server: StartServer
    ) -> None:
        """Two users mid-run: SIGTERM ends each run (agent_stopped), closes with 1001, the
        app shuts down gracefully and its final metrics show every engine cleaned."""
        server = start_server(CHAT_TOOL_DELAY_SECONDS="60")
        sessions = await asyncio.gather(open_session(server, "Ann"), open_session(server, "Ben"))
        for socket, _ in sessions:
            await socket.send(json.dumps({"type": "message", "text": "count these words"}))
        for socket, _ in sessions:
            while (await receive(socket))["type"] != "tool_executing":
                pass
        assert 2 == metric(server, "enginescope_active_engines")
        stopping = asyncio.get_running_loop().run_in_executor(None, server.terminate)
        last_events = [await receive(socket) for socket, _ in sessions]
        codes = [await close_code(socket) for socket, _ in sessions]
        # uvicorn re-raises the SIGTERM it caught once it has shut down gracefully
        assert await stopping in {0, -signal.SIGTERM}
        assert "Application shutdown complete." in server.log
        assert ["agent_stopped", "agent_stopped"] == [event["type"] for event in last_events]
        assert [1001, 1001] == codes
        final = json.loads(server.log.split("final engine metrics ", 1)[1].splitlines()[0])
        assert (0, [], 2, 2) == (
            final["active_engines_count"],
            final["active_engine_keys"],
            final["total_engines_created"],
            final["total_engines_cleaned"],
        )
