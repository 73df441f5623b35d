"""Bad input at the example app (Starlette TestClient against the app object): bad tokens,
oversize frames, malformed JSON, unknown message types, and a client naming a user, run or
thread that is not theirs are each refused clearly, and another user is not affected."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from enginescope.containers.fastapi import MESSAGE_TOO_BIG, POLICY_VIOLATION
from starlette.testclient import TestClient, WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from examples.chat.app import ChatContainer, create_app
from examples.chat.auth import TokenSigner
from examples.chat.settings import ChatSettings

SECRET = "s" * 48
MAX_BYTES = 1024
FIVE = ["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]


@pytest.fixture
def client() -> Iterator[TestClient]:
    container = ChatContainer()
    container.settings.override(
        ChatSettings(
            secret=SECRET,
            tool_delay_seconds=0,
            auth_timeout_seconds=0.5,
            max_message_bytes=MAX_BYTES,
        )
    )
    with TestClient(create_app(container)) as test_client:
        yield test_client


def login(client: TestClient, name: str) -> dict[str, Any]:
    response = client.post("/login", json={"name": name})
    assert 200 == response.status_code, response.text
    return dict(response.json())


def auth_frame(token: str) -> str:
    return json.dumps({"type": "auth", "token": token})


def connect(client: TestClient, token: str) -> tuple[WebSocketTestSession, dict[str, Any]]:
    socket = client.websocket_connect("/ws").__enter__()
    socket.send_text(auth_frame(token))
    session = socket.receive_json()
    assert "session" == session["type"]
    return socket, session


def run_message(socket: WebSocketTestSession, **frame: Any) -> list[dict[str, Any]]:
    """Send a chat message; every frame until its run ends, but the streamed text, whose
    deltas must join to the completed result."""
    socket.send_json({"type": "message", "text": "2 + 2", **frame})
    events, streamed = [socket.receive_json()], []
    while events[-1]["type"] not in ("agent_completed", "agent_error", "agent_stopped", "error"):
        event = socket.receive_json()
        if event["type"] == "agent_text_delta":
            streamed.append(event["data"]["delta"])
        else:
            events.append(event)
    if events[-1]["type"] == "agent_completed":
        assert events[-1]["data"]["result"] == "".join(streamed)
    return events


def refused_with(client: TestClient, url: str, first_frame: str | None = None) -> int:
    """Connect to ``url`` (optionally sending one frame) and return the close code."""
    with client.websocket_connect(url) as socket:
        if first_frame is not None:
            socket.send_text(first_frame)
        try:
            frame = socket.receive_json()
        except WebSocketDisconnect as closed:
            return closed.code
    raise AssertionError(f"{url} was served: {frame}")


@pytest.fixture
def bob(client: TestClient) -> Iterator[tuple[WebSocketTestSession, dict[str, Any]]]:
    """Another user, connected throughout, who must not notice anything."""
    socket, session = connect(client, login(client, "Bob")["token"])
    yield socket, session
    socket.__exit__(None, None, None)


def assert_bob_unaffected(bob: tuple[WebSocketTestSession, dict[str, Any]]) -> None:
    """Bob's next message runs normally and he sees only his own five events."""
    socket, session = bob
    events = run_message(socket)
    assert FIVE == [event["type"] for event in events]
    assert {session["user_id"]} == {event["user_id"] for event in events}


class TestTokens:
    @pytest.mark.parametrize(
        "token",
        [
            "",
            "garbage",
            "a.b",
            "x" * 4000,
            TokenSigner("o" * 48, 3600).issue("user-mallory", "Mallory"),
            TokenSigner(SECRET, 60).issue("user-old", "Old", issued_at=time.time() - 3600),
        ],
        ids=["empty", "garbage", "malformed", "huge", "forged", "expired"],
    )
    def test_a_bad_token_is_closed_with_policy_violation(
        self, client: TestClient, bob: Any, token: str
    ) -> None:
        """A missing, malformed, forged or expired token: close 1008, nobody else hurt."""
        assert POLICY_VIOLATION == refused_with(client, "/ws", auth_frame(token))
        assert_bob_unaffected(bob)

    def test_a_tampered_token_cannot_claim_another_user(self, client: TestClient, bob: Any) -> None:
        """Alice's token with Bob's user id spliced into the payload is refused."""
        _, bob_session = bob
        version, payload, signature = login(client, "Alice")["token"].split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        claims["sub"] = bob_session["user_id"]
        spliced = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
        forged = f"{version}.{spliced}.{signature}"
        assert POLICY_VIOLATION == refused_with(client, "/ws", auth_frame(forged))
        assert_bob_unaffected(bob)

    def test_a_genuine_token_in_the_query_string_is_refused(
        self, client: TestClient, bob: Any
    ) -> None:
        """``/ws?token=`` ends up in access logs: even a valid token there is closed 1008."""
        token = login(client, "Alice")["token"]
        assert POLICY_VIOLATION == refused_with(client, f"/ws?token={token}", auth_frame(token))
        assert_bob_unaffected(bob)

    def test_a_page_of_another_site_is_refused(self, client: TestClient, bob: Any) -> None:
        """A cross-site Origin is closed with 1008 even with a valid token."""
        token = login(client, "Alice")["token"]
        headers = {"origin": "https://evil.example"}
        with client.websocket_connect("/ws", headers=headers) as socket:
            socket.send_text(auth_frame(token))
            error = socket.receive_json()
            with pytest.raises(WebSocketDisconnect) as closed:
                socket.receive_json()
        assert ("origin_not_allowed", POLICY_VIOLATION) == (error["code"], closed.value.code)
        assert_bob_unaffected(bob)

    @pytest.mark.parametrize(
        "frame",
        [
            "not json",
            json.dumps({"type": "message", "text": "hi"}),
            json.dumps({"type": "auth", "token": 42}),
            json.dumps({"type": "auth", "token": "t" * 3000}),
        ],
        ids=["not-json", "not-auth", "token-not-a-string", "oversize-auth-frame"],
    )
    def test_a_bad_first_frame_is_closed_with_policy_violation(
        self, client: TestClient, bob: Any, frame: str
    ) -> None:
        """A first frame that is not a valid auth frame: 1008."""
        assert POLICY_VIOLATION == refused_with(client, "/ws", frame)
        assert_bob_unaffected(bob)

    def test_a_client_that_never_authenticates_is_closed(
        self, client: TestClient, bob: Any
    ) -> None:
        """No token and no first frame within the auth timeout: 1008."""
        assert POLICY_VIOLATION == refused_with(client, "/ws")
        assert_bob_unaffected(bob)


class TestFrames:
    def test_an_oversize_frame_closes_that_socket_only(self, client: TestClient, bob: Any) -> None:
        """A frame over max_message_bytes closes the sender with 1009; Bob carries on."""
        socket, _ = connect(client, login(client, "Alice")["token"])
        socket.send_text(json.dumps({"type": "message", "text": "x" * MAX_BYTES}))
        with pytest.raises(WebSocketDisconnect) as closed:
            socket.receive_json()
        assert MESSAGE_TOO_BIG == closed.value.code
        socket.__exit__(None, None, None)
        assert_bob_unaffected(bob)

    @pytest.mark.parametrize(
        ("frame", "code"),
        [
            ("{not json", "invalid_json"),
            ("[1, 2]", "invalid_message"),
            ('"a string"', "invalid_message"),
            (json.dumps({"type": "launch_missiles"}), "unknown_type"),
            (json.dumps({"kind": "message"}), "unknown_type"),
            (json.dumps({"type": "message"}), "invalid_message"),
            (json.dumps({"type": "message", "text": "   "}), "invalid_message"),
            (json.dumps({"type": "message", "text": ["hi"]}), "invalid_message"),
            (json.dumps({"type": "message", "text": "hi", "thread_id": ["x"]}), "invalid_message"),
            (json.dumps({"type": ["message"], "text": "hi"}), "invalid_message"),
        ],
    )
    def test_a_bad_frame_is_an_error_event_and_the_socket_stays_usable(
        self, client: TestClient, bob: Any, frame: str, code: str
    ) -> None:
        """Malformed JSON, a non-object, an unknown type or a bad message: an error event
        with a code; the same socket then runs a message normally."""
        socket, session = connect(client, login(client, "Alice")["token"])
        socket.send_text(frame)
        error = socket.receive_json()
        assert ("error", code) == (error["type"], error["code"])
        assert error["message"]
        events = run_message(socket)
        assert FIVE == [event["type"] for event in events]
        assert {session["user_id"]} == {event["user_id"] for event in events}
        socket.__exit__(None, None, None)
        assert_bob_unaffected(bob)

    def test_a_binary_frame_is_refused(self, client: TestClient, bob: Any) -> None:
        """A binary frame is an error event; the socket stays open."""
        socket, _ = connect(client, login(client, "Alice")["token"])
        socket.send_bytes(b"\x00\x01")
        assert "invalid_message" == socket.receive_json()["code"]
        socket.send_json({"type": "ping"})
        assert "pong" == socket.receive_json()["type"]
        socket.__exit__(None, None, None)
        assert_bob_unaffected(bob)


class TestIdentity:
    def test_a_client_cannot_speak_as_another_user_or_choose_the_run_id(
        self, client: TestClient, bob: Any
    ) -> None:
        """user_id and run_id sent by the client are ignored: the run belongs to the token's
        user and gets a server-issued run id; Bob receives none of it."""
        _, bob_session = bob
        socket, session = connect(client, login(client, "Alice")["token"])
        events = run_message(socket, user_id=bob_session["user_id"], run_id="run-chosen")
        assert FIVE == [event["type"] for event in events]
        assert {session["user_id"]} == {event["user_id"] for event in events}
        assert "run-chosen" not in {event["run_id"] for event in events}
        socket.__exit__(None, None, None)
        assert_bob_unaffected(bob)

    def test_a_client_cannot_post_into_another_users_thread(
        self, client: TestClient, bob: Any
    ) -> None:
        """A thread id that was not issued to this socket is refused with unknown_thread."""
        _, bob_session = bob
        socket, _ = connect(client, login(client, "Alice")["token"])
        for thread_id in (bob_session["thread_id"], "thread-made-up", 7, None):
            error = run_message(socket, thread_id=thread_id)
            assert [("error", "unknown_thread")] == [(e["type"], e.get("code")) for e in error]
        socket.__exit__(None, None, None)
        assert_bob_unaffected(bob)
