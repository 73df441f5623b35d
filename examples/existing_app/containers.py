"""The application container: configuration, the database, repositories and services,
and the engines of the chat agent."""

from __future__ import annotations

from dependency_injector import containers, providers
from enginescope.containers import EngineContainer
from enginescope.containers.fastapi import WebSocketGateway

from .agents import AGENT_NAME, build_agent_registry
from .database import Database
from .repositories import TaskRepository, UserRepository
from .services import TaskService, UserService

__all__ = ["DEFAULTS", "Container"]

DEFAULTS = {
    "db": {"url": "sqlite://", "echo": False},
    "engines": {"max_engines_per_user": 2},
}


class Container(containers.DeclarativeContainer):
    wiring_config = containers.WiringConfiguration(modules=[".endpoints"])

    config = providers.Configuration(default=DEFAULTS)

    db = providers.Singleton(Database, url=config.db.url, echo=config.db.echo)

    user_repository = providers.Factory(UserRepository, session_factory=db.provided.session)
    task_repository = providers.Factory(TaskRepository, session_factory=db.provided.session)

    user_service = providers.Factory(UserService, user_repository=user_repository)
    task_service = providers.Factory(TaskService, task_repository=task_repository)

    engines = providers.Container(
        EngineContainer,
        settings=config.engines,
        agent_registry=providers.Singleton(build_agent_registry, task_service.provider),
    )
    gateway = providers.Singleton(
        WebSocketGateway,
        bridge=engines.websocket_bridge.provider,
        user_engine=engines.user_engine.provider,
        agent_name=AGENT_NAME,
    )
