"""The socket a Redis bridge registers with its local bridge: it skips what its client has.

Not API: :class:`~enginescope.engines.redis.RedisWebSocketBridge` wraps each socket it is
given in a :class:`StreamSocket`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..bridge import SocketLike
from ._stream_ids import StreamId, parse_stream_id

__all__ = ["StreamSocket"]


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
        entry = parse_stream_id(data["stream_id"])
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
