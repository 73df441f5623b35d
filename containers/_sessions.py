"""What the gateway keeps per served WebSocket: the one writer of the socket and the session."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable
from typing import Any

from enginescope.engines import Connection
from starlette.websockets import WebSocket, WebSocketState

__all__ = ["SerialSocket", "Session", "error_event", "new_run_id", "new_thread_id"]


def new_run_id() -> str:
    """A server-generated, unguessable run id."""
    return f"run-{uuid.uuid4().hex}"


def new_thread_id() -> str:
    """A server-generated, unguessable thread id."""
    return f"thread-{uuid.uuid4().hex}"


def error_event(code: str, message: str, **fields: Any) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message, **fields}


class SerialSocket:
    """The one writer of a WebSocket: the bridge's sender and the session share it, so
    frames never interleave and nothing is sent after the close frame.

    The first frame goes through :meth:`send_first`; every other waits for it, so the
    greeting comes first even when the bridge replays events at once.
    """

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self._lock = asyncio.Lock()
        self._first_sent = asyncio.Event()
        self.closed = False

    async def send_json(self, data: Any) -> None:
        await self._first_sent.wait()
        await self._send(data)

    async def send_first(self, data: Any) -> None:
        """Send ``data`` ahead of everything else, then let the other frames go."""
        try:
            await self._send(data)
        finally:
            self._first_sent.set()

    async def _send(self, data: Any) -> None:
        async with self._lock:
            if self.closed:
                raise ConnectionError("the WebSocket was closed by the server")
            await self.websocket.send_json(data)

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self._first_sent.set()  # a frame still waiting fails now instead
        async with self._lock:
            if self.closed:
                return
            self.closed = True
            if self.websocket.application_state is WebSocketState.CONNECTED:
                with contextlib.suppress(RuntimeError, OSError):  # the client already left
                    await self.websocket.close(code, reason)


class Session:
    """One served WebSocket: its user, its threads, its runs and its bridge connection."""

    def __init__(self, websocket: WebSocket, user_id: str) -> None:
        self.user_id = user_id
        self.socket = SerialSocket(websocket)
        self.thread_id = new_thread_id()
        self.threads = {self.thread_id}
        self.runs: set[asyncio.Task[None]] = set()
        self.runs_by_id: dict[str, asyncio.Task[None]] = {}
        self.connection: Connection | None = None
        self.resumable = False  # subscribed through a ResumableBridge

    def __repr__(self) -> str:
        return f"<Session user_id={self.user_id!r} runs={len(self.runs)}>"

    async def send_error(self, code: str, message: str, **fields: Any) -> None:
        """An ``error`` event to this socket only; a closed socket is ignored."""
        with contextlib.suppress(ConnectionError, RuntimeError, OSError):
            await self.socket.send_json(error_event(code, message, **fields))

    async def refuse(self, code: str, message: str, close_code: int, reason: str) -> None:
        """An ``error`` event as the socket's first and last frame, then close it."""
        with contextlib.suppress(ConnectionError, RuntimeError, OSError):
            await self.socket.send_first(error_event(code, message))
        await self.socket.close(close_code, reason)

    def start(self, run: Awaitable[None], run_id: str | None = None) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(run)
        self.runs.add(task)
        task.add_done_callback(self.runs.discard)
        if run_id is not None:
            self.runs_by_id[run_id] = task
            task.add_done_callback(lambda _: self.runs_by_id.pop(run_id, None))

    def cancel(self, run_id: str) -> bool:
        """Cancel this socket's run ``run_id`` (it ends with ``agent_stopped``); ``False``
        when no run of this socket has that id (another socket's, or already ended)."""
        task = self.runs_by_id.get(run_id)
        if task is None:
            return False
        task.cancel()
        return True

    async def stop_runs(self, timeout: float) -> None:
        """Cancel this socket's runs and wait (up to ``timeout``) for their scopes to close."""
        runs = tuple(self.runs)
        for task in runs:
            task.cancel()
        if runs:
            await asyncio.wait(runs, timeout=timeout)
