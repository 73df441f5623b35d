"""The application container: configuration, the database, repositories and services."""

from __future__ import annotations

from dependency_injector import containers, providers

from .database import Database
from .repositories import TaskRepository, UserRepository
from .services import TaskService, UserService

__all__ = ["DEFAULTS", "Container"]

DEFAULTS = {"db": {"url": "sqlite://", "echo": False}}


class Container(containers.DeclarativeContainer):
    wiring_config = containers.WiringConfiguration(modules=[".endpoints"])

    config = providers.Configuration(default=DEFAULTS)

    db = providers.Singleton(Database, url=config.db.url, echo=config.db.echo)

    user_repository = providers.Factory(UserRepository, session_factory=db.provided.session)
    task_repository = providers.Factory(TaskRepository, session_factory=db.provided.session)

    user_service = providers.Factory(UserService, user_repository=user_repository)
    task_service = providers.Factory(TaskService, task_repository=task_repository)
