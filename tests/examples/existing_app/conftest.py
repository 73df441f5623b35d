"""Fixtures of the task tracker's tests: a fresh container and app per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from examples.existing_app.application import create_app
from examples.existing_app.containers import Container


@pytest.fixture
def container(monkeypatch: pytest.MonkeyPatch) -> Container:
    """The app's container on a fresh in-memory database."""
    monkeypatch.delenv("APP_DATABASE_URL", raising=False)
    return Container()


@pytest.fixture
def app(container: Container) -> FastAPI:
    return create_app(container)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def sign_up(
    client: TestClient,
    email: str,
    password: str = "correct horse",  # noqa: S107 - a test user's password
) -> dict[str, str]:
    """Register ``email``; the ``Authorization`` header of the new user."""
    response = client.post("/users", json={"email": email, "password": password})
    assert 201 == response.status_code, response.text
    return {"Authorization": f"Bearer {response.json()['api_token']}"}
