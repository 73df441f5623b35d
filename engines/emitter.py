"""The per-run event emitter: builds a user's agent events and hands them to the bridge.

A :class:`UserWebSocketEmitter` is bound to one ``(user_id, thread_id, run_id)``; every
event it builds carries that user id and goes to that user only. There is no argument to
address anybody else. Tool parameters and results are :func:`sanitize`-d on the way in,
free text (thoughts, messages, error messages) goes through :func:`redact_text`.

Streamed text (``agent_text_delta``) is coalesced: pieces wait in a buffer and go out as
one event once ``text_delta_max_chars`` characters wait or ``text_delta_interval_seconds``
passed since the last text event, and always before the run's next other event, so the
concatenated deltas are the streamed text and a run cannot flood a socket.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from ._text_stream import (
    DEFAULT_INTERVAL_SECONDS,
    DEFAULT_MAX_CHARS,
    DEFAULT_OPTIONS,
    TextBuffer,
    TextOptions,
    text_options,
)
from .bridge import WebSocketBridge, require_bridge
from .context import UserExecutionContext, require_identifier
from .sanitize import redact_text, sanitize

__all__ = [
    "DEFAULT_TEXT_DELTA_INTERVAL_SECONDS",
    "DEFAULT_TEXT_DELTA_MAX_CHARS",
    "EVENT_TYPES",
    "UserWebSocketEmitter",
    "sanitize",
]

logger = logging.getLogger(__name__)

EVENT_TYPES: Final = (
    "agent_started",
    "agent_thinking",
    "tool_executing",
    "tool_completed",
    "agent_completed",
    "agent_error",
    "agent_text_delta",
    "agent_stopped",
)

DEFAULT_TEXT_DELTA_INTERVAL_SECONDS: Final = DEFAULT_INTERVAL_SECONDS
"""At most one ``agent_text_delta`` per 50 ms of a run, unless enough text waits."""
DEFAULT_TEXT_DELTA_MAX_CHARS: Final = DEFAULT_MAX_CHARS
"""An ``agent_text_delta`` goes out once 256 characters wait, and carries at most that."""


def _text(value: object) -> str:
    """A bounded, redacted string for a free-text field (names, messages, thoughts, errors)."""
    if isinstance(value, str):
        return redact_text(value, 2000)
    text = sanitize(value)
    return text if isinstance(text, str) else str(text)


def _error_message(error: BaseException | str) -> str:
    if not isinstance(error, BaseException):
        return _text(error)
    try:
        message = str(error)
    except Exception:  # noqa: BLE001 - a broken __str__ still yields an error event
        message = ""
    return _text(message or type(error).__name__)


class _Timestamps:
    """UTC ISO 8601 timestamps with microseconds, like ``datetime.now(UTC).isoformat()``.

    ``isoformat()`` costs more than the rest of an event's envelope, so the date and time
    of day are formatted once per second and only the microseconds per event. The second
    and its text are kept as one tuple, so a reader never sees one without the other.
    """

    __slots__ = ("_current",)

    def __init__(self) -> None:
        self._current = (-1, "")

    def __call__(self) -> str:
        now = time.time()
        second, prefix = self._current
        if int(now) != second:
            second = int(now)
            prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._current = (second, prefix)
        return f"{prefix}.{int((now - second) * 1_000_000):06d}+00:00"


_timestamp = _Timestamps()


def _as_count(reached: object) -> int:
    """The bridge's answer as a connection count; anything but a positive int is 0."""
    if isinstance(reached, bool) or not isinstance(reached, int):
        return 0
    return max(reached, 0)


class UserWebSocketEmitter:
    """Sends the agent events of one user's run to that user's connections.

    Each ``notify_*`` returns how many connections the event reached. A failing bridge is
    logged and counted, never raised into the agent. After :meth:`close` nothing is sent.
    ``text_delta_interval_seconds`` and ``text_delta_max_chars`` set how streamed text is
    coalesced (see the module's docstring); ``clock`` is the monotonic clock they use.
    """

    __slots__ = (
        "_bridge",
        "_closed",
        "_pending",
        "_run_id",
        "_sent",
        "_seq",
        "_text_options",
        "_thread_id",
        "_undelivered",
        "_user_id",
    )

    def __init__(
        self,
        user_id: str,
        thread_id: str,
        run_id: str,
        websocket_bridge: WebSocketBridge,
        *,
        text_delta_interval_seconds: float = DEFAULT_TEXT_DELTA_INTERVAL_SECONDS,
        text_delta_max_chars: int = DEFAULT_TEXT_DELTA_MAX_CHARS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bind(
            require_identifier("user_id", user_id),
            require_identifier("thread_id", thread_id),
            require_identifier("run_id", run_id),
            require_bridge(websocket_bridge),
            text_options(text_delta_interval_seconds, text_delta_max_chars, clock),
        )

    @classmethod
    def for_context(
        cls, context: UserExecutionContext, websocket_bridge: WebSocketBridge
    ) -> UserWebSocketEmitter:
        """The emitter of ``context``'s run. The ids are not checked again: a
        :class:`UserExecutionContext` is validated when it is built."""
        emitter = cls.__new__(cls)
        emitter._bind(
            context.user_id,
            context.thread_id,
            context.run_id,
            require_bridge(websocket_bridge),
            DEFAULT_OPTIONS,
        )
        return emitter

    def _bind(
        self,
        user_id: str,
        thread_id: str,
        run_id: str,
        bridge: WebSocketBridge,
        text: TextOptions,
    ) -> None:
        self._user_id = user_id
        self._thread_id = thread_id
        self._run_id = run_id
        self._bridge = bridge
        self._text_options = text
        self._pending: TextBuffer | None = None  # made at the first streamed text
        self._seq = 0
        self._closed = False
        self._sent = 0
        self._undelivered = 0

    def __repr__(self) -> str:
        return (
            f"<UserWebSocketEmitter user_id={self._user_id!r} run_id={self._run_id!r} "
            f"seq={self._seq} closed={self._closed}>"
        )

    @property
    def user_id(self) -> str:
        """The only user this emitter can address."""
        return self._user_id

    @property
    def thread_id(self) -> str:
        """The conversation thread of the run."""
        return self._thread_id

    @property
    def run_id(self) -> str:
        """The run whose events this emitter sends."""
        return self._run_id

    @property
    def is_closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def events_sent(self) -> int:
        """Events the bridge delivered to at least one connection."""
        return self._sent

    @property
    def events_undelivered(self) -> int:
        """Events that reached no connection: none open, the bridge failed, or closed."""
        return self._undelivered

    async def notify_agent_started(
        self, agent_name: str, *, message: str | None = None, data: Mapping[str, Any] | None = None
    ) -> int:
        """An agent run began; ``data`` items are added to the event's data."""
        payload: dict[str, object] = {"message": None if message is None else _text(message)}
        extra = sanitize(data) if data is not None else None
        if isinstance(extra, dict):
            payload.update((key, value) for key, value in extra.items() if key != "message")
        return await self._emit("agent_started", agent_name, payload)

    async def notify_agent_thinking(
        self, agent_name: str, thought: str, *, step: int | None = None
    ) -> int:
        """The agent reports what it is thinking about."""
        payload = {"thought": _text(thought), "step": sanitize(step)}
        return await self._emit("agent_thinking", agent_name, payload)

    async def notify_tool_executing(
        self, agent_name: str, tool_name: str, parameters: Mapping[str, Any] | None = None
    ) -> int:
        """A tool is about to run with (sanitised) ``parameters``."""
        params = {} if parameters is None else sanitize(parameters)
        payload = {"tool_name": _text(tool_name), "parameters": params}
        return await self._emit("tool_executing", agent_name, payload)

    async def notify_tool_completed(
        self,
        agent_name: str,
        tool_name: str,
        result: Any = None,
        *,
        duration_ms: float | None = None,
        error: str | None = None,
    ) -> int:
        """A tool finished with a (sanitised) ``result``, or failed with ``error``."""
        payload = {
            "tool_name": _text(tool_name),
            "result": sanitize(result),
            "duration_ms": sanitize(duration_ms),
            "error": None if error is None else _text(error),
        }
        return await self._emit("tool_completed", agent_name, payload)

    async def notify_agent_completed(
        self, agent_name: str, result: Any = None, *, duration_ms: float | None = None
    ) -> int:
        """The agent run finished with a (sanitised) ``result``."""
        payload = {"result": sanitize(result), "duration_ms": sanitize(duration_ms)}
        return await self._emit("agent_completed", agent_name, payload)

    async def notify_agent_error(
        self, agent_name: str, error: BaseException | str, *, duration_ms: float | None = None
    ) -> int:
        """The agent run failed; the event carries the message and the exception's type."""
        payload = {
            "error": _error_message(error),
            "error_type": type(error).__name__ if isinstance(error, BaseException) else None,
            "duration_ms": sanitize(duration_ms),
        }
        return await self._emit("agent_error", agent_name, payload)

    async def notify_agent_stopped(
        self,
        agent_name: str,
        reason: str,
        *,
        message: str | None = None,
        duration_ms: float | None = None,
    ) -> int:
        """The run was stopped before it finished (``reason``: ``"cancelled"``,
        ``"timeout"`` or ``"engine_closed"``); this is the run's last event."""
        payload = {
            "reason": _text(reason),
            "message": None if message is None else _text(message),
            "duration_ms": sanitize(duration_ms),
        }
        return await self._emit("agent_stopped", agent_name, payload)

    async def notify_agent_text_delta(self, agent_name: str, delta: str) -> int:
        """Streamed text: ``delta`` joins the buffer, which goes out as ``agent_text_delta``
        events when enough text waits or enough time passed. Returns the connections
        reached, 0 while the text waits."""
        if not delta or self._closed:
            return 0
        pending = self._pending
        if pending is None:
            pending = self._pending = TextBuffer(self._text_options)
        elif pending and agent_name != pending.agent:
            await self.flush_text()
        return await self.flush_text() if pending.add(agent_name, delta) else 0

    async def flush_text(self) -> int:
        """Send the streamed text that waits now, in pieces of at most
        ``text_delta_max_chars``. Other events flush first by themselves."""
        pending, reached = self._pending, 0
        if not pending:
            return 0
        agent_name = pending.agent
        for piece in pending.take():
            reached = await self._emit("agent_text_delta", agent_name, {"delta": _text(piece)})
        return reached

    async def close(self) -> None:
        """Stop sending; later ``notify_*`` calls send nothing and return 0. Text still
        waiting is dropped. Idempotent."""
        self.close_now()

    def close_now(self) -> None:
        """:meth:`close`, synchronously (closing an emitter never waits)."""
        self._closed = True
        if self._pending is not None:
            self._pending.clear()

    async def _emit(self, event_type: str, agent_name: str, data: dict[str, object]) -> int:
        if self._closed:
            self._undelivered += 1
            return 0
        if self._pending and event_type != "agent_text_delta":
            await self.flush_text()
        envelope = self._envelope(event_type, agent_name, data)
        try:
            reached = await self._bridge.send_to_user(self._user_id, envelope)
        except Exception:
            self._undelivered += 1
            logger.warning(
                "WebSocket bridge failed to send an agent event; the event is dropped",
                exc_info=True,
                extra=self._log_fields(envelope),
            )
            return 0
        if type(reached) is not int:
            reached = _as_count(reached)
        if reached > 0:
            self._sent += 1
            return reached
        self._undelivered += 1
        return 0

    def _envelope(
        self, event_type: str, agent_name: str, data: dict[str, object]
    ) -> dict[str, Any]:
        self._seq += 1
        return {
            "type": event_type,
            "user_id": self._user_id,
            "thread_id": self._thread_id,
            "run_id": self._run_id,
            "agent_name": _text(agent_name),
            "timestamp": _timestamp(),
            "seq": self._seq,
            "data": data,
        }

    def _log_fields(self, envelope: Mapping[str, Any]) -> dict[str, object]:
        return {
            "user_id": self._user_id,
            "thread_id": self._thread_id,
            "run_id": self._run_id,
            "event_type": envelope["type"],
            "seq": envelope["seq"],
        }
