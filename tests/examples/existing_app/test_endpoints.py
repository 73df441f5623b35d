"""The task tracker's HTTP API, through TestClient, real or with providers overridden."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from examples.existing_app.application import create_app
from examples.existing_app.containers import Container
from examples.existing_app.models import Task

from .conftest import sign_up


class RecordingTaskService:
    """Stands in for ``TaskService``: records what it is asked, answers from memory."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, str]] = []

    def add_task(self, owner_id: int, title: str) -> Task:
        self.calls.append(("add_task", owner_id, title))
        return Task(id=99, owner_id=owner_id, title=title, done=False)

    def all_tasks(self, owner_id: int) -> list[Task]:
        self.calls.append(("all_tasks", owner_id, ""))
        return [Task(id=7, owner_id=owner_id, title="from the fake", done=True)]


class TestAccounts:
    def test_a_new_users_token_authenticates_them(self, client: TestClient) -> None:
        """Sign up, then /me answers with that user."""
        headers = sign_up(client, "ann@example.com")
        assert "ann@example.com" == client.get("/me", headers=headers).json()["email"]

    def test_log_in_gives_the_same_token(self, client: TestClient) -> None:
        """POST /token with the right password returns the user's API token."""
        headers = sign_up(client, "ann@example.com")
        response = client.post(
            "/token", json={"email": "ann@example.com", "password": "correct horse"}
        )
        assert headers["Authorization"] == f"Bearer {response.json()['api_token']}"

    def test_a_taken_email_is_a_conflict(self, client: TestClient) -> None:
        """The same email twice: 409."""
        sign_up(client, "ann@example.com")
        response = client.post("/users", json={"email": "ann@example.com", "password": "x" * 8})
        assert 409 == response.status_code

    @pytest.mark.parametrize("header", [None, "Bearer nope", "Basic abc"])
    def test_without_a_valid_token_it_is_401(self, client: TestClient, header: str | None) -> None:
        """No header, an unknown token or another scheme: 401 with WWW-Authenticate."""
        headers = {"Authorization": header} if header else {}
        response = client.get("/tasks", headers=headers)
        assert (401, "Bearer") == (response.status_code, response.headers["www-authenticate"])


class TestTasks:
    def test_add_list_and_complete(self, client: TestClient) -> None:
        """A task added through the API is listed, then completed."""
        headers = sign_up(client, "ann@example.com")
        task = client.post("/tasks", json={"title": "buy milk"}, headers=headers).json()
        done = client.post(f"/tasks/{task['id']}/done", headers=headers).json()
        listed = client.get("/tasks", headers=headers).json()
        assert [{"id": task["id"], "title": "buy milk", "done": True}] == listed
        assert done == listed[0]

    def test_users_do_not_see_or_touch_each_others_tasks(self, client: TestClient) -> None:
        """Bob lists none of Ann's tasks and cannot complete one (404)."""
        ann, bob = sign_up(client, "ann@example.com"), sign_up(client, "bob@example.com")
        task = client.post("/tasks", json={"title": "ann's"}, headers=ann).json()
        assert [] == client.get("/tasks", headers=bob).json()
        assert 404 == client.post(f"/tasks/{task['id']}/done", headers=bob).status_code

    def test_the_task_service_can_be_overridden(self, app: FastAPI, client: TestClient) -> None:
        """With ``task_service`` overridden, the endpoints use the fake with the caller's id."""
        headers = sign_up(client, "ann@example.com")
        user_id = client.get("/me", headers=headers).json()["id"]
        fake = RecordingTaskService()
        container: Container = app.state.container
        with container.task_service.override(fake):
            added = client.post("/tasks", json={"title": "faked"}, headers=headers).json()
            listed = client.get("/tasks", headers=headers).json()
        assert [("add_task", user_id, "faked"), ("all_tasks", user_id, "")] == fake.calls
        assert (99, ["from the fake"]) == (added["id"], [task["title"] for task in listed])
        assert [] == client.get("/tasks", headers=headers).json()  # override undone


class TestConfiguration:
    def test_app_database_url_chooses_the_database(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With APP_DATABASE_URL on a file, a second app sees the first one's users."""
        monkeypatch.setenv("APP_DATABASE_URL", f"sqlite:///{tmp_path / 'tasks.db'}")
        with TestClient(create_app()) as first:
            headers = sign_up(first, "ann@example.com")
        with TestClient(create_app()) as second:
            assert 200 == second.get("/me", headers=headers).status_code
