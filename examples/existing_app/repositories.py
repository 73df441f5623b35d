"""Data access: each repository opens a session per call through ``session_factory``."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

from sqlalchemy import select
from sqlalchemy.orm import Session

from .errors import TaskNotFoundError, UserNotFoundError
from .models import Task, User

__all__ = ["TaskRepository", "UserRepository"]

SessionFactory = Callable[[], AbstractContextManager[Session]]


class UserRepository:
    def __init__(self, session_factory: SessionFactory) -> None:
        self.session_factory = session_factory

    def add(self, email: str, hashed_password: str, api_token: str) -> User:
        with self.session_factory() as session:
            user = User(email=email, hashed_password=hashed_password, api_token=api_token)
            session.add(user)
            session.commit()
            session.refresh(user)
            return user

    def get_by_id(self, user_id: int) -> User:
        with self.session_factory() as session:
            user = session.get(User, user_id)
            if user is None:
                raise UserNotFoundError(user_id)
            return user

    def get_by_email(self, email: str) -> User | None:
        with self.session_factory() as session:
            return session.scalars(select(User).where(User.email == email)).first()

    def get_by_token(self, api_token: str) -> User | None:
        with self.session_factory() as session:
            return session.scalars(select(User).where(User.api_token == api_token)).first()


class TaskRepository:
    def __init__(self, session_factory: SessionFactory) -> None:
        self.session_factory = session_factory

    def add(self, owner_id: int, title: str) -> Task:
        with self.session_factory() as session:
            task = Task(owner_id=owner_id, title=title)
            session.add(task)
            session.commit()
            session.refresh(task)
            return task

    def list_for(self, owner_id: int, *, done: bool | None = None) -> list[Task]:
        query = select(Task).where(Task.owner_id == owner_id).order_by(Task.id)
        if done is not None:
            query = query.where(Task.done == done)
        with self.session_factory() as session:
            return list(session.scalars(query))

    def mark_done(self, owner_id: int, task_id: int) -> Task:
        """Only the owner's own task; another user's is not found, as if it did not exist."""
        with self.session_factory() as session:
            task = session.get(Task, task_id)
            if task is None or task.owner_id != owner_id:
                raise TaskNotFoundError(task_id)
            task.done = True
            session.commit()
            session.refresh(task)
            return task
