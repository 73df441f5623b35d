"""``WebSocketGateway``: serves WebSockets whose every message runs an agent in a user scope.

One socket per :meth:`WebSocketGateway.serve` call: the gateway registers the socket with
the container's bridge, runs every inbound message in its own :func:`user_scope` with a
server-generated run id, and unregisters the socket when it goes. Close codes (RFC 6455):
1001 on shutdown; 1008 for a refused origin, a malformed resume token, or a user already
holding the bridge's ``max_connections_per_user`` sockets (retrying will not help until
one of them closes); 1009 for an oversize frame; 1013 when the event backend does not
answer (retry in a moment).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, cast

from enginescope.engines import (
    BridgeClosedError,
    Connection,
    ConnectionBridge,
    ConnectionLimitError,
    FactoryShutdownError,
    InvalidResumeTokenError,
    ResumableBridge,
    SlotLedgerUnavailableError,
    UserEngineLimitError,
    UserExecutionContext,
)
from starlette.websockets import WebSocket, WebSocketState

from ._awaitable import settle
from ._sessions import Session, new_run_id, new_thread_id
from .lookup import find_engine_container
from .scope import user_scope

__all__ = [
    "GOING_AWAY",
    "MESSAGE_TOO_BIG",
    "POLICY_VIOLATION",
    "TRY_AGAIN_LATER",
    "WebSocketGateway",
]

logger = logging.getLogger(__name__)

GOING_AWAY: Final = 1001  # WebSocket close codes (RFC 6455)
POLICY_VIOLATION: Final = 1008
MESSAGE_TOO_BIG: Final = 1009
TRY_AGAIN_LATER: Final = 1013


class WebSocketGateway:
    """Serves WebSockets whose every inbound message runs ``agent_name`` in a user scope.

    ``bridge`` returns (or resolves to) the connection bridge and ``user_engine`` to the
    engine of the current user scope: the container's providers, passed as providers
    (``container.user_engine`` or, in a container, ``.provider``) so nothing is resolved
    before the resources start. :meth:`for_container` does this for you.

    The protocol is JSON text frames. Inbound: ``{"type": "message", "text": "...",
    "thread_id": optional}``, ``{"type": "new_thread"}``, ``{"type": "ping"}``, and
    ``{"type": "cancel", "run_id": "..."}`` (Stop: a run of this socket ends with
    ``agent_stopped``; any other run id is an ``unknown_run`` error). Outbound:
    a ``session`` event on connect (user id and a server-issued thread id), the agent's
    events, ``thread`` and ``pong`` replies, and ``error`` events (``code``, ``message``).
    The client never chooses a user id or run id, and may only name thread ids this
    socket was issued. A frame over ``max_message_bytes`` closes the socket with 1009;
    bad JSON, an unknown type or a malformed field (``"thread_id": ["x"]``) is an
    ``error`` event (``invalid_json``, ``unknown_type``, ``invalid_message``) and the
    socket stays open.

    ``allowed_origins``: the browser origins (``"https://app.example.com"``) whose pages
    may open a socket, besides the app's own origin (scheme and ``Host`` of the request);
    ``"*"`` allows any. A socket from any other ``Origin`` is refused with 1008 before it
    is served. A client that sends no ``Origin`` (not a browser) is not checked.

    With a bridge whose ``resumable`` is true (a :class:`ResumableBridge`, the Redis
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
        allowed_origins: Iterable[str] = (),
    ) -> None:
        self._bridge = bridge
        self._user_engine = user_engine
        self.agent_name = agent_name
        self.max_message_bytes = max_message_bytes
        self.shutdown_timeout_seconds = shutdown_timeout_seconds
        self.subscribe_timeout_seconds = subscribe_timeout_seconds
        self.allowed_origins = frozenset(_origin(origin) for origin in allowed_origins)
        self._sessions: set[Session] = set()
        self._closing = False

    @classmethod
    def for_container(cls, container: Any, **options: Any) -> WebSocketGateway:
        """A gateway using the ``websocket_bridge`` and ``user_engine`` of ``container``:
        an :class:`EngineContainer` or an application container that composes one."""
        engines = find_engine_container(container, caller="WebSocketGateway.for_container()")
        return cls(bridge=engines.websocket_bridge, user_engine=engines.user_engine, **options)

    def __repr__(self) -> str:
        return (
            f"<WebSocketGateway agent_name={self.agent_name!r} sessions={len(self._sessions)} "
            f"closing={self._closing}>"
        )

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` ran and :meth:`reopen` did not follow: new sockets are refused."""
        return self._closing

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
        if not self._origin_allowed(websocket):
            await self._refuse_origin(websocket)
            return
        if websocket.application_state is WebSocketState.CONNECTING:
            await websocket.accept()
        session = Session(websocket, user_id)
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

    async def aclose(self, code: int = GOING_AWAY, reason: str = "server shutting down") -> None:
        """Refuse new sockets; stop every session's runs, then close its socket with
        ``code``. Idempotent; :meth:`reopen` serves again."""
        self._closing = True
        sessions = tuple(self._sessions)
        await asyncio.gather(*(self._close(session, code, reason) for session in sessions))

    async def close_all(self, code: int = GOING_AWAY, reason: str = "server shutting down") -> None:
        """The former name of :meth:`aclose`, kept working."""
        await self.aclose(code, reason)

    def reopen(self) -> None:
        """Serve new sockets again after :meth:`aclose` (``engine_lifespan`` calls it on
        every startup, so an app started again, or a fresh ``TestClient``, is served)."""
        self._closing = False

    def _origin_allowed(self, websocket: WebSocket) -> bool:
        origin = websocket.headers.get("origin")
        if origin is None or "*" in self.allowed_origins:
            return True
        origin = _origin(origin)
        return origin in self.allowed_origins or origin == _own_origin(websocket)

    async def _refuse_origin(self, websocket: WebSocket) -> None:
        origin = websocket.headers.get("origin")
        logger.warning("WebSocket from a foreign origin refused", extra={"origin": origin})
        if websocket.application_state is WebSocketState.CONNECTED:
            with contextlib.suppress(RuntimeError, OSError):
                await websocket.send_json(_origin_error(origin))
        with contextlib.suppress(RuntimeError, OSError):
            await websocket.close(POLICY_VIOLATION, "origin not allowed")

    async def _close(self, session: Session, code: int, reason: str) -> None:
        await session.stop_runs(self.shutdown_timeout_seconds)
        bridge = await self._connection_bridge()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.shutdown_timeout_seconds):
                await bridge.flush(session.user_id)
        bridge.unregister_connection(session.connection)
        await session.socket.close(code, reason)

    async def _connection_bridge(self) -> ConnectionBridge:
        return cast("ConnectionBridge", await settle(self._bridge()))  # the container's bridge

    async def _connect(
        self, bridge: ConnectionBridge, session: Session, resume_from: str | None
    ) -> Connection | None:
        """Register the session's socket; ``None`` once it was refused and closed."""
        try:
            if bridge.resumable:
                resumable = cast("ResumableBridge", bridge)
                return await self._subscribe(resumable, session, resume_from)
            return bridge.register_connection(session.user_id, session.socket)
        except BridgeClosedError:
            await session.socket.close(GOING_AWAY, "server shutting down")
        except ConnectionLimitError as exc:
            await session.refuse("connection_limit", str(exc), POLICY_VIOLATION, "too many sockets")
        except InvalidResumeTokenError as exc:
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
        self, bridge: ResumableBridge, session: Session, resume_from: str | None
    ) -> Connection:
        """``bridge.connect``, bounded: it waits for Redis while Redis is down."""
        session.resumable = True
        async with asyncio.timeout(self.subscribe_timeout_seconds):
            return await bridge.connect(session.user_id, session.socket, resume_from=resume_from)

    async def _greet(self, session: Session, resume_from: str | None) -> None:
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

    async def _receive(self, session: Session) -> None:
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

    async def _dispatch(self, session: Session, frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            await session.send_error("invalid_message", "Send JSON text frames, not binary.")
            return
        try:
            data = json.loads(frame)
        except (ValueError, RecursionError):  # RecursionError: nested too deep to parse
            await session.send_error("invalid_json", "The message is not valid JSON.")
            return
        if not isinstance(data, dict):
            await session.send_error("invalid_message", "A message is a JSON object.")
            return
        if "\\u" in frame and not _is_unicode(data):  # only an escape makes a lone surrogate
            await session.send_error(
                "invalid_message", "A message's strings are Unicode text (no lone surrogates)."
            )
            return
        await self._handle(session, data)

    async def _handle(self, session: Session, data: Mapping[str, Any]) -> None:
        kind = data.get("type")
        if kind is not None and not isinstance(kind, str):
            await session.send_error("invalid_message", "A message's 'type' is a string.")
        elif kind == "message":
            await self._accept_message(session, data)
        elif kind == "new_thread":
            thread_id = new_thread_id()
            session.threads.add(thread_id)
            await session.socket.send_json({"type": "thread", "thread_id": thread_id})
        elif kind == "ping":
            await session.socket.send_json({"type": "pong"})
        elif kind == "cancel":
            await self._cancel(session, data.get("run_id"))
        else:
            known = "'message', 'new_thread', 'cancel' or 'ping'"
            await session.send_error("unknown_type", f"Unknown message type; use {known}.")

    async def _accept_message(self, session: Session, data: Mapping[str, Any]) -> None:
        text = data.get("text")
        thread_id = data.get("thread_id", session.thread_id)
        if not isinstance(text, str) or not text.strip():
            await session.send_error("invalid_message", "A message needs a non-empty 'text'.")
        elif isinstance(thread_id, list | dict):
            await session.send_error(
                "invalid_message", "A message's 'thread_id' is a string issued to you, or absent."
            )
        elif thread_id not in session.threads:
            await session.send_error(
                "unknown_thread", "That thread id was not issued to you; ask for 'new_thread'."
            )
        elif self._closing:
            await session.send_error("shutting_down", "The server is shutting down.")
        else:
            run_id = new_run_id()
            session.start(self._run(session, str(thread_id), text, run_id), run_id)

    async def _cancel(self, session: Session, run_id: object) -> None:
        if not isinstance(run_id, str) or not session.cancel(run_id):
            await session.send_error(
                "unknown_run",
                "That run id is not a running run of this socket.",
                run_id=run_id if isinstance(run_id, str) else None,
            )

    async def _run(self, session: Session, thread_id: str, text: str, run_id: str) -> None:
        context = UserExecutionContext(
            user_id=session.user_id,
            thread_id=thread_id,
            run_id=run_id,
            websocket_client_id=session.connection.connection_id if session.connection else None,
        )
        try:
            async with user_scope(context):
                engine = await settle(self._user_engine())
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


def _is_unicode(data: object) -> bool:
    """Whether every string in parsed JSON can be encoded (no lone surrogate escapes), so it
    can be echoed, stored and sent on."""
    try:
        json.dumps(data, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


def _size(frame: str | bytes) -> int:
    return len(frame.encode("utf-8")) if isinstance(frame, str) else len(frame)


def _origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def _own_origin(websocket: WebSocket) -> str:
    """The app's own origin as a browser writes it: ``http(s)://`` and the request's Host."""
    scheme = {"ws": "http", "wss": "https"}.get(websocket.url.scheme, websocket.url.scheme)
    host = websocket.headers.get("host") or websocket.url.netloc
    return _origin(f"{scheme}://{host}")


def _origin_error(origin: str | None) -> dict[str, Any]:
    return {
        "type": "error",
        "code": "origin_not_allowed",
        "message": f"Pages from {origin!r} may not open this socket; "
        "add the origin to the gateway's allowed_origins if it is yours.",
    }
