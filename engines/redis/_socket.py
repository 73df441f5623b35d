"""De-duplication: what a socket (or a replica) must not send twice (not API).

- :class:`StreamSocket` wraps each socket a Redis bridge registers: it skips stream
  entries at or before its position, so a socket joining or rewinding a stream other
  sockets read never gets an entry twice.
- :class:`RecentEvents` remembers, per user, the identity of recent events (``run_id``,
  ``seq``, ``timestamp``) and the entry that first carried it: a later entry with the
  same identity is a publish retried after a lost reply (Redis appended it twice), and the
  reader drops it for every socket.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from ..bridge import SocketLike
from ._stream_ids import StreamId, entry_position

__all__ = ["RecentEvents", "StreamSocket"]

_REMEMBERED: Final = 32  # identities kept per user: a retry lands within a few entries

Identity = tuple[str, int, str]


class StreamSocket:
    """Wraps a socket; skips the stream entries its client already has.

    ``position`` is the id of the last entry the client has; an entry at or before it is
    skipped, so a connection joins a user's stream at its own position and never sees an
    event twice, whoever else reads that stream on this replica. Sends wait until the
    reader placed the socket in its stream (:meth:`start_at`).
    """

    __slots__ = ("_counters", "position", "socket", "subscribed")

    def __init__(self, socket: SocketLike, counters: dict[str, int]) -> None:
        self.socket = socket
        self.position: StreamId | None = None
        self.subscribed = asyncio.Event()
        self._counters = counters

    def __repr__(self) -> str:
        return f"<StreamSocket position={self.position} socket={self.socket!r}>"

    def start_at(self, position: StreamId) -> None:
        """Deliver the entries after ``position`` from now on."""
        self.position = position
        self.subscribed.set()

    async def send_json(self, data: Any) -> None:
        await self.subscribed.wait()
        entry = entry_position(data["stream_id"])
        if self.position is not None and entry <= self.position:
            self._counters["duplicates_skipped"] += 1
            return
        await self.socket.send_json(data)
        self.position = entry
        self._counters["delivered"] += 1

    async def close(self, code: int = 1000) -> None:
        close = getattr(self.socket, "close", None)
        if callable(close):
            result = close(code=code)
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                await result


def _identity(event: dict[str, Any]) -> Identity | None:
    run_id, seq, timestamp = event.get("run_id"), event.get("seq"), event.get("timestamp")
    if isinstance(run_id, str) and type(seq) is int and isinstance(timestamp, str):
        return run_id, seq, timestamp
    return None


class RecentEvents:
    """Per user: the last :data:`_REMEMBERED` event identities and their first entry."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[str, dict[Identity, StreamId]] = {}

    def is_repeat(self, user_id: str, event: dict[str, Any], position: StreamId) -> bool:
        """Whether ``event`` (at ``position``) repeats an earlier entry of the user's stream."""
        identity = _identity(event)
        if identity is None:
            return False
        seen = self._seen.setdefault(user_id, {})
        first = seen.get(identity)
        if first is not None:
            return first < position
        seen[identity] = position
        if len(seen) > _REMEMBERED:
            del seen[next(iter(seen))]
        return False

    def forget(self, user_id: str) -> None:
        """Drop what is remembered of ``user_id`` (no longer followed)."""
        self._seen.pop(user_id, None)
