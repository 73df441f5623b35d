"""The database: one SQLAlchemy engine and a session per unit of work."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from .models import Base

__all__ = ["Database"]

logger = logging.getLogger(__name__)
IN_MEMORY = ("sqlite://", "sqlite:///:memory:")


class Database:
    """An engine for ``url``; ``session()`` is a context manager that rolls back on error."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self._engine = create_engine(url, echo=echo, **_engine_options(url))
        self._session_factory = sessionmaker(self._engine, expire_on_commit=False)

    def __repr__(self) -> str:
        return f"<Database url={self._engine.url!r}>"

    def create_database(self) -> None:
        Base.metadata.create_all(self._engine)

    def dispose(self) -> None:
        self._engine.dispose()

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        session = self._session_factory()
        try:
            yield session
        except Exception:
            logger.debug("rolling back the session")
            session.rollback()
            raise
        finally:
            session.close()


def _engine_options(url: str) -> dict[str, Any]:
    """SQLite: usable from FastAPI's worker threads; in memory, one shared connection."""
    if not url.startswith("sqlite"):
        return {}
    options: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
    if url in IN_MEMORY:
        options["poolclass"] = StaticPool
    return options
