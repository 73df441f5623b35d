"""``user_engine_dependency``: an engine in an HTTP endpoint, in a user scope per request.

(No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations, which
refer to locals.)
"""

from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from enginescope.containers import EngineContainer, EngineSettings, InvalidSettingsError
from enginescope.containers.fastapi import engine_lifespan, user_engine_dependency
from enginescope.engines import (
    AgentRegistry,
    AgentRun,
    InvalidContextError,
    UserExecutionContext,
    UserExecutionEngine,
)
from enginescope.engines.testing import RecordingBridge
from fastapi import Depends, FastAPI, Header, HTTPException
from starlette.testclient import TestClient

SEEN: list[UserExecutionEngine] = []


async def shout(run: AgentRun) -> str:
    """Upper-cases the message."""
    return run.message.upper()


def current_user(x_user: Annotated[str | None, Header()] = None) -> str:
    """The app's authentication, reduced to a header for the test."""
    if x_user is None:
        raise HTTPException(status_code=401, detail="log in first")
    return x_user


def build_app(user: Any = current_user) -> tuple[FastAPI, EngineContainer, RecordingBridge]:
    container = EngineContainer()
    bridge = RecordingBridge()
    agents = AgentRegistry()
    agents.register("shout", shout)
    container.websocket_bridge.override(bridge)
    container.agent_registry.override(agents)
    container.settings.override(EngineSettings(max_engines_per_user=1))
    engine_for_user = user_engine_dependency(container, user=user)
    app = FastAPI(lifespan=engine_lifespan(container))

    @app.post("/shout")
    async def endpoint(
        text: str, engine: Annotated[UserExecutionEngine, Depends(engine_for_user)]
    ) -> dict[str, Any]:
        SEEN.append(engine)
        result = await engine.execute_agent("shout", text)
        return {"result": result.result, "user_id": engine.context.user_id}

    return app, container, bridge


@pytest.fixture
def app() -> Iterator[tuple[TestClient, EngineContainer, RecordingBridge]]:
    SEEN.clear()
    application, container, bridge = build_app()
    with TestClient(application) as client:
        yield client, container, bridge


class TestEngineInAnEndpoint:
    def test_the_endpoint_gets_the_users_engine(self, app: Any) -> None:
        """The engine belongs to the authenticated user; its events reach only that user."""
        client, _, bridge = app
        response = client.post("/shout", params={"text": "hi"}, headers={"x-user": "ann"})

        assert (200, {"result": "HI", "user_id": "ann"}) == (response.status_code, response.json())
        assert ["ann"] == bridge.user_ids()

    def test_the_engine_is_cleaned_up_when_the_request_ends(self, app: Any) -> None:
        """After each request the engine is closed and the slot given back (limit 1 holds)."""
        client, _, _ = app
        codes = [
            client.post("/shout", params={"text": t}, headers={"x-user": "ann"}).status_code
            for t in ("one", "two")
        ]

        assert [200, 200] == codes
        assert [False, False] == [engine.is_active() for engine in SEEN]
        assert SEEN[0] is not SEEN[1]

    def test_each_request_has_its_own_thread_and_run(self, app: Any) -> None:
        """A bare user id gets a fresh thread id and run id per request."""
        client, _, _ = app
        for text in ("one", "two"):
            client.post("/shout", params={"text": text}, headers={"x-user": "ann"})

        contexts = [engine.context for engine in SEEN]
        assert 2 == len({(c.thread_id, c.run_id) for c in contexts})

    def test_the_users_dependency_still_decides_who_gets_in(self, app: Any) -> None:
        """Without a user the app's dependency answers 401; no engine is created."""
        client, _, _ = app

        assert 401 == client.post("/shout", params={"text": "hi"}).status_code
        assert [] == SEEN

    def test_a_context_from_the_users_dependency_is_used_as_it_is(self) -> None:
        """The user dependency may return a whole UserExecutionContext."""
        context = UserExecutionContext(user_id="bob", thread_id="t-1", run_id="r-1")
        application, _, _ = build_app(user=lambda: context)
        SEEN.clear()
        with TestClient(application) as client:
            client.post("/shout", params={"text": "hi"})

        assert context is SEEN[0].context

    def test_a_bad_user_is_refused_naming_the_field(self) -> None:
        """What the user dependency returns is validated like any context."""
        application, _, _ = build_app(user=lambda: "null")
        with TestClient(application) as client, pytest.raises(InvalidContextError, match="user_id"):
            client.post("/shout", params={"text": "hi"})

    def test_a_wrong_container_is_refused_when_the_dependency_is_built(self) -> None:
        """Not an engine container: refused at construction, not at the first request."""
        with pytest.raises(TypeError, match="user_engine_dependency"):
            user_engine_dependency(InvalidSettingsError, user=current_user)
