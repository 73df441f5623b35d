"""Secrets never reach a socket: credentials in thoughts, tool parameters and results,
tool errors, agent errors and ORM objects are redacted on the way out of a real engine."""

from __future__ import annotations

import contextlib
import json
from typing import Any, NamedTuple

import pytest
from enginescope.engines import (
    AgentRegistry,
    AgentRun,
    AgentWebSocketBridge,
    ExecutionEngineFactory,
    UserExecutionContext,
)
from enginescope.engines.testing import FakeSocket, RecordingBridge

USER = "user-redact"
# Split so that no complete credential sits in this file's source.
DB_PASSWORD = "Db-" + "pa55-9f8e7d"
API_KEY = "sk-" + "proj-" + "Q1w2E3r4T5y6U7i8O9p0AsDf"
BEARER_TOKEN = "9b8a7c6d" + "5e4f3a2b1c0d"
JWT = "eyJ" + "hbGciOiJIUzI1NiJ9.eyJ" + "zdWIiOiJhbm4ifQ.c2lnbmF0dXJlLXZhbHVl"
SECRETS = (DB_PASSWORD, API_KEY, BEARER_TOKEN, JWT, "hunter2", "$2b$12$hashedhashed")
DSN = f"postgresql://app:{DB_PASSWORD}@db.internal:5432/prod"


class Creds(NamedTuple):
    user: str
    password: str


class User:
    """An ORM-style row: loaded columns as attributes beside private instance state."""

    def __init__(self) -> None:
        self._sa_instance_state = object()
        self.id = 1
        self.email = "ann@example.com"
        self.hashed_password = "$2b$12$hashedhashed"  # noqa: S105 - a test credential

    def __repr__(self) -> str:
        return f"<User id=1 hashed_password={self.hashed_password}>"


def fetch_user() -> User:
    return User()


def call_upstream(headers: list[tuple[str, str]], note: dict[str, str]) -> dict[str, Any]:
    return {"status": 200, "echo": headers, "note": note, "creds": Creds("ann", "hunter2")}


def connect(dsn: str) -> None:
    raise ConnectionError(f"could not connect to {dsn}: password authentication failed")


async def leaky_agent(run: AgentRun) -> object:
    """Does everything an agent might do with a credential in hand."""
    await run.think(f"Connecting with {DSN} and key {API_KEY}")
    await run.use_tool("fetch_user", fetch_user)
    await run.use_tool(
        "call_upstream",
        call_upstream,
        headers=[("Authorization", f"Bearer {BEARER_TOKEN}")],
        note={"header": f"Bearer {BEARER_TOKEN}", "session": JWT},
    )
    with contextlib.suppress(ConnectionError):
        await run.use_tool("connect", connect, dsn=DSN)
    raise RuntimeError(f"giving up on {DSN} (api_key={API_KEY})")


def leaked(events: list[dict[str, Any]]) -> list[str]:
    text = json.dumps(events)
    return [secret for secret in SECRETS if secret in text]


class TestNothingLeaks:
    async def test_no_secret_reaches_the_bridge(self) -> None:
        """Every event of a run that handles credentials is free of them, and the
        events still say what happened."""
        bridge = RecordingBridge()
        registry = AgentRegistry()
        registry.register("leaky", leaky_agent)
        factory = ExecutionEngineFactory(bridge, agent_registry=registry)
        ctx = UserExecutionContext(user_id=USER, thread_id="t-1", run_id="r-1")

        async with factory.user_execution_scope(ctx) as engine:
            result = await engine.execute_agent("leaky", "hi")
        await factory.shutdown()

        events = bridge.events_for(USER)
        assert [] == leaked(events)
        assert not result.success
        by_type = [(event["type"], event["data"].get("tool_name")) for event in events]
        assert [
            ("agent_started", None),
            ("agent_thinking", None),
            ("tool_executing", "fetch_user"),
            ("tool_completed", "fetch_user"),
            ("tool_executing", "call_upstream"),
            ("tool_completed", "call_upstream"),
            ("tool_executing", "connect"),
            ("tool_completed", "connect"),
            ("agent_error", None),
        ] == by_type
        thought, user = events[1]["data"]["thought"], events[3]["data"]["result"]
        assert "postgresql://app:[REDACTED]@db.internal:5432/prod" in thought
        assert {"id": 1, "email": "ann@example.com", "hashed_password": "[REDACTED]"} == user
        assert events[7]["data"]["error"].startswith("could not connect to postgresql://app:[")
        assert "RuntimeError" == events[8]["data"]["error_type"]

    async def test_no_secret_reaches_a_socket(self) -> None:
        """Through the in-process bridge to a socket, the same holds."""
        bridge = AgentWebSocketBridge()
        socket = FakeSocket()
        bridge.register_connection(USER, socket)
        registry = AgentRegistry()
        registry.register("leaky", leaky_agent)
        factory = ExecutionEngineFactory(bridge, agent_registry=registry)
        ctx = UserExecutionContext(user_id=USER, thread_id="t-1", run_id="r-2")

        async with factory.user_execution_scope(ctx) as engine:
            await engine.execute_agent("leaky", "hi")
        await bridge.flush(USER)
        await factory.shutdown()
        await bridge.aclose()

        assert 9 == len(socket.messages)
        assert [] == leaked(socket.messages)

    @pytest.mark.parametrize(
        "message", [f"my key is {API_KEY}", f"token {JWT}", f"use {DSN}"], ids=["key", "jwt", "dsn"]
    )
    async def test_the_users_own_message_is_redacted_in_agent_started(self, message: str) -> None:
        """A credential pasted into the chat is not echoed back in agent_started."""
        bridge = RecordingBridge()
        registry = AgentRegistry()
        registry.register("echo", lambda run: _none())
        factory = ExecutionEngineFactory(bridge, agent_registry=registry)
        ctx = UserExecutionContext(user_id=USER, thread_id="t-1", run_id="r-3")

        async with factory.user_execution_scope(ctx) as engine:
            await engine.execute_agent("echo", message)
        await factory.shutdown()

        assert [] == leaked(bridge.events_for(USER))


async def _none() -> None:
    return None
