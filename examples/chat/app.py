"""The chat app: FastAPI, one page, a login, a WebSocket, metrics.

``create_app()`` builds a :class:`ChatContainer` (the app's settings, the token signer,
the WebSocket gateway and an :class:`EngineContainer` composed into it), wires this
module's endpoints to it with dependency-injector, and returns the FastAPI app. The
container's resources (the bridge and the engine factory) start and stop with the app's
lifespan. Run it with ``python -m examples.chat`` or
``uvicorn --factory examples.chat.app:create_app``.
"""

import asyncio
import contextlib
import inspect
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, NamedTuple

from dependency_injector import containers, providers
from dependency_injector.wiring import Provide, inject
from enginescope.containers import EngineContainer
from enginescope.containers.fastapi import (
    POLICY_VIOLATION,
    WebSocketGateway,
    engine_lifespan,
    engine_metrics,
    metrics_endpoint,
)
from enginescope.engines import AgentRegistry
from fastapi import APIRouter, Depends, FastAPI, HTTPException, WebSocket
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from .agent import AGENT_NAME
from .auth import (
    MAX_NAME_LENGTH,
    InvalidNameError,
    InvalidTokenError,
    TokenSigner,
    clean_name,
    new_user_id,
)
from .llm import make_llm_agent
from .settings import ChatSettings

__all__ = ["ChatContainer", "create_app"]

logger = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
MAX_AUTH_FRAME_BYTES = 2048


def build_agent_registry(settings: ChatSettings) -> AgentRegistry:
    """The chat agent (``CHAT_MODEL``'s LLM, or offline), with the settings' tool delay."""
    registry = AgentRegistry()
    registry.register(AGENT_NAME, make_llm_agent(settings.model, settings.tool_delay_seconds))
    return registry


def build_signer(settings: ChatSettings) -> TokenSigner:
    return TokenSigner(settings.secret.get_secret_value(), settings.token_ttl_seconds)


class ChatContainer(containers.DeclarativeContainer):
    """The app's container; ``engines`` is an :class:`EngineContainer` with our agent."""

    settings = providers.Singleton(ChatSettings)
    engines = providers.Container(
        EngineContainer, agent_registry=providers.Singleton(build_agent_registry, settings)
    )
    tokens = providers.Singleton(build_signer, settings)
    gateway = providers.Singleton(
        WebSocketGateway,
        bridge=engines.websocket_bridge.provider,
        user_engine=engines.user_engine.provider,
        agent_name=AGENT_NAME,
        max_message_bytes=settings.provided.max_message_bytes,
        subscribe_timeout_seconds=settings.provided.subscribe_timeout_seconds,
    )


class LoginRequest(BaseModel):
    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)


class LoginResponse(BaseModel):
    token: str
    user_id: str
    name: str
    expires_at: int


router = APIRouter()


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.post("/login")
@inject
async def login(
    request: LoginRequest, tokens: Annotated[TokenSigner, Depends(Provide[ChatContainer.tokens])]
) -> LoginResponse:
    """A fresh user id for ``name`` and a signed token that expires."""
    try:
        user_id = new_user_id(request.name)
    except InvalidNameError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    token = tokens.issue(user_id, clean_name(request.name))
    claims = tokens.verify(token)
    return LoginResponse(
        token=token, user_id=user_id, name=claims.name, expires_at=claims.expires_at
    )


@router.get("/api/metrics")
@inject
async def api_metrics(
    engines: Annotated[Any, Depends(Provide[ChatContainer.engines])],
    gateway: Annotated[WebSocketGateway, Depends(Provide[ChatContainer.gateway])],
) -> dict[str, Any]:
    """Live factory and bridge metrics as JSON, for the page's panel."""
    return {**engine_metrics(engines), "websocket_sessions": gateway.session_count}


@router.websocket("/ws")
@inject
async def chat_socket(
    websocket: WebSocket,
    tokens: Annotated[TokenSigner, Depends(Provide[ChatContainer.tokens])],
    gateway: Annotated[WebSocketGateway, Depends(Provide[ChatContainer.gateway])],
    settings: Annotated[ChatSettings, Depends(Provide[ChatContainer.settings])],
) -> None:
    """Authenticate with a first ``{"type": "auth", "token": ...}`` frame, then serve the
    socket; a missing, forged or expired token closes it with 1008. A token in the URL
    (``?token=``) is refused with 1008 too: servers write URLs to their access logs.

    A client that reconnects may add ``"resume_from"`` to the auth frame: the
    ``stream_id`` of the last event it received, to be sent what it missed.
    """
    await websocket.accept()
    if "token" in websocket.query_params:
        await websocket.close(POLICY_VIOLATION, "unauthorized: send the token in the first frame")
        return
    auth = await _first_frame_auth(websocket, settings.auth_timeout_seconds)
    try:
        claims = tokens.verify(auth.token if auth else None)
    except InvalidTokenError as exc:
        with contextlib.suppress(RuntimeError):  # the client may be gone already
            await websocket.close(POLICY_VIOLATION, f"unauthorized: {exc.reason}")
        return
    resume_from = auth.resume_from if auth else None
    await gateway.serve(websocket, claims.user_id, resume_from=resume_from)


class _Auth(NamedTuple):
    """What a client authenticates with: its token and, on a reconnect, where to resume."""

    token: str
    resume_from: str | None = None


async def _first_frame_auth(websocket: WebSocket, timeout: float) -> _Auth | None:
    try:
        async with asyncio.timeout(timeout):
            message = await websocket.receive()
    except TimeoutError:
        return None
    text = message.get("text")
    if not isinstance(text, str) or len(text.encode("utf-8")) > MAX_AUTH_FRAME_BYTES:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("type") != "auth":
        return None
    token = data.get("token")
    return _Auth(token, _resume_from(data)) if isinstance(token, str) else None


def _resume_from(data: dict[str, Any]) -> str | None:
    """The frame's ``resume_from``; any other JSON than a string is passed on as JSON text,
    for the gateway to refuse by name."""
    value = data.get("resume_from")
    return value if value is None or isinstance(value, str) else json.dumps(value)


def _lifespan(container: ChatContainer) -> Any:
    """The glue's lifespan, then one log line with the factory's final metrics."""
    engines = container.engines()
    run_resources = engine_lifespan(engines, gateway=container.gateway())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with run_resources(app):
            factory = await _resolved(engines.engine_factory())
            yield
        final = factory.get_factory_metrics(include_keys=True)
        logger.info("final engine metrics %s", json.dumps(final, sort_keys=True))

    return lifespan


async def _resolved(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def create_app(container: ChatContainer | None = None) -> FastAPI:
    """The chat app around ``container`` (a fresh :class:`ChatContainer` by default)."""
    container = container or ChatContainer()
    container.wire(modules=[__name__])
    app = FastAPI(title="enginescope chat", lifespan=_lifespan(container))
    app.state.container = container
    app.include_router(router)
    app.add_route("/metrics", metrics_endpoint(container.engines()), include_in_schema=False)
    return app
