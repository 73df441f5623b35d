"""The HTTP API. Every endpoint gets its service from the container through wiring.

No ``from __future__ import annotations`` here: wiring reads the ``Provide`` markers
from the evaluated ``Annotated`` hints.
"""

import asyncio
import contextlib
import json
from typing import Annotated

from dependency_injector.wiring import Provide, inject
from enginescope.containers.fastapi import POLICY_VIOLATION, WebSocketGateway
from fastapi import APIRouter, Depends, Header, HTTPException, WebSocket, status
from pydantic import BaseModel, Field

from .containers import Container
from .errors import (
    EmailTakenError,
    InvalidTaskError,
    NotAuthenticatedError,
    TaskNotFoundError,
)
from .models import Task, User
from .services import MAX_TITLE_LENGTH, TaskService, UserService

__all__ = ["router"]

router = APIRouter()
AUTH_TIMEOUT_SECONDS = 10.0


class Credentials(BaseModel):
    email: str = Field(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")
    password: str = Field(min_length=8, max_length=200)


class UserOut(BaseModel):
    id: int
    email: str


class TokenOut(BaseModel):
    api_token: str


class NewTask(BaseModel):
    title: str = Field(min_length=1, max_length=MAX_TITLE_LENGTH)


class TaskOut(BaseModel):
    id: int
    title: str
    done: bool

    @classmethod
    def of(cls, task: Task) -> "TaskOut":
        return cls(id=task.id, title=task.title, done=task.done)


@inject
def current_user(
    user_service: Annotated[UserService, Depends(Provide[Container.user_service])],
    authorization: Annotated[str | None, Header()] = None,
) -> User:
    """The user whose ``Authorization: Bearer <api token>`` this is; 401 otherwise."""
    scheme, _, token = (authorization or "").partition(" ")
    try:
        return user_service.authenticate(token if scheme.lower() == "bearer" else None)
    except NotAuthenticatedError as exc:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, str(exc), headers={"WWW-Authenticate": "Bearer"}
        ) from None


CurrentUser = Annotated[User, Depends(current_user)]


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.post("/users", status_code=status.HTTP_201_CREATED)
@inject
def sign_up(
    credentials: Credentials,
    user_service: Annotated[UserService, Depends(Provide[Container.user_service])],
) -> TokenOut:
    try:
        user = user_service.register(credentials.email, credentials.password)
    except EmailTakenError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    return TokenOut(api_token=user.api_token)


@router.post("/token")
@inject
def log_in(
    credentials: Credentials,
    user_service: Annotated[UserService, Depends(Provide[Container.user_service])],
) -> TokenOut:
    try:
        user = user_service.log_in(credentials.email, credentials.password)
    except NotAuthenticatedError as exc:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc)) from None
    return TokenOut(api_token=user.api_token)


@router.get("/me")
def me(user: CurrentUser) -> UserOut:
    return UserOut(id=user.id, email=user.email)


@router.get("/tasks")
@inject
def list_tasks(
    user: CurrentUser,
    task_service: Annotated[TaskService, Depends(Provide[Container.task_service])],
) -> list[TaskOut]:
    return [TaskOut.of(task) for task in task_service.all_tasks(user.id)]


@router.post("/tasks", status_code=status.HTTP_201_CREATED)
@inject
def add_task(
    new: NewTask,
    user: CurrentUser,
    task_service: Annotated[TaskService, Depends(Provide[Container.task_service])],
) -> TaskOut:
    try:
        return TaskOut.of(task_service.add_task(user.id, new.title))
    except InvalidTaskError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None


@router.post("/tasks/{task_id}/done")
@inject
def complete_task(
    task_id: int,
    user: CurrentUser,
    task_service: Annotated[TaskService, Depends(Provide[Container.task_service])],
) -> TaskOut:
    try:
        return TaskOut.of(task_service.complete(user.id, task_id))
    except TaskNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None


@router.websocket("/ws")
@inject
async def chat(
    websocket: WebSocket,
    user_service: Annotated[UserService, Depends(Provide[Container.user_service])],
    gateway: Annotated[WebSocketGateway, Depends(Provide[Container.gateway])],
) -> None:
    """Chat with the tasks agent. The first frame is ``{"type": "auth", "token": ...}``
    with the user's API token; then the gateway's protocol (see the README)."""
    await websocket.accept()
    try:
        user = user_service.authenticate(await _first_frame_token(websocket))
    except NotAuthenticatedError:
        with contextlib.suppress(RuntimeError):  # the client may be gone already
            await websocket.close(POLICY_VIOLATION, "unauthorized")
        return
    await gateway.serve(websocket, str(user.id))


async def _first_frame_token(websocket: WebSocket) -> str | None:
    try:
        async with asyncio.timeout(AUTH_TIMEOUT_SECONDS):
            frame = await websocket.receive_text()
        data = json.loads(frame)
    except (TimeoutError, ValueError, KeyError, RuntimeError):
        return None
    token = data.get("token") if isinstance(data, dict) and data.get("type") == "auth" else None
    return token if isinstance(token, str) else None
