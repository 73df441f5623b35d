"""The task tracker's chat: the tasks agent in each user's own engine, over the gateway.

The tests use the enginescope pytest plugin pointed at the app's own container
(``enginescope_app_container``): its engines run on the plugin's recording bridge, so
``in_user_scope`` runs the real agent with the real ``TaskService`` and SQLite, and a
``TestClient`` of the app serves ``/ws`` through the same bridge.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from dependency_injector import providers
from enginescope.containers import EngineContainer
from enginescope.containers.fastapi import POLICY_VIOLATION
from enginescope.engines import AgentRegistry, AgentRun
from enginescope.engines.testing import RecordingBridge
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.testclient import WebSocketTestSession
from starlette.websockets import WebSocketDisconnect

from examples.existing_app.agents import AGENT_NAME, new_task_title
from examples.existing_app.containers import Container

from .conftest import sign_up

FIVE = ["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]


@pytest.fixture
def enginescope_app_container(container: Container) -> Container:
    """The plugin's fixtures configure the app's own container."""
    container.db().create_database()
    return container


@pytest.fixture
def client(app: FastAPI, enginescope_engines: EngineContainer) -> Iterator[TestClient]:
    """The app, its engines on the plugin's recording bridge, started by its lifespan."""
    with TestClient(app) as test_client:
        yield test_client


def registered_user_id(container: Container, email: str) -> str:
    return str(container.user_service().register(email, "correct horse").id)


class TestNewTaskTitle:
    @pytest.mark.parametrize(
        ("message", "title"),
        [
            ("add buy milk", "buy milk"),
            ("Add: call Bob ", "call Bob"),
            ("remind me to water the plants", "water the plants"),
            ("what is open?", None),
            ("address book", None),
        ],
    )
    def test_only_an_add_message_names_a_task(self, message: str, title: str | None) -> None:
        """'add ...' and 'remind me to ...' give a title; anything else none."""
        assert title == new_task_title(message)


class TestTasksAgent:
    async def test_the_agent_adds_a_task_through_the_apps_service(
        self, container: Container, in_user_scope: Any, enginescope_bridge: RecordingBridge
    ) -> None:
        """'add buy milk' stores the task for this user and emits the five events."""
        user_id = registered_user_id(container, "ann@example.com")
        async with in_user_scope(user_id) as engine:
            result = await engine.execute_agent(AGENT_NAME, "add buy milk")
        assert result.success, result.error
        assert FIVE == enginescope_bridge.types_for(user_id)
        assert ["buy milk"] == [t.title for t in container.task_service().open_tasks(int(user_id))]

    async def test_the_agent_lists_only_the_users_own_open_tasks(
        self, container: Container, in_user_scope: Any, enginescope_bridge: RecordingBridge
    ) -> None:
        """Ann's engine lists Ann's open tasks, not Bob's; Bob's socket hears nothing."""
        ann = registered_user_id(container, "ann@example.com")
        bob = registered_user_id(container, "bob@example.com")
        container.task_service().add_task(int(ann), "ann's task")
        container.task_service().add_task(int(bob), "bob's task")
        async with in_user_scope(ann) as engine:
            result = await engine.execute_agent(AGENT_NAME, "what is open?")
        assert "You have 1 open tasks: ann's task" == result.result
        assert [] == enginescope_bridge.types_for(bob)


def chat_socket(client: TestClient, headers: dict[str, str]) -> WebSocketTestSession:
    """An authenticated ``/ws`` session, past its ``session`` greeting."""
    socket = client.websocket_connect("/ws").__enter__()
    socket.send_json({"type": "auth", "token": headers["Authorization"].split()[1]})
    assert "session" == socket.receive_json()["type"]
    return socket


def run(socket: WebSocketTestSession, text: str) -> list[dict[str, Any]]:
    socket.send_json({"type": "message", "text": text})
    events = [socket.receive_json()]
    while events[-1]["type"] not in ("agent_completed", "agent_error", "error"):
        events.append(socket.receive_json())
    return events


class TestChatSocket:
    def test_a_message_runs_the_agent_and_the_task_shows_in_the_api(
        self, client: TestClient, enginescope_bridge: RecordingBridge
    ) -> None:
        """Over /ws, 'add buy milk' gives five events for this user (the socket and the
        recording bridge agree); GET /tasks has the task."""
        headers = sign_up(client, "ann@example.com")
        user_id = str(client.get("/me", headers=headers).json()["id"])
        socket = chat_socket(client, headers)
        events = run(socket, "add buy milk")
        socket.__exit__(None, None, None)
        assert FIVE == [event["type"] for event in events]
        assert FIVE == enginescope_bridge.types_for(user_id)
        assert {user_id} == {event["user_id"] for event in events}
        assert ["buy milk"] == [
            task["title"] for task in client.get("/tasks", headers=headers).json()
        ]

    def test_each_user_hears_only_their_own_runs(self, client: TestClient) -> None:
        """Ann and Bob connected at once: Bob's socket gets only Bob's run."""
        ann = chat_socket(client, sign_up(client, "ann@example.com"))
        bob = chat_socket(client, sign_up(client, "bob@example.com"))
        ann_events = run(ann, "add ann's task")
        bob_events = run(bob, "what is open?")
        ann.__exit__(None, None, None)
        bob.__exit__(None, None, None)
        assert "Nothing open." == bob_events[-1]["data"]["result"]
        assert not {e["run_id"] for e in ann_events} & {e["run_id"] for e in bob_events}

    def test_the_agent_registry_can_be_overridden(self, app: FastAPI) -> None:
        """With ``engines.agent_registry`` overridden, /ws runs the test's agent for the
        authenticated user."""
        seen: list[tuple[str, str]] = []

        async def recording_agent(run: AgentRun) -> str:
            seen.append((run.context.user_id, run.message))
            return "recorded"

        registry = AgentRegistry()
        registry.register(AGENT_NAME, recording_agent)
        container: Container = app.state.container
        override = container.engines.agent_registry.override(providers.Object(registry))
        with override, TestClient(app) as client:
            headers = sign_up(client, "ann@example.com")
            user_id = str(client.get("/me", headers=headers).json()["id"])
            socket = chat_socket(client, headers)
            events = run(socket, "hello")
            socket.__exit__(None, None, None)
        assert [(user_id, "hello")] == seen
        assert ["agent_started", "agent_completed"] == [event["type"] for event in events]
        assert "recorded" == events[-1]["data"]["result"]

    @pytest.mark.parametrize(
        "frame", [{"type": "auth", "token": "made-up"}, {"type": "message", "text": "hi"}]
    )
    def test_a_socket_without_a_valid_token_is_closed_1008(
        self, client: TestClient, frame: dict[str, str]
    ) -> None:
        """An unknown API token, or no auth frame first: closed with 1008."""
        with client.websocket_connect("/ws") as socket:
            socket.send_json(frame)
            with pytest.raises(WebSocketDisconnect) as closed:
                socket.receive_json()
        assert POLICY_VIOLATION == closed.value.code
