"""Redis stream entry ids (``"1718000000000-3"``) as ordered pairs (not API)."""

from __future__ import annotations

import re
from typing import Final

from ..errors import InvalidResumeTokenError

__all__ = ["START", "StreamId", "format_stream_id", "parse_stream_id"]

StreamId = tuple[int, int]
"""A parsed Redis stream entry id: ``(milliseconds, sequence)``."""

START: Final[StreamId] = (0, 0)
_STREAM_ID: Final = re.compile(r"\A(\d+)-(\d+)\Z")


def parse_stream_id(value: str) -> StreamId:
    """``"1718000000000-3"`` as ``(1718000000000, 3)``; raises for anything else."""
    match = _STREAM_ID.match(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidResumeTokenError("resume_from", value, "a stream id like '1718000000000-0'")
    return int(match[1]), int(match[2])


def format_stream_id(stream_id: StreamId) -> str:
    """``(1718000000000, 3)`` as ``"1718000000000-3"``."""
    return f"{stream_id[0]}-{stream_id[1]}"
