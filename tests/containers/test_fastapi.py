"""The FastAPI/Starlette glue: lifespan, WebSocket gateway and Prometheus metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from enginescope.containers import EngineContainer, EngineSettings
from enginescope.containers.fastapi import (
    GOING_AWAY,
    MESSAGE_TOO_BIG,
    POLICY_VIOLATION,
    TRY_AGAIN_LATER,
    EngineMetricsCollector,
    WebSocketGateway,
    engine_lifespan,
    engine_metrics,
    metrics_endpoint,
)
from enginescope.engines import (
    AgentRegistry,
    AgentRun,
    AgentWebSocketBridge,
    Connection,
    InvalidResumeTokenError,
    SocketLike,
)
from fastapi import FastAPI
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

AGENT = "echo"
ECHO_EVENTS = ["agent_started", "agent_thinking", "agent_completed"]


async def echo_agent(run: AgentRun) -> str:
    """Thinks once and echoes; a message starting with ``wait`` blocks until cancelled."""
    await run.think("echoing")
    if run.message.startswith("wait"):
        await asyncio.sleep(60)
    return run.message.upper()


class ChatHarness:
    """A Starlette app on the glue, with a test-only ``/ws/{user_id}`` route."""

    def __init__(
        self,
        max_engines_per_user: int = 2,
        max_message_bytes: int = 256,
        allowed_origins: tuple[str, ...] = (),
        max_connections_per_user: int = 16,
    ) -> None:
        self.container = EngineContainer()
        self.container.settings.override(
            EngineSettings(
                max_engines_per_user=max_engines_per_user,
                bridge_max_connections_per_user=max_connections_per_user,
            )
        )
        agents = AgentRegistry()
        agents.register(AGENT, echo_agent)
        self.container.agent_registry.override(agents)
        self.gateway = WebSocketGateway.for_container(
            self.container,
            agent_name=AGENT,
            max_message_bytes=max_message_bytes,
            allowed_origins=allowed_origins,
        )
        self.app = Starlette(
            lifespan=engine_lifespan(self.container, gateway=self.gateway),
            routes=[
                WebSocketRoute("/ws/{user_id}", self.serve),
                Route("/metrics", metrics_endpoint(self.container)),
            ],
        )

    async def serve(self, websocket: WebSocket) -> None:
        resume_from = websocket.query_params.get("resume_from")
        await self.gateway.serve(
            websocket, websocket.path_params["user_id"], resume_from=resume_from
        )

    def metrics(self, client: TestClient | None = None) -> dict[str, Any]:
        """``engine_metrics``, read on the app's event loop (the client's portal)."""
        if client is None:
            return engine_metrics(self.container)
        return client.portal.call(self._metrics)  # type: ignore[union-attr]

    async def _metrics(self) -> dict[str, Any]:
        return engine_metrics(self.container)


@pytest.fixture
def harness() -> ChatHarness:
    return ChatHarness()


@pytest.fixture
def client(harness: ChatHarness) -> Iterator[TestClient]:
    with TestClient(harness.app) as test_client:
        yield test_client


def receive_until(ws: Any, event_type: str, limit: int = 20) -> list[dict[str, Any]]:
    """Events up to and including the first of ``event_type``."""
    events = []
    for _ in range(limit):
        events.append(ws.receive_json())
        if events[-1]["type"] == event_type:
            return events
    raise AssertionError(f"no {event_type!r} in {events}")


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def closed_code(ws: Any) -> int:
    with pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_json()
    return closed.value.code


class TestLifespan:
    def test_resources_start_with_the_app_and_stop_after_it(self, harness: ChatHarness) -> None:
        """The engine factory runs exactly while the app runs."""
        assert not harness.container.engine_factory.initialized
        with TestClient(harness.app) as client:
            assert harness.container.engine_factory.initialized
            assert harness.metrics(client)["is_shutdown"] is False
        assert not harness.container.engine_factory.initialized
        assert {} == harness.metrics()

    def test_close_all_stops_runs_and_closes_sockets_going_away(
        self, harness: ChatHarness, client: TestClient
    ) -> None:
        """Shutdown cancels a live run (agent_stopped), closes with 1001 and leaves no engine."""
        with client.websocket_connect("/ws/alice") as ws:
            ws.receive_json()
            ws.send_json({"type": "message", "text": "wait for it"})
            receive_until(ws, "agent_thinking")
            assert 1 == harness.metrics(client)["active_engines_count"]
            client.portal.call(harness.gateway.close_all)  # type: ignore[union-attr]
            assert "agent_stopped" == ws.receive_json()["type"]
            assert GOING_AWAY == closed_code(ws)
        assert 0 == harness.metrics(client)["active_engines_count"]

    def test_a_closing_gateway_refuses_new_sockets(
        self, harness: ChatHarness, client: TestClient
    ) -> None:
        """After close_all a new socket is closed with 1001 straight away."""
        client.portal.call(harness.gateway.close_all)  # type: ignore[union-attr]
        with client.websocket_connect("/ws/alice") as ws:
            assert GOING_AWAY == closed_code(ws)


class TestWrappedLifespan:
    def test_the_apps_own_lifespan_runs_inside_the_resources(self) -> None:
        """The app's lifespan starts after the resources and ends before they stop."""
        container = EngineContainer()
        journal: list[str] = []

        @contextlib.asynccontextmanager
        async def own(app: Any) -> AsyncIterator[dict[str, str]]:
            journal.append(f"own start, factory up: {container.engine_factory.initialized}")
            yield {"db": "connected"}
            journal.append(f"own stop, factory up: {container.engine_factory.initialized}")

        async def state(request: Request) -> JSONResponse:
            return JSONResponse({"db": request.state.db})

        app = Starlette(
            lifespan=engine_lifespan(container, lifespan=own), routes=[Route("/state", state)]
        )
        with TestClient(app) as client:
            served = client.get("/state").json()

        assert {"db": "connected"} == served
        assert ["own start, factory up: True", "own stop, factory up: True"] == journal
        assert not container.engine_factory.initialized

    def test_a_failing_own_lifespan_still_shuts_the_resources_down(self) -> None:
        """If the app's lifespan fails at startup, the resources it was wrapped in stop."""
        container = EngineContainer()

        @contextlib.asynccontextmanager
        async def broken(app: Any) -> AsyncIterator[None]:
            raise RuntimeError("database unreachable")
            yield

        app = Starlette(lifespan=engine_lifespan(container, lifespan=broken))
        with pytest.raises(RuntimeError, match="database unreachable"), TestClient(app):
            pass

        assert not container.engine_factory.initialized

    def test_startup_handlers_that_will_not_run_are_named(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """FastAPI ignores on_event handlers once a lifespan is given: a warning names them."""
        container = EngineContainer()
        app = FastAPI(lifespan=engine_lifespan(container))

        def warm_cache() -> None: ...

        app.router.on_startup.append(warm_cache)
        with caplog.at_level("WARNING"), TestClient(app):
            pass

        assert any("warm_cache" in record.getMessage() for record in caplog.records)


class TestServe:
    def test_the_socket_is_registered_while_open_and_unregistered_after(
        self, harness: ChatHarness, client: TestClient
    ) -> None:
        """The bridge holds the user's connection exactly while the socket is served."""
        with client.websocket_connect("/ws/alice") as ws:
            session = ws.receive_json()
            assert ("session", "alice") == (session["type"], session["user_id"])
            assert 1 == harness.metrics(client)["active_connections"]
            assert 1 == harness.gateway.session_count
        wait_for(lambda: harness.metrics(client)["active_connections"] == 0)
        assert 0 == harness.gateway.session_count

    def test_each_message_runs_in_its_own_scope_with_a_server_run_id(
        self, harness: ChatHarness, client: TestClient
    ) -> None:
        """Two messages: two engines, two fresh run ids; client-sent ids are ignored."""
        with client.websocket_connect("/ws/alice") as ws:
            thread_id = ws.receive_json()["thread_id"]
            runs = []
            for text in ("one", "two"):
                ws.send_json({"type": "message", "text": text, "run_id": "mine", "user_id": "bob"})
                runs.append(receive_until(ws, "agent_completed"))
        assert [ECHO_EVENTS, ECHO_EVENTS] == [[e["type"] for e in run] for run in runs]
        run_ids = {event["run_id"] for run in runs for event in run}
        assert 2 == len(run_ids)
        assert all(run_id.startswith("run-") for run_id in run_ids)
        assert {("alice", thread_id)} == {(e["user_id"], e["thread_id"]) for r in runs for e in r}
        assert ["ONE", "TWO"] == [run[-1]["data"]["result"] for run in runs]
        metrics = harness.metrics(client)
        assert (2, 2, 0) == (
            metrics["total_engines_created"],
            metrics["total_engines_cleaned"],
            metrics["active_engines_count"],
        )

    def test_two_users_receive_only_their_own_events(self, client: TestClient) -> None:
        """Alice's run reaches Alice's socket; Bob's socket sees only Bob's run."""
        with (
            client.websocket_connect("/ws/alice") as alice,
            client.websocket_connect("/ws/bob") as bob,
        ):
            alice.receive_json()
            bob.receive_json()
            alice.send_json({"type": "message", "text": "from alice"})
            bob.send_json({"type": "message", "text": "from bob"})
            alice_events = receive_until(alice, "agent_completed")
            bob_events = receive_until(bob, "agent_completed")
        assert {"alice"} == {event["user_id"] for event in alice_events}
        assert {"bob"} == {event["user_id"] for event in bob_events}
        assert "FROM BOB" == bob_events[-1]["data"]["result"]

    def test_only_issued_thread_ids_are_accepted(self, client: TestClient) -> None:
        """Another thread id is refused; one from new_thread is used for the run."""
        with client.websocket_connect("/ws/alice") as ws:
            ws.receive_json()
            ws.send_json({"type": "message", "text": "hi", "thread_id": "thread-of-bob"})
            assert "unknown_thread" == ws.receive_json()["code"]
            ws.send_json({"type": "new_thread"})
            issued = ws.receive_json()
            ws.send_json({"type": "message", "text": "hi", "thread_id": issued["thread_id"]})
            events = receive_until(ws, "agent_completed")
        assert "thread" == issued["type"]
        assert {issued["thread_id"]} == {event["thread_id"] for event in events}

    @pytest.mark.parametrize(
        ("frame", "code"),
        [
            ("{not json", "invalid_json"),
            ("[1, 2]", "invalid_message"),
            ('{"type": "shout"}', "unknown_type"),
            ('{"type": "message", "text": "  "}', "invalid_message"),
            ('{"type": "message", "text": 42}', "invalid_message"),
            ('{"type": "message", "text": "hi", "thread_id": ["x"]}', "invalid_message"),
            ('{"type": "message", "text": "hi", "thread_id": {"a": 1}}', "invalid_message"),
            ('{"type": ["message"], "text": "hi"}', "invalid_message"),
            ('{"type": {"x": 1}}', "invalid_message"),
            ('{"type": "cancel", "run_id": "\\ud800"}', "invalid_message"),
            ('{"type": "message", "text": "\\udfff"}', "invalid_message"),
        ],
    )
    def test_a_bad_message_is_an_error_event_and_the_socket_stays_open(
        self, client: TestClient, frame: str, code: str
    ) -> None:
        """The client is told what was wrong, and can go on (ping gets pong)."""
        with client.websocket_connect("/ws/alice") as ws:
            ws.receive_json()
            ws.send_text(frame)
            error = ws.receive_json()
            ws.send_json({"type": "ping"})
            assert ("error", code) == (error["type"], error["code"])
            assert {"type": "pong"} == ws.receive_json()

    def test_json_nested_too_deep_to_parse_is_an_error_event(self) -> None:
        """A frame nested deeper than the parser recurses is ``invalid_json``, not a crash."""
        harness = ChatHarness(max_message_bytes=8192)
        with TestClient(harness.app) as client, client.websocket_connect("/ws/alice") as ws:
            ws.receive_json()
            ws.send_text("[" * 5000)
            error = ws.receive_json()
            ws.send_json({"type": "ping"})
            assert ("error", "invalid_json") == (error["type"], error["code"])
            assert {"type": "pong"} == ws.receive_json()

    def test_a_binary_frame_is_an_error_event(self, client: TestClient) -> None:
        """Binary frames are refused with an error event."""
        with client.websocket_connect("/ws/alice") as ws:
            ws.receive_json()
            ws.send_bytes(b"{}")
            assert "invalid_message" == ws.receive_json()["code"]

    def test_an_oversize_frame_closes_the_socket_with_1009(
        self, harness: ChatHarness, client: TestClient
    ) -> None:
        """A frame over max_message_bytes closes with 1009 and unregisters the socket."""
        with client.websocket_connect("/ws/alice") as ws:
            ws.receive_json()
            ws.send_text(json.dumps({"type": "message", "text": "x" * 300}))
            assert MESSAGE_TOO_BIG == closed_code(ws)
        wait_for(lambda: harness.metrics(client)["active_connections"] == 0)

    def test_a_user_at_the_engine_limit_gets_an_error_event(self) -> None:
        """With one engine per user, a second concurrent run is refused, not crashed."""
        harness = ChatHarness(max_engines_per_user=1)
        with TestClient(harness.app) as client, client.websocket_connect("/ws/alice") as ws:
            ws.receive_json()
            ws.send_json({"type": "message", "text": "wait"})
            receive_until(ws, "agent_thinking")
            ws.send_json({"type": "message", "text": "hello"})
            error = ws.receive_json()
            assert ("error", "engine_limit") == (error["type"], error["code"])
            assert "(1/1)" in error["message"]
            assert 1 == harness.metrics(client)["user_limit_rejections"]


class TestConnectionLimit:
    def test_a_socket_over_the_users_limit_is_told_and_closed_with_1008(self) -> None:
        """The bridge refuses a user's extra socket; the gateway says so and closes 1008."""
        harness = ChatHarness(max_connections_per_user=1)
        with TestClient(harness.app) as client, client.websocket_connect("/ws/alice") as first:
            first.receive_json()
            with client.websocket_connect("/ws/alice") as extra:
                error = extra.receive_json()
                code = closed_code(extra)
            with client.websocket_connect("/ws/bob") as bob:
                bob_greeting = bob.receive_json()
            first.send_json({"type": "ping"})
            assert {"type": "pong"} == first.receive_json()
            connections = harness.metrics(client)["active_connections"]
        assert ("error", "connection_limit", POLICY_VIOLATION) == (
            error["type"],
            error["code"],
            code,
        )
        assert "(1/1)" in error["message"]
        assert ("session", 1) == (bob_greeting["type"], connections)


class TestRestart:
    def test_a_gateway_serves_again_after_its_app_started_again(self, harness: ChatHarness) -> None:
        """One app, two TestClient sessions in turn: the second is served as the first was."""
        results = []
        for _ in range(2):
            with TestClient(harness.app) as client, client.websocket_connect("/ws/alice") as ws:
                ws.receive_json()
                ws.send_json({"type": "message", "text": "again"})
                results.append(receive_until(ws, "agent_completed")[-1]["data"]["result"])
        assert ["AGAIN", "AGAIN"] == results
        assert harness.gateway.closed

    def test_aclose_and_closed_are_the_teardown_vocabulary(
        self, harness: ChatHarness, client: TestClient
    ) -> None:
        """aclose() closes (close_all() still does), closed says so, reopen() serves again."""
        states = [harness.gateway.closed]
        client.portal.call(harness.gateway.aclose)  # type: ignore[union-attr]
        states.append(harness.gateway.closed)
        harness.gateway.reopen()
        states.append(harness.gateway.closed)
        client.portal.call(harness.gateway.close_all)  # type: ignore[union-attr]
        assert [False, True, False, True] == [*states, harness.gateway.closed]


class TestOrigin:
    @pytest.mark.parametrize(
        "headers",
        [{}, {"origin": "http://testserver"}, {"origin": "HTTP://TESTSERVER/"}],
        ids=["no-origin", "same-origin", "same-origin-spelled-otherwise"],
    )
    def test_the_apps_own_origin_or_none_is_served(
        self, client: TestClient, headers: dict[str, str]
    ) -> None:
        """A page of the app itself, or a client that is not a browser, is served."""
        with client.websocket_connect("/ws/alice", headers=headers) as ws:
            assert "session" == ws.receive_json()["type"]

    def test_a_cross_site_page_is_refused_with_1008_before_it_is_served(
        self, harness: ChatHarness, client: TestClient
    ) -> None:
        """A socket opened by another site's page is closed with 1008 and never registered."""
        with (
            pytest.raises(WebSocketDisconnect) as refused,
            client.websocket_connect("/ws/alice", headers={"origin": "https://evil.example"}) as ws,
        ):
            ws.receive_json()
        assert POLICY_VIOLATION == refused.value.code
        assert (0, 0) == (
            harness.gateway.session_count,
            harness.metrics(client)["active_connections"],
        )

    def test_an_allow_listed_origin_is_served(self) -> None:
        """An origin in allowed_origins is served; another one still is not."""
        harness = ChatHarness(allowed_origins=("https://app.example.com",))
        with TestClient(harness.app) as client:
            allowed = {"origin": "https://app.example.com"}
            with client.websocket_connect("/ws/alice", headers=allowed) as ws:
                assert "session" == ws.receive_json()["type"]
            other = {"origin": "https://other.example.com"}
            with (
                pytest.raises(WebSocketDisconnect),
                client.websocket_connect("/ws/alice", headers=other) as ws,
            ):
                ws.receive_json()

    def test_an_accepted_socket_from_another_site_is_told_why(self) -> None:
        """A socket the app accepted first gets an ``origin_not_allowed`` event, then 1008."""
        gateway = WebSocketGateway(
            bridge=AgentWebSocketBridge, user_engine=lambda: None, agent_name=AGENT
        )

        async def serve(websocket: WebSocket) -> None:
            await websocket.accept()
            await gateway.serve(websocket, "alice")

        app = Starlette(routes=[WebSocketRoute("/ws", serve)])
        headers = {"origin": "https://evil.example"}
        with TestClient(app) as client, client.websocket_connect("/ws", headers=headers) as ws:
            error = ws.receive_json()
            assert POLICY_VIOLATION == closed_code(ws)
        assert ("error", "origin_not_allowed") == (error["type"], error["code"])
        assert "evil.example" in error["message"]


class ReplayingBridge:
    """A resumable bridge: ``connect`` records its call and, before it returns, queues
    one ``replayed`` event to the socket (as the Redis bridge may); ``hang`` makes it
    wait forever, as it does while Redis is down."""

    def __init__(self, *, hang: bool = False) -> None:
        self.local = AgentWebSocketBridge()
        self.hang = hang
        self.connects: list[tuple[str, str | None]] = []

    @property
    def resumable(self) -> bool:
        return True

    async def connect(
        self, user_id: str, socket: SocketLike, *, resume_from: str | None = None
    ) -> Connection:
        self.connects.append((user_id, resume_from))
        if resume_from is not None and not resume_from.startswith("1-"):
            raise InvalidResumeTokenError("resume_from", resume_from, "a stream id such as '1-0'")
        if self.hang:
            await asyncio.Event().wait()
        connection = self.local.register_connection(user_id, socket)
        await self.local.send_to_user(user_id, {"type": "replayed", "stream_id": "1-1"})
        await asyncio.sleep(0.05)  # the sender would now write, were it not for the greeting
        return connection

    def register_connection(self, user_id: str, socket: SocketLike) -> Connection:
        raise AssertionError("a resumable bridge is connected, not registered")

    def unregister_connection(self, connection: Connection | None) -> None:
        self.local.unregister_connection(connection)

    async def flush(self, user_id: str | None = None) -> None:
        await self.local.flush(user_id)

    def get_metrics(self) -> dict[str, Any]:
        return self.local.get_metrics()


def resumable_app(bridge: ReplayingBridge) -> Starlette:
    """A Starlette app whose gateway uses ``bridge`` (no engine: no message is sent)."""
    gateway = WebSocketGateway(
        bridge=lambda: bridge,
        user_engine=lambda: None,
        agent_name=AGENT,
        subscribe_timeout_seconds=0.2,
    )

    async def serve(websocket: WebSocket) -> None:
        resume_from = websocket.query_params.get("resume_from")
        await gateway.serve(websocket, "alice", resume_from=resume_from)

    return Starlette(routes=[WebSocketRoute("/ws", serve)])


class TestResume:
    def test_a_resumable_bridge_is_connected_with_resume_from_and_the_greeting_comes_first(
        self,
    ) -> None:
        """``connect`` gets the client's resume_from; what it replays follows the greeting."""
        bridge = ReplayingBridge()
        with TestClient(resumable_app(bridge)) as client:
            with client.websocket_connect("/ws?resume_from=1-0") as ws:
                frames = [ws.receive_json()["type"], ws.receive_json()["type"]]
            wait_for(lambda: bridge.local.connection_count() == 0)
        assert [("alice", "1-0")] == bridge.connects
        assert ["session", "replayed"] == frames

    def test_a_malformed_resume_from_is_an_error_event_then_1008(self) -> None:
        """The bridge's complaint reaches the client as ``invalid_resume``; no connection."""
        bridge = ReplayingBridge()
        with TestClient(resumable_app(bridge)) as client:
            with client.websocket_connect("/ws?resume_from=yesterday") as ws:
                error = ws.receive_json()
                code = closed_code(ws)
            assert 0 == bridge.local.connection_count()
        assert ("error", "invalid_resume") == (error["type"], error["code"])
        assert "yesterday" in error["message"]
        assert POLICY_VIOLATION == code

    def test_a_bridge_that_does_not_answer_in_time_is_backend_unavailable_then_1013(
        self,
    ) -> None:
        """While Redis is down the subscription never lands: the client is told to retry."""
        bridge = ReplayingBridge(hang=True)
        with TestClient(resumable_app(bridge)) as client, client.websocket_connect("/ws") as ws:
            error = ws.receive_json()
            assert ("error", "backend_unavailable") == (error["type"], error["code"])
            assert TRY_AGAIN_LATER == closed_code(ws)

    def test_the_memory_bridge_says_it_cannot_resume_and_serves_on(
        self, client: TestClient
    ) -> None:
        """With the in-memory bridge a resume_from gets ``resume_unavailable``; then as usual."""
        with client.websocket_connect("/ws/alice?resume_from=1-0") as ws:
            session = ws.receive_json()
            error = ws.receive_json()
            ws.send_json({"type": "ping"})
            assert {"type": "pong"} == ws.receive_json()
        assert "session" == session["type"]
        assert ("error", "resume_unavailable") == (error["type"], error["code"])


class TestMetrics:
    def test_the_endpoint_serves_prometheus_text_read_live(
        self, harness: ChatHarness, client: TestClient
    ) -> None:
        """Gauges follow the live factory: one engine during a run, none after."""
        with client.websocket_connect("/ws/alice") as ws:
            ws.receive_json()
            ws.send_json({"type": "message", "text": "wait"})
            receive_until(ws, "agent_thinking")
            during = client.get("/metrics")
            client.portal.call(harness.gateway.close_all)  # type: ignore[union-attr]
        after = client.get("/metrics").text
        assert during.headers["content-type"].startswith("text/plain")
        assert "enginescope_active_engines 1.0" in during.text
        assert "enginescope_bridge_active_connections 1.0" in during.text
        assert "enginescope_active_engines 0.0" in after
        assert "enginescope_engines_created_total 1.0" in after
        assert "enginescope_engines_cleaned_total 1.0" in after

    def test_each_endpoint_has_its_own_registry_not_the_global_one(self) -> None:
        """Two apps in one process do not clash, and nothing lands in prometheus' REGISTRY."""
        first, second = ChatHarness(), ChatHarness()
        with TestClient(first.app) as one, TestClient(second.app) as two:
            assert 200 == one.get("/metrics").status_code
            assert 200 == two.get("/metrics").status_code
        assert REGISTRY.get_sample_value("enginescope_active_engines") is None

    def test_a_container_that_has_not_started_reports_nothing(self) -> None:
        """Scraping never starts the resources."""
        container = EngineContainer()
        registry = CollectorRegistry()
        registry.register(EngineMetricsCollector(container))
        assert b"" == generate_latest(registry)
        assert not container.engine_factory.initialized
