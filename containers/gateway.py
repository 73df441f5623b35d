"""FastAPI / Starlette glue: a lifespan, WebSocket sessions in user scopes, and metrics.

Three helpers for an app built on :class:`EngineContainer`::

    container = EngineContainer()
    gateway = WebSocketGateway.for_container(container, agent_name="assistant")
    app = FastAPI(lifespan=engine_lifespan(container, gateway=gateway))
    app.add_route("/metrics", metrics_endpoint(container))

    @app.websocket("/ws")
    async def chat(websocket: WebSocket) -> None:
        user_id = ...  # from your authentication, never from the client
        await gateway.serve(websocket, user_id)

:func:`engine_lifespan` starts the container's resources (the engine factory) and shuts
them down, after closing every WebSocket session with 1001 ("going away").
:class:`WebSocketGateway` serves one socket at a time per call: it registers the socket
with the container's bridge, runs every inbound message in its own :func:`user_scope`
with a server-generated run id, and unregisters the socket when it goes. With the Redis
bridge (``ENGINESCOPE_BACKEND=redis``) a client may resume: it passes the ``stream_id``
of the last event it received, ``gateway.serve(websocket, user_id, resume_from=...)``,
and receives every event it missed, whichever replica ran it.
:func:`metrics_endpoint` renders the factory's and the bridge's metrics in the
Prometheus text format, read live at every scrape.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, Final, Protocol, cast

from dependency_injector import containers, providers
from enginescope.engines import (
    BridgeClosedError,
    Connection,
    ExecutionEngineFactory,
    FactoryShutdownError,
    SlotLedgerUnavailableError,
    SocketLike,
    UserEngineLimitError,
    UserExecutionContext,
    WebSocketBridgeError,
)
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketState

from .scope import user_scope

__all__ = [
    "GOING_AWAY",
    "MESSAGE_TOO_BIG",
    "POLICY_VIOLATION",
    "TRY_AGAIN_LATER",
    "ConnectionBridge",
    "EngineMetricsCollector",
    "ResumableBridge",
    "WebSocketGateway",
    "engine_lifespan",
    "engine_metrics",
    "metrics_endpoint",
    "new_run_id",
    "new_thread_id",
]

logger = logging.getLogger(__name__)

GOING_AWAY: Final = 1001  # WebSocket close codes (RFC 6455)
POLICY_VIOLATION: Final = 1008
MESSAGE_TOO_BIG: Final = 1009
TRY_AGAIN_LATER: Final = 1013

Lifespan = Callable[[Any], contextlib.AbstractAsyncContextManager[None]]


class ConnectionBridge(Protocol):
    """The bridge methods the gateway and the metrics use (``AgentWebSocketBridge`` has them)."""

    def register_connection(self, user_id: str, socket: SocketLike) -> Connection: ...

    def unregister_connection(self, connection: Connection | None) -> None: ...

    async def flush(self, user_id: str | None = None) -> None: ...

    def get_metrics(self) -> Mapping[str, Any]: ...


class ResumableBridge(Protocol):
    """A bridge that can replay what a client missed (``RedisWebSocketBridge`` is one)."""

    async def connect(
        self, user_id: str, socket: SocketLike, *, resume_from: str | None = None
    ) -> Connection: ...


async def _settle(result: object) -> Any:
    """``await`` ``result`` when dependency-injector handed back an awaitable."""
    if inspect.isawaitable(result):
        return await result
    return result


def _started(provider: providers.Provider[Any]) -> Any:
    """The value of a Resource provider once initialised, else ``None`` (never starts it).

    Call it on the event loop that runs the app: off it, an async resource reads as ``None``.
    """
    resource = cast("providers.Resource[Any]", provider)
    if not resource.initialized:
        return None
    try:
        value = resource()
    except RuntimeError:  # an async resource asked for off its event loop's thread
        return None
    if isinstance(value, asyncio.Future):  # an async resource hands back its finished future
        return value.result() if value.done() and not value.cancelled() else None
    return value


# -- lifespan ------------------------------------------------------------------------


def engine_lifespan(
    container: containers.Container, *, gateway: WebSocketGateway | None = None
) -> Lifespan:
    """A lifespan that runs ``init_resources()`` on startup and, on shutdown, closes the
    ``gateway``'s sessions (1001), then runs ``shutdown_resources()`` (which closes every
    engine, then the bridge)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await _settle(container.init_resources())
        try:
            yield
        finally:
            if gateway is not None:
                await gateway.close_all()
            await _settle(container.shutdown_resources())

    return lifespan


# -- WebSocket sessions --------------------------------------------------------------


def new_run_id() -> str:
    """A server-generated, unguessable run id."""
    return f"run-{uuid.uuid4().hex}"


def new_thread_id() -> str:
    """A server-generated, unguessable thread id."""
    return f"thread-{uuid.uuid4().hex}"


def _error_event(code: str, message: str, **fields: Any) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message, **fields}


class _SerialSocket:
    """The one writer of a WebSocket: the bridge's sender and the session share it, so
    frames never interleave and nothing is sent after the close frame.

    The first frame goes through :meth:`send_first`; every other waits for it, so the
    greeting comes first even when the bridge replays events at once.
    """

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self._lock = asyncio.Lock()
        self._first_sent = asyncio.Event()
        self.closed = False

    async def send_json(self, data: Any) -> None:
        await self._first_sent.wait()
        await self._send(data)

    async def send_first(self, data: Any) -> None:
        """Send ``data`` ahead of everything else, then let the other frames go."""
        try:
            await self._send(data)
        finally:
            self._first_sent.set()

    async def _send(self, data: Any) -> None:
        async with self._lock:
            if self.closed:
                raise ConnectionError("the WebSocket was closed by the server")
            await self.websocket.send_json(data)

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self._first_sent.set()  # a frame still waiting fails now instead
        async with self._lock:
            if self.closed:
                return
            self.closed = True
            if self.websocket.application_state is WebSocketState.CONNECTED:
                with contextlib.suppress(RuntimeError, OSError):  # the client already left
                    await self.websocket.close(code, reason)


class _Session:
    """One served WebSocket: its user, its threads, its runs and its bridge connection."""

    def __init__(self, websocket: WebSocket, user_id: str) -> None:
        self.user_id = user_id
        self.socket = _SerialSocket(websocket)
        self.thread_id = new_thread_id()
        self.threads = {self.thread_id}
        self.runs: set[asyncio.Task[None]] = set()
        self.connection: Connection | None = None
        self.resumable = False  # subscribed through a ResumableBridge

    def __repr__(self) -> str:
        return f"<_Session user_id={self.user_id!r} runs={len(self.runs)}>"

    async def send_error(self, code: str, message: str, **fields: Any) -> None:
        """An ``error`` event to this socket only; a closed socket is ignored."""
        with contextlib.suppress(ConnectionError, RuntimeError, OSError):
            await self.socket.send_json(_error_event(code, message, **fields))

    async def refuse(self, code: str, message: str, close_code: int, reason: str) -> None:
        """An ``error`` event as the socket's first and last frame, then close it."""
        with contextlib.suppress(ConnectionError, RuntimeError, OSError):
            await self.socket.send_first(_error_event(code, message))
        await self.socket.close(close_code, reason)

    def start(self, run: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(run)
        self.runs.add(task)
        task.add_done_callback(self.runs.discard)

    async def stop_runs(self, timeout: float) -> None:
        """Cancel this socket's runs and wait (up to ``timeout``) for their scopes to close."""
        runs = tuple(self.runs)
        for task in runs:
            task.cancel()
        if runs:
            await asyncio.wait(runs, timeout=timeout)


class WebSocketGateway:
    """Serves WebSockets whose every inbound message runs ``agent_name`` in a user scope.

    ``bridge`` returns (or resolves to) the connection bridge and ``user_engine`` to the
    engine of the current user scope: the container's providers, passed as providers
    (``container.user_engine`` or, in a container, ``.provider``) so nothing is resolved
    before the resources start. :meth:`for_container` does this for you.

    The protocol is JSON text frames. Inbound: ``{"type": "message", "text": "...",
    "thread_id": optional}``, ``{"type": "new_thread"}``, ``{"type": "ping"}``. Outbound:
    a ``session`` event on connect (user id and a server-issued thread id), the agent's
    events, ``thread`` and ``pong`` replies, and ``error`` events (``code``, ``message``).
    The client never chooses a user id or run id, and may only name thread ids this
    socket was issued. A frame over ``max_message_bytes`` closes the socket with 1009;
    bad JSON or an unknown type is an ``error`` event and the socket stays open.

    With a bridge that has an async ``connect`` (:class:`ResumableBridge`, the Redis
    bridge), the socket is subscribed before the ``session`` event, so every event
    published after the greeting reaches it; each event then carries a ``stream_id``.
    If the subscription is not in effect within ``subscribe_timeout_seconds`` (Redis is
    down), the client gets a ``backend_unavailable`` error and a 1013 close: try again.
    A message whose engine Redis cannot admit gets a ``backend_unavailable`` error event.
    """

    def __init__(
        self,
        *,
        bridge: Callable[[], Any],
        user_engine: Callable[[], Any],
        agent_name: str,
        max_message_bytes: int = 8192,
        shutdown_timeout_seconds: float = 5.0,
        subscribe_timeout_seconds: float = 10.0,
    ) -> None:
        self._bridge = bridge
        self._user_engine = user_engine
        self.agent_name = agent_name
        self.max_message_bytes = max_message_bytes
        self.shutdown_timeout_seconds = shutdown_timeout_seconds
        self.subscribe_timeout_seconds = subscribe_timeout_seconds
        self._sessions: set[_Session] = set()
        self._closing = False

    @classmethod
    def for_container(cls, container: containers.Container, **options: Any) -> WebSocketGateway:
        """A gateway using ``container``'s ``websocket_bridge`` and ``user_engine``."""
        return cls(bridge=container.websocket_bridge, user_engine=container.user_engine, **options)

    def __repr__(self) -> str:
        return (
            f"<WebSocketGateway agent_name={self.agent_name!r} sessions={len(self._sessions)} "
            f"closing={self._closing}>"
        )

    @property
    def session_count(self) -> int:
        """WebSockets being served now."""
        return len(self._sessions)

    async def serve(
        self, websocket: WebSocket, user_id: str, *, resume_from: str | None = None
    ) -> None:
        """Serve ``websocket`` for the authenticated ``user_id`` until either side closes.

        ``resume_from`` is the ``stream_id`` of the last event the client received, from
        the client: the events after it are sent first (a :class:`ResumableBridge` only).
        A malformed one is refused: an ``invalid_resume`` error event, then 1008. A
        bridge that cannot resume says so with a ``resume_unavailable`` error event.
        """
        if websocket.application_state is WebSocketState.CONNECTING:
            await websocket.accept()
        session = _Session(websocket, user_id)
        if self._closing:
            await session.socket.close(GOING_AWAY, "server shutting down")
            return
        self._sessions.add(session)
        bridge = await self._connection_bridge()
        try:
            session.connection = await self._connect(bridge, session, resume_from)
            if session.connection is not None:
                await self._greet(session, resume_from)
                await self._receive(session)
        finally:
            self._sessions.discard(session)
            await session.stop_runs(self.shutdown_timeout_seconds)
            bridge.unregister_connection(session.connection)

    async def close_all(self, code: int = GOING_AWAY, reason: str = "server shutting down") -> None:
        """Refuse new sockets; stop every session's runs, then close its socket with
        ``code``. Idempotent."""
        self._closing = True
        sessions = tuple(self._sessions)
        await asyncio.gather(*(self._close(session, code, reason) for session in sessions))

    async def _close(self, session: _Session, code: int, reason: str) -> None:
        await session.stop_runs(self.shutdown_timeout_seconds)
        bridge = await self._connection_bridge()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.shutdown_timeout_seconds):
                await bridge.flush(session.user_id)
        bridge.unregister_connection(session.connection)
        await session.socket.close(code, reason)

    async def _connection_bridge(self) -> ConnectionBridge:
        return cast("ConnectionBridge", await _settle(self._bridge()))

    async def _connect(
        self, bridge: ConnectionBridge, session: _Session, resume_from: str | None
    ) -> Connection | None:
        """Register the session's socket; ``None`` once it was refused and closed."""
        try:
            connect = getattr(bridge, "connect", None)
            if not inspect.iscoroutinefunction(connect):
                return bridge.register_connection(session.user_id, session.socket)
            return await self._subscribe(cast("ResumableBridge", bridge), session, resume_from)
        except BridgeClosedError:
            await session.socket.close(GOING_AWAY, "server shutting down")
        except ValueError as exc:  # InvalidResumeTokenError: the client's resume_from
            if resume_from is None or not isinstance(exc, WebSocketBridgeError):
                raise
            await session.refuse("invalid_resume", str(exc), POLICY_VIOLATION, "invalid resume")
        except TimeoutError:
            await session.refuse(
                "backend_unavailable",
                f"The event backend did not answer within {self.subscribe_timeout_seconds}s; "
                "reconnect in a moment.",
                TRY_AGAIN_LATER,
                "backend unavailable",
            )
        return None

    async def _subscribe(
        self, bridge: ResumableBridge, session: _Session, resume_from: str | None
    ) -> Connection:
        """``bridge.connect``, bounded: it waits for Redis while Redis is down."""
        session.resumable = True
        async with asyncio.timeout(self.subscribe_timeout_seconds):
            return await bridge.connect(session.user_id, session.socket, resume_from=resume_from)

    async def _greet(self, session: _Session, resume_from: str | None) -> None:
        connection_id = session.connection.connection_id if session.connection else None
        greeting = {
            "type": "session",
            "user_id": session.user_id,
            "thread_id": session.thread_id,
            "connection_id": connection_id,
            "agent_name": self.agent_name,
        }
        await session.socket.send_first(greeting)
        if resume_from is not None and not session.resumable:
            await session.send_error(
                "resume_unavailable",
                "This server keeps no event history (ENGINESCOPE_BACKEND=memory); "
                "events sent while you were away are not replayed.",
            )

    async def _receive(self, session: _Session) -> None:
        websocket = session.socket.websocket
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect" or session.socket.closed:
                return
            frame: str | bytes | None = message.get("text")
            if frame is None:
                frame = message.get("bytes") or b""
            if _size(frame) > self.max_message_bytes:
                await session.socket.close(MESSAGE_TOO_BIG, "message too big")
                return
            await self._dispatch(session, frame)

    async def _dispatch(self, session: _Session, frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            await session.send_error("invalid_message", "Send JSON text frames, not binary.")
            return
        try:
            data = json.loads(frame)
        except ValueError:
            await session.send_error("invalid_json", "The message is not valid JSON.")
            return
        if not isinstance(data, dict):
            await session.send_error("invalid_message", "A message is a JSON object.")
            return
        await self._handle(session, data)

    async def _handle(self, session: _Session, data: Mapping[str, Any]) -> None:
        kind = data.get("type")
        if kind == "message":
            await self._accept_message(session, data)
        elif kind == "new_thread":
            thread_id = new_thread_id()
            session.threads.add(thread_id)
            await session.socket.send_json({"type": "thread", "thread_id": thread_id})
        elif kind == "ping":
            await session.socket.send_json({"type": "pong"})
        else:
            known = "'message', 'new_thread' or 'ping'"
            await session.send_error("unknown_type", f"Unknown message type; use {known}.")

    async def _accept_message(self, session: _Session, data: Mapping[str, Any]) -> None:
        text = data.get("text")
        thread_id = data.get("thread_id", session.thread_id)
        if not isinstance(text, str) or not text.strip():
            await session.send_error("invalid_message", "A message needs a non-empty 'text'.")
        elif thread_id not in session.threads:
            await session.send_error(
                "unknown_thread", "That thread id was not issued to you; ask for 'new_thread'."
            )
        elif self._closing:
            await session.send_error("shutting_down", "The server is shutting down.")
        else:
            session.start(self._run(session, str(thread_id), text))

    async def _run(self, session: _Session, thread_id: str, text: str) -> None:
        context = UserExecutionContext(
            user_id=session.user_id,
            thread_id=thread_id,
            run_id=new_run_id(),
            websocket_client_id=session.connection.connection_id if session.connection else None,
        )
        try:
            async with user_scope(context):
                engine = await _settle(self._user_engine())
                await engine.execute_agent(self.agent_name, text)
        except UserEngineLimitError as exc:
            await session.send_error("engine_limit", str(exc), run_id=context.run_id)
        except FactoryShutdownError:
            await session.send_error("shutting_down", "The server is shutting down.")
        except SlotLedgerUnavailableError as exc:
            logger.warning(str(exc), extra={"user_id": session.user_id, "run_id": context.run_id})
            await session.send_error(
                "backend_unavailable",
                "The shared engine limit cannot be checked right now; try again in a moment.",
                run_id=context.run_id,
            )
        except Exception:
            logger.exception(
                "chat run failed", extra={"user_id": session.user_id, "run_id": context.run_id}
            )
            await session.send_error("internal_error", "The run failed; see the server log.")


def _size(frame: str | bytes) -> int:
    return len(frame.encode("utf-8")) if isinstance(frame, str) else len(frame)


# -- metrics -------------------------------------------------------------------------

_FACTORY_COUNTERS: Final = {
    "total_engines_created": ("engines_created", "Engines created."),
    "total_engines_cleaned": ("engines_cleaned", "Engines cleaned up."),
    "creation_errors": ("engine_creation_errors", "Engine creations that failed."),
    "cleanup_errors": ("engine_cleanup_errors", "Engine cleanups that failed."),
    "timeout_cleanups": ("engine_timeout_cleanups", "Engines closed by the reaper."),
    "user_limit_rejections": ("user_limit_rejections", "Engines refused by the user limit."),
    "reaper_errors": ("reaper_errors", "Reaper sweeps that failed."),
}
_FACTORY_GAUGES: Final = {
    "active_engines_count": ("active_engines", "Engines alive now."),
    "active_users_count": ("active_users", "Users with at least one engine now."),
    "max_engines_per_user": ("max_engines_per_user", "The per-user engine limit."),
    "engine_timeout_seconds": ("engine_timeout_seconds", "Age at which engines are reaped."),
    "cleanup_interval": ("cleanup_interval_seconds", "Seconds between reaper sweeps."),
    "cleanup_task_running": ("reaper_running", "1 while the reaper task runs."),
    "is_shutdown": ("factory_shutdown", "1 once the factory has shut down."),
}
_BRIDGE_COUNTERS: Final = {
    "events_queued": ("bridge_events_queued", "Events queued to connections."),
    "events_sent": ("bridge_events_sent", "Events the sockets accepted."),
    "events_dropped_no_connection": (
        "bridge_events_dropped_no_connection",
        "Events for users with no open connection.",
    ),
    "slow_consumer_disconnects": (
        "bridge_slow_consumer_disconnects",
        "Connections dropped for a full queue.",
    ),
    "failed_socket_disconnects": (
        "bridge_failed_socket_disconnects",
        "Connections dropped after a failed send.",
    ),
}
_BRIDGE_GAUGES: Final = {
    "active_connections": ("bridge_active_connections", "Open connections now."),
    "users_connected": ("bridge_users_connected", "Users with an open connection now."),
}
Table = Mapping[str, tuple[str, str]]


def _families(
    values: Mapping[str, Any], counters: Table, gauges: Table, namespace: str
) -> Iterable[Metric]:
    for key, (name, documentation) in counters.items():
        if key in values:
            yield CounterMetricFamily(f"{namespace}_{name}", documentation, value=values[key])
    for key, (name, documentation) in gauges.items():
        if key in values:
            yield GaugeMetricFamily(f"{namespace}_{name}", documentation, value=values[key])


def engine_metrics(container: containers.Container) -> dict[str, Any]:
    """The factory's metrics (without engine keys) and the bridge's, as one JSON-ready dict.

    Empty parts before the container's resources start; never starts them.
    """
    metrics: dict[str, Any] = {}
    factory = _started(container.engine_factory)
    if isinstance(factory, ExecutionEngineFactory):
        metrics.update(factory.get_factory_metrics(include_keys=False))
    bridge = _started(container.websocket_bridge)
    if bridge is not None:
        metrics.update(cast("ConnectionBridge", bridge).get_metrics())
    return metrics


class EngineMetricsCollector(Collector):
    """A Prometheus collector reading the factory and bridge metrics at every scrape."""

    def __init__(self, container: containers.Container, *, namespace: str = "enginescope") -> None:
        self._container = container
        self.namespace = namespace

    def collect(self) -> Iterable[Metric]:
        """Counters and gauges as they are now; factory metrics only while it runs."""
        factory = _started(self._container.engine_factory)
        if isinstance(factory, ExecutionEngineFactory):
            metrics = factory.get_factory_metrics(include_keys=False)
            yield from _families(metrics, _FACTORY_COUNTERS, _FACTORY_GAUGES, self.namespace)
        bridge = _started(self._container.websocket_bridge)
        if bridge is not None:
            values = cast("ConnectionBridge", bridge).get_metrics()
            yield from _families(values, _BRIDGE_COUNTERS, _BRIDGE_GAUGES, self.namespace)


def metrics_endpoint(
    container: containers.Container, *, registry: CollectorRegistry | None = None
) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint serving the container's metrics in the Prometheus text format.

    Uses ``registry`` or a fresh :class:`CollectorRegistry` (never the global one), so two
    apps in one process do not share or clash on metrics.
    """
    registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
    registry.register(EngineMetricsCollector(container))

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return metrics
