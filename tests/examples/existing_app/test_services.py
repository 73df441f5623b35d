"""The task tracker's services on a real in-memory SQLite database."""

from __future__ import annotations

import pytest

from examples.existing_app.database import Database
from examples.existing_app.errors import (
    EmailTakenError,
    InvalidTaskError,
    NotAuthenticatedError,
    TaskNotFoundError,
)
from examples.existing_app.repositories import TaskRepository, UserRepository
from examples.existing_app.services import TaskService, UserService


@pytest.fixture
def database() -> Database:
    database = Database("sqlite://")
    database.create_database()
    return database


@pytest.fixture
def users(database: Database) -> UserService:
    return UserService(UserRepository(database.session))


@pytest.fixture
def tasks(database: Database) -> TaskService:
    return TaskService(TaskRepository(database.session))


class TestUserService:
    def test_a_password_is_stored_hashed_and_checked(self, users: UserService) -> None:
        """The stored hash is not the password, and only the right password logs in."""
        user = users.register("Ann@Example.com", "correct horse")
        assert "correct horse" not in user.hashed_password
        assert user.id == users.log_in("ann@example.com", "correct horse").id
        with pytest.raises(NotAuthenticatedError):
            users.log_in("ann@example.com", "wrong horse")

    def test_an_email_registers_once(self, users: UserService) -> None:
        """The same email, whatever its case, cannot sign up twice."""
        users.register("ann@example.com", "correct horse")
        with pytest.raises(EmailTakenError):
            users.register("ANN@example.com ", "another one")

    @pytest.mark.parametrize("token", [None, "", "made-up"])
    def test_an_unknown_token_is_not_authenticated(
        self, users: UserService, token: str | None
    ) -> None:
        """A missing, empty or unknown API token is refused."""
        users.register("ann@example.com", "correct horse")
        with pytest.raises(NotAuthenticatedError):
            users.authenticate(token)


class TestTaskService:
    def test_a_title_is_normalised_and_bounded(self, tasks: TaskService) -> None:
        """Whitespace is collapsed; an empty or overlong title is refused."""
        assert "buy milk" == tasks.add_task(1, "  buy \n milk ").title
        for title in ("   ", "x" * 201):
            with pytest.raises(InvalidTaskError):
                tasks.add_task(1, title)

    def test_open_tasks_leave_out_done_ones_and_other_users(self, tasks: TaskService) -> None:
        """Only the owner's tasks that are not done."""
        first = tasks.add_task(1, "one")
        tasks.add_task(1, "two")
        tasks.add_task(2, "someone else's")
        tasks.complete(1, first.id)
        assert ["two"] == [task.title for task in tasks.open_tasks(1)]

    def test_another_users_task_cannot_be_completed(self, tasks: TaskService) -> None:
        """Completing a task one does not own is not found, and the task stays open."""
        task = tasks.add_task(1, "mine")
        with pytest.raises(TaskNotFoundError):
            tasks.complete(2, task.id)
        assert [False] == [t.done for t in tasks.all_tasks(1)]
