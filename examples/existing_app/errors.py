"""What the services refuse; the endpoints turn each into an HTTP status."""

from __future__ import annotations

__all__ = [
    "EmailTakenError",
    "InvalidTaskError",
    "NotAuthenticatedError",
    "NotFoundError",
    "TaskNotFoundError",
    "UserNotFoundError",
]


class NotFoundError(LookupError):
    entity = "entity"

    def __init__(self, entity_id: int) -> None:
        self.entity_id = entity_id
        super().__init__(f"{self.entity.capitalize()} {entity_id} not found.")


class UserNotFoundError(NotFoundError):
    entity = "user"


class TaskNotFoundError(NotFoundError):
    entity = "task"


class EmailTakenError(ValueError):
    def __init__(self, email: str) -> None:
        self.email = email
        super().__init__(f"{email!r} is already registered; log in instead.")


class InvalidTaskError(ValueError):
    pass


class NotAuthenticatedError(PermissionError):
    def __init__(self) -> None:
        super().__init__("Missing or unknown credentials.")
