"""FastAPI / Starlette glue: a lifespan and a WebSocket gateway running messages in user scopes.

For an app built on :class:`EngineContainer` (or on a container that composes one)::

    container = EngineContainer()
    gateway = WebSocketGateway.for_container(container, agent_name="assistant")
    app = FastAPI(lifespan=engine_lifespan(container, gateway=gateway))
    app.add_route("/metrics", metrics_endpoint(container))

    @app.websocket("/ws")
    async def chat(websocket: WebSocket) -> None:
        user_id = ...  # from your authentication, never from the client
        await gateway.serve(websocket, user_id)

:func:`engine_lifespan` starts the container's resources (the engine factory), optionally
around the app's own lifespan, and on shutdown closes every WebSocket session still open
with 1001 ("going away"), then shuts the resources down. :class:`WebSocketGateway` serves
one socket per call: it registers the socket with the container's bridge, runs every
inbound message in its own :func:`user_scope` with a server-generated run id, and
unregisters the socket when it goes. With the Redis bridge (``ENGINESCOPE_BACKEND=redis``)
a client may resume: it passes the ``stream_id`` of the last event it received,
``gateway.serve(websocket, user_id, resume_from=...)``, and receives every event it missed,
whichever replica ran it.

The gateway lives in :mod:`enginescope.containers.gateway`, the Prometheus helpers in
:mod:`enginescope.containers.prometheus` and the HTTP dependency in
:mod:`enginescope.containers.dependencies`; all are importable from here as well.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from enginescope.engines import ConnectionBridge, ResumableBridge

from ._awaitable import settle
from ._sessions import new_run_id, new_thread_id
from .dependencies import user_engine_dependency
from .gateway import (
    GOING_AWAY,
    MESSAGE_TOO_BIG,
    POLICY_VIOLATION,
    TRY_AGAIN_LATER,
    WebSocketGateway,
)
from .prometheus import EngineMetricsCollector, engine_metrics, metrics_endpoint

__all__ = [
    "GOING_AWAY",
    "MESSAGE_TOO_BIG",
    "POLICY_VIOLATION",
    "TRY_AGAIN_LATER",
    "ConnectionBridge",
    "EngineMetricsCollector",
    "Lifespan",
    "ResumableBridge",
    "WebSocketGateway",
    "engine_lifespan",
    "engine_metrics",
    "metrics_endpoint",
    "new_run_id",
    "new_thread_id",
    "user_engine_dependency",
]

logger = logging.getLogger(__name__)

Lifespan = Callable[[Any], contextlib.AbstractAsyncContextManager[Any]]


def engine_lifespan(
    container: Any, *, gateway: WebSocketGateway | None = None, lifespan: Lifespan | None = None
) -> Lifespan:
    """A lifespan that starts ``container``'s resources and, on shutdown, stops them.

    Startup: ``init_resources()``, then ``gateway.reopen()`` (a gateway serves again each
    time the app starts), then the app's own ``lifespan`` if given (what it yields is the
    app's state). Shutdown, in reverse: the app's lifespan ends, ``gateway.aclose()``
    closes the sockets still open with 1001, then ``shutdown_resources()`` closes every
    engine, then the bridge.

    FastAPI and Starlette do not run ``on_startup`` / ``@app.on_event`` handlers once a
    lifespan is given; a warning names any that are registered: move them into a lifespan
    of your own and pass it as ``lifespan=``. With uvicorn, Ctrl-C (SIGINT) makes the
    server close open WebSockets itself, with 1012 ("service restart"), before the
    lifespan's shutdown runs; 1001 reaches the sockets still open then.
    """

    @contextlib.asynccontextmanager
    async def run(app: Any) -> AsyncIterator[Any]:
        _warn_of_ignored_handlers(app)
        await settle(container.init_resources())
        try:
            if gateway is not None:
                gateway.reopen()
            if lifespan is None:
                yield None
            else:
                async with lifespan(app) as state:
                    yield state
        finally:
            if gateway is not None:
                await gateway.aclose()
            await settle(container.shutdown_resources())

    return run


def _warn_of_ignored_handlers(app: Any) -> None:
    router = getattr(app, "router", None)
    handlers = [*getattr(router, "on_startup", ()), *getattr(router, "on_shutdown", ())]
    if handlers:
        names = ", ".join(getattr(h, "__qualname__", repr(h)) for h in handlers)
        logger.warning(
            "startup/shutdown handlers do not run when the app has a lifespan: %s; move them "
            "into a lifespan and pass it as engine_lifespan(..., lifespan=...)",
            names,
            extra={"handlers": names},
        )
