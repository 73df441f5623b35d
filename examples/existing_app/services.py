"""Business rules: sign-up and log-in, and a user's tasks."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from .errors import EmailTakenError, InvalidTaskError, NotAuthenticatedError
from .models import Task, User
from .repositories import TaskRepository, UserRepository

__all__ = ["MAX_TITLE_LENGTH", "TaskService", "UserService", "hash_password", "verify_password"]

MAX_TITLE_LENGTH = 200
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def verify_password(password: str, hashed: str) -> bool:
    _, salt, digest = hashed.split("$")
    candidate = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), **_SCRYPT)
    return hmac.compare_digest(candidate.hex(), digest)


class UserService:
    def __init__(self, user_repository: UserRepository) -> None:
        self._repository = user_repository

    def register(self, email: str, password: str) -> User:
        email = email.strip().lower()
        if self._repository.get_by_email(email) is not None:
            raise EmailTakenError(email)
        token = secrets.token_urlsafe(32)
        return self._repository.add(email, hash_password(password), token)

    def log_in(self, email: str, password: str) -> User:
        user = self._repository.get_by_email(email.strip().lower())
        if user is None or not verify_password(password, user.hashed_password):
            raise NotAuthenticatedError
        return user

    def authenticate(self, api_token: str | None) -> User:
        user = self._repository.get_by_token(api_token) if api_token else None
        if user is None or not user.is_active:
            raise NotAuthenticatedError
        return user

    def get_user(self, user_id: int) -> User:
        return self._repository.get_by_id(user_id)


class TaskService:
    def __init__(self, task_repository: TaskRepository) -> None:
        self._repository = task_repository

    def add_task(self, owner_id: int, title: str) -> Task:
        title = " ".join(title.split())
        if not title or len(title) > MAX_TITLE_LENGTH:
            raise InvalidTaskError(f"A task title has 1 to {MAX_TITLE_LENGTH} characters.")
        return self._repository.add(owner_id, title)

    def open_tasks(self, owner_id: int) -> list[Task]:
        return self._repository.list_for(owner_id, done=False)

    def all_tasks(self, owner_id: int) -> list[Task]:
        return self._repository.list_for(owner_id)

    def complete(self, owner_id: int, task_id: int) -> Task:
        return self._repository.mark_done(owner_id, task_id)
