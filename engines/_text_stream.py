"""The buffer that coalesces a run's streamed text into few ``agent_text_delta`` events.

Not API: :class:`enginescope.engines.emitter.UserWebSocketEmitter` owns one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Final

from .errors import InvalidEventSettingError

__all__ = [
    "DEFAULT_INTERVAL_SECONDS",
    "DEFAULT_MAX_CHARS",
    "DEFAULT_OPTIONS",
    "MAX_CHARS_LIMIT",
    "TextBuffer",
    "TextOptions",
    "text_options",
]

DEFAULT_INTERVAL_SECONDS: Final = 0.05
DEFAULT_MAX_CHARS: Final = 256
MAX_CHARS_LIMIT: Final = 2000  # the free-text limit of every event field


def _interval(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise InvalidEventSettingError(
            "text_delta_interval_seconds", value, "a number of seconds >= 0"
        )
    return float(value)


def _max_chars(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CHARS_LIMIT:
        raise InvalidEventSettingError(
            "text_delta_max_chars", value, f"an integer from 1 to {MAX_CHARS_LIMIT}"
        )
    return value


TextOptions = tuple[float, int, Callable[[], float]]
"""Validated ``(interval_seconds, max_chars, clock)`` of a :class:`TextBuffer`."""


def text_options(interval: object, max_chars: object, clock: Callable[[], float]) -> TextOptions:
    """The coalescing settings, checked: :class:`InvalidEventSettingError` names a bad one."""
    return _interval(interval), _max_chars(max_chars), clock


DEFAULT_OPTIONS: Final[TextOptions] = (DEFAULT_INTERVAL_SECONDS, DEFAULT_MAX_CHARS, time.monotonic)


class TextBuffer:
    """Streamed text waiting to be sent, and the rule for when it is due.

    Text is due once ``max_chars`` characters wait or ``interval`` seconds passed since
    the last text went out (the first piece of a run is due at once).
    """

    __slots__ = ("_chars", "_clock", "_interval", "_last_sent", "_max_chars", "_pieces", "agent")

    def __init__(self, options: TextOptions) -> None:
        self._interval, self._max_chars, self._clock = options
        self._pieces: list[str] = []
        self._chars = 0
        self._last_sent = -math.inf
        self.agent = ""

    def __bool__(self) -> bool:
        return self._chars > 0

    def add(self, agent: str, text: str) -> bool:
        """Keep ``text`` from ``agent``; whether the waiting text is due now."""
        self._pieces.append(text)
        self._chars += len(text)
        self.agent = agent
        return self._chars >= self._max_chars or self._clock() - self._last_sent >= self._interval

    def take(self) -> Iterator[str]:
        """Empty the buffer into pieces of at most ``max_chars`` characters."""
        text = "".join(self._pieces)
        self.clear()
        self._last_sent = self._clock()
        size = self._max_chars
        return (text[start : start + size] for start in range(0, len(text), size))

    def clear(self) -> None:
        """Drop the waiting text."""
        self._pieces.clear()
        self._chars = 0
