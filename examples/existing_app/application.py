"""``create_app()``: the container, its configuration and the FastAPI app around them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from enginescope.containers.fastapi import engine_lifespan
from fastapi import FastAPI

from .containers import Container
from .endpoints import router

__all__ = ["create_app"]


def create_app(container: Container | None = None) -> FastAPI:
    """The app; ``APP_DATABASE_URL`` picks the database (in-memory SQLite by default)."""
    container = container or Container()
    container.config.db.url.from_env("APP_DATABASE_URL", default=container.config.db.url())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        container.db().create_database()
        yield
        container.db().dispose()

    with_engines = engine_lifespan(container, gateway=container.gateway(), lifespan=lifespan)
    app = FastAPI(title="tasks", lifespan=with_engines)
    app.state.container = container
    app.include_router(router)
    return app
