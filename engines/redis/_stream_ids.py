"""Redis stream entry ids (``"1718000000000-3"``) as ordered pairs (not API)."""

from __future__ import annotations

import re
from typing import Final

from ..errors import InvalidResumeTokenError

__all__ = ["START", "StreamId", "entry_position", "format_stream_id", "parse_stream_id"]

StreamId = tuple[int, int]
"""A parsed Redis stream entry id: ``(milliseconds, sequence)``."""

START: Final[StreamId] = (0, 0)
MAX_PART: Final = 2**64 - 1
"""Redis keeps both parts of a stream id as unsigned 64-bit integers."""

_STREAM_ID: Final = re.compile(r"\A([0-9]{1,20})-([0-9]{1,20})\Z")
_EXPECTED: Final = "a stream id like '1718000000000-0' (two decimal numbers, each at most 2**64-1)"


def parse_stream_id(value: str) -> StreamId:
    """``"1718000000000-3"`` as ``(1718000000000, 3)``; raises
    :class:`InvalidResumeTokenError` for anything Redis would not take as an entry id."""
    match = _STREAM_ID.match(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidResumeTokenError("resume_from", value, _EXPECTED)
    milliseconds, sequence = int(match[1]), int(match[2])
    if milliseconds > MAX_PART or sequence > MAX_PART:
        raise InvalidResumeTokenError("resume_from", value, _EXPECTED)
    return milliseconds, sequence


def format_stream_id(stream_id: StreamId) -> str:
    """``(1718000000000, 3)`` as ``"1718000000000-3"``."""
    return f"{stream_id[0]}-{stream_id[1]}"


def entry_position(entry_id: str) -> StreamId:
    """The position of an id Redis gave (trusted: no validation, three times faster)."""
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence)
