"""The pytest plugin, used the way an application's test suite uses it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from enginescope.containers import EngineContainer
from enginescope.containers.pytest_plugin import InUserScope
from enginescope.engines import AgentWebSocketBridge, ExecutionEngineFactory
from enginescope.engines.testing import FakeSocket, RecordingBridge

USER_TESTS = """
import pytest
from enginescope.engines import UserEngineLimitError

seen = {}


@pytest.mark.asyncio
async def test_an_engine_in_a_user_scope(in_user_scope, enginescope_bridge):
    async with in_user_scope("alice") as engine:
        result = await engine.execute_agent("demo", "hello world")
    assert result.success
    assert ["alice"] == enginescope_bridge.user_ids()
    assert "agent_completed" == enginescope_bridge.types_for("alice")[-1]
    assert not engine.is_active()


@pytest.mark.asyncio
async def test_a_context_of_my_own(in_user_scope, make_user_context, enginescope_container):
    context = make_user_context("bob", metadata={"plan": "pro"})
    async with in_user_scope(context) as engine:
        assert context is engine.context
        assert context is enginescope_container.user_context()


@pytest.mark.asyncio
async def test_a_mapping_and_fields(in_user_scope):
    async with in_user_scope({"user_id": "dan", "thread_id": "t-9", "run_id": "r-9"}) as a:
        assert "t-9" == a.context.thread_id
    async with in_user_scope("erin", thread_id="t-1") as b:
        assert ("erin", "t-1") == (b.context.user_id, b.context.thread_id)


@pytest.mark.asyncio
async def test_my_settings_are_used(in_user_scope):
    async with in_user_scope("carol"):
        with pytest.raises(UserEngineLimitError):
            async with in_user_scope("carol"):
                pass


@pytest.mark.asyncio
async def test_the_container_is_started(enginescope_container):
    factory = await enginescope_container.engine_factory()
    seen["factory"] = factory
    assert not factory.is_shutdown


def test_it_was_shut_down_after_the_test():
    assert seen["factory"].is_shutdown
"""

CONFTEST = """
import pytest
from enginescope.containers import EngineSettings


@pytest.fixture
def enginescope_settings():
    return EngineSettings(max_engines_per_user=1)
"""


def ini(mode: str) -> str:
    """A user's pytest configuration: the given asyncio mode, warnings are errors."""
    return textwrap.dedent(
        f"""
        [pytest]
        asyncio_mode = {mode}
        asyncio_default_fixture_loop_scope = function
        filterwarnings = error
        """
    )


class TestUsedByAnApplication:
    @pytest.mark.parametrize("mode", ["strict", "auto"])
    def test_a_users_test_suite_passes_with_the_fixtures(
        self, pytester: pytest.Pytester, mode: str
    ) -> None:
        """Fixtures work in pytest-asyncio strict and auto mode, with settings overridden."""
        pytester.makeini(ini(mode))
        pytester.makeconftest(CONFTEST)
        pytester.makepyfile(test_chat=USER_TESTS)

        result = pytester.runpytest("-p", "no:cacheprovider")

        result.assert_outcomes(passed=6)

    def test_a_failing_user_test_fails_and_still_shuts_down(
        self, pytester: pytest.Pytester
    ) -> None:
        """An error inside in_user_scope fails that test only; teardown still runs."""
        pytester.makepyfile(
            test_failing=textwrap.dedent(
                """
                import pytest

                seen = {}

                @pytest.mark.asyncio
                async def test_boom(in_user_scope, enginescope_container):
                    seen["factory"] = await enginescope_container.engine_factory()
                    async with in_user_scope("alice") as engine:
                        seen["engine"] = engine
                        raise RuntimeError("boom")

                def test_cleaned_up():
                    assert not seen["engine"].is_active()
                    assert seen["factory"].is_shutdown
                """
            )
        )

        pytester.makeini(ini("strict"))

        result = pytester.runpytest("-p", "no:cacheprovider")

        result.assert_outcomes(passed=1, failed=1)
        result.stdout.fnmatch_lines(["*RuntimeError: boom*"])


APP_MODULE = """
from typing import Annotated, Any

from dependency_injector import containers, providers
from enginescope.containers import EngineContainer
from enginescope.containers.fastapi import (
    WebSocketGateway,
    engine_lifespan,
    user_engine_dependency,
)
from enginescope.engines import UserExecutionEngine
from fastapi import Depends, FastAPI, Header, WebSocket


class Container(containers.DeclarativeContainer):
    config = providers.Configuration()
    engines = providers.Container(EngineContainer, settings=config.engines)
    gateway = providers.Singleton(
        WebSocketGateway,
        bridge=engines.websocket_bridge.provider,
        user_engine=engines.user_engine.provider,
        agent_name="demo",
    )


def user(x_user: Annotated[str, Header()]) -> str:
    return x_user


def create_app() -> FastAPI:
    container = Container()
    container.config.from_dict({"engines": {"max_engines_per_user": 2}})
    engine = user_engine_dependency(container, user=user)
    app = FastAPI(lifespan=engine_lifespan(container, gateway=container.gateway()))
    app.state.container = container

    @app.post("/words")
    async def words(text: str, engine: Annotated[UserExecutionEngine, Depends(engine)]) -> Any:
        return (await engine.execute_agent("demo", text)).result

    @app.websocket("/ws/{user_id}")
    async def chat(websocket: WebSocket, user_id: str) -> None:
        await container.gateway().serve(websocket, user_id)

    return app


app = create_app()
"""

APP_CONFTEST = """
import pytest
from my_app import app


@pytest.fixture
def enginescope_app_container():
    return app.state.container
"""

APP_TESTS = """
import httpx
import pytest
from starlette.testclient import TestClient

from my_app import app

FIVE = ["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]


def chat(client, user_id):
    with client.websocket_connect(f"/ws/{user_id}") as ws:
        assert "session" == ws.receive_json()["type"]
        ws.send_json({"type": "message", "text": "hello there"})
        return [ws.receive_json()["type"] for _ in FIVE]


@pytest.mark.parametrize("round", [1, 2, 3])
def test_a_websocket_with_the_testclient(enginescope_engines, enginescope_bridge, round):
    with TestClient(app) as client:
        seen = chat(client, f"user-{round}")
    assert FIVE == seen
    assert FIVE == enginescope_bridge.types_for(f"user-{round}")


def test_an_http_endpoint_with_the_testclient(enginescope_engines, enginescope_bridge):
    with TestClient(app) as client:
        response = client.post("/words", params={"text": "a b a"}, headers={"x-user": "ann"})
    assert "Your message has 3 words (2 unique)." == response.json()
    assert ["ann"] == enginescope_bridge.user_ids()


def test_the_fixtures_configure_the_apps_own_engines(enginescope_engines):
    assert app.state.container.engines() is enginescope_engines


@pytest.mark.asyncio
async def test_an_http_endpoint_over_httpx(enginescope_container, enginescope_bridge):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        response = await client.post("/words", params={"text": "hi"}, headers={"x-user": "bo"})
    assert 200 == response.status_code
    assert "agent_completed" == enginescope_bridge.types_for("bo")[-1]
"""


class TestWithAnAppContainer:
    def test_testclient_and_httpx_tests_pass_against_the_apps_container(
        self, pytester: pytest.Pytester
    ) -> None:
        """Pointed at an app's container, the fixtures serve TestClient and httpx tests."""
        pytester.makeini(ini("strict"))
        pytester.makepyfile(my_app=APP_MODULE)
        pytester.makeconftest(APP_CONFTEST)
        pytester.makepyfile(test_app=APP_TESTS)

        result = pytester.runpytest("-p", "no:cacheprovider")

        result.assert_outcomes(passed=6)


class TestRecordingBridge:
    async def test_a_registered_socket_receives_what_is_recorded(self) -> None:
        """register_connection: events reach the socket and the record; unregister stops it."""
        bridge = RecordingBridge()
        socket = FakeSocket()
        connection = bridge.register_connection("u-1", socket)
        reached = await bridge.send_to_user("u-1", {"type": "agent_started"})
        await bridge.flush("u-1")
        bridge.unregister_connection(connection)
        after = await bridge.send_to_user("u-1", {"type": "agent_completed"})
        await bridge.aclose()

        assert (1, 1, ["agent_started"]) == (reached, after, socket.types())
        assert ["agent_started", "agent_completed"] == bridge.types_for("u-1")
        assert (True, False, 0) == (bridge.closed, bridge.resumable, bridge.connection_count())


class TestFixtures:
    async def test_the_container_uses_the_recording_bridge(
        self, enginescope_container: EngineContainer, enginescope_bridge: RecordingBridge
    ) -> None:
        """enginescope_container's factory talks to enginescope_bridge."""
        factory = await enginescope_container.engine_factory()

        assert isinstance(factory, ExecutionEngineFactory)
        assert enginescope_bridge is factory.websocket_bridge
        assert not isinstance(factory.websocket_bridge, AgentWebSocketBridge)

    async def test_in_user_scope_gives_the_users_engine(
        self, in_user_scope: InUserScope, enginescope_bridge: RecordingBridge
    ) -> None:
        """in_user_scope(user_id) yields an engine for that user, closed afterwards."""
        async with in_user_scope("u-42") as engine:
            await engine.execute_agent("demo", "hi")

        assert ("u-42", False, ["u-42"]) == (
            engine.context.user_id,
            engine.is_active(),
            enginescope_bridge.user_ids(),
        )


class TestImport:
    def test_loading_the_plugin_imports_nothing_heavy(self) -> None:
        """pytest loads the plugin in every run; it must not import the DI stack or pydantic."""
        probe = (
            "import sys, enginescope.containers.pytest_plugin as plugin\n"
            "heavy = ('dependency_injector', 'pydantic', 'enginescope.engines')\n"
            "print(sorted(name for name in heavy if name in sys.modules))"
        )

        output = subprocess.run(  # noqa: S603 - runs this interpreter on a literal probe
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True
        ).stdout

        assert "[]" == output.strip()
