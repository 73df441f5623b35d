"""The per-run event emitter: builds a user's agent events and hands them to the bridge.

A :class:`UserWebSocketEmitter` is bound to one ``(user_id, thread_id, run_id)``; every
event it builds carries that user id and goes to that user only. There is no argument to
address anybody else. Tool parameters and results are :func:`sanitize`-d on the way in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from .bridge import WebSocketBridge, require_bridge
from .context import UserExecutionContext, require_identifier
from .sanitize import sanitize, truncate_text

__all__ = ["EVENT_TYPES", "UserWebSocketEmitter", "sanitize"]

logger = logging.getLogger(__name__)

EVENT_TYPES: Final = (
    "agent_started",
    "agent_thinking",
    "tool_executing",
    "tool_completed",
    "agent_completed",
    "agent_error",
)


def _text(value: object) -> str:
    """A bounded string for a free-text field (names, messages, thoughts)."""
    if isinstance(value, str):
        return truncate_text(value)
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
    """

    __slots__ = (
        "_bridge",
        "_closed",
        "_run_id",
        "_sent",
        "_seq",
        "_thread_id",
        "_undelivered",
        "_user_id",
    )

    def __init__(
        self, user_id: str, thread_id: str, run_id: str, websocket_bridge: WebSocketBridge
    ) -> None:
        self._bind(
            require_identifier("user_id", user_id),
            require_identifier("thread_id", thread_id),
            require_identifier("run_id", run_id),
            require_bridge(websocket_bridge),
        )

    @classmethod
    def for_context(
        cls, context: UserExecutionContext, websocket_bridge: WebSocketBridge
    ) -> UserWebSocketEmitter:
        """The emitter of ``context``'s run. The ids are not checked again: a
        :class:`UserExecutionContext` is validated when it is built."""
        emitter = cls.__new__(cls)
        emitter._bind(
            context.user_id, context.thread_id, context.run_id, require_bridge(websocket_bridge)
        )
        return emitter

    def _bind(self, user_id: str, thread_id: str, run_id: str, bridge: WebSocketBridge) -> None:
        self._user_id = user_id
        self._thread_id = thread_id
        self._run_id = run_id
        self._bridge = bridge
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
        extra = sanitize(data) if data is not None else {}
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

    async def close(self) -> None:
        """Stop sending; later ``notify_*`` calls send nothing and return 0. Idempotent."""
        self._closed = True

    async def _emit(self, event_type: str, agent_name: str, data: dict[str, object]) -> int:
        if self._closed:
            self._undelivered += 1
            return 0
        envelope = self._envelope(event_type, agent_name, data)
        try:
            reached = _as_count(await self._bridge.send_to_user(self._user_id, envelope))
        except Exception:
            self._undelivered += 1
            logger.warning(
                "WebSocket bridge failed to send an agent event; the event is dropped",
                exc_info=True,
                extra=self._log_fields(envelope),
            )
            return 0
        if reached > 0:
            self._sent += 1
        else:
            self._undelivered += 1
        return reached

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
