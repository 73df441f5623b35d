"""Caps on what one client can do: login attempts per address, messages per socket.

Both are token buckets: ``capacity`` tokens, refilled evenly over ``per_seconds``; each
attempt spends one, and an empty bucket says how long until the next one.
:class:`RateLimiter` keeps a bucket per key (a client address) for ``/login``;
:class:`MessageRateLimit` is an ASGI middleware giving each WebSocket on one path its
own bucket: a frame over the bound is answered with a ``rate_limited`` error event and
dropped, and the socket stays open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["MessageRateLimit", "RateLimiter", "TokenBucket"]

Clock = Callable[[], float]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


class TokenBucket:
    """``capacity`` attempts at once, refilled at ``capacity / per_seconds`` a second."""

    def __init__(self, capacity: float, per_seconds: float, clock: Clock) -> None:
        self.capacity = capacity
        self._rate = capacity / per_seconds
        self._clock = clock
        self._tokens = capacity
        self._at = clock()

    def __repr__(self) -> str:
        return f"<TokenBucket capacity={self.capacity} tokens={self._tokens:.2f}>"

    def take(self) -> float:
        """Spend one token: ``0.0``, or the seconds until one is there (nothing spent)."""
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self._rate


class RateLimiter:
    """A :class:`TokenBucket` per key; the ``max_keys`` most recently seen are kept."""

    def __init__(
        self,
        capacity: float,
        per_seconds: float,
        *,
        clock: Clock = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        self.capacity = capacity
        self.per_seconds = per_seconds
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __repr__(self) -> str:
        return f"<RateLimiter {self.capacity}/{self.per_seconds}s keys={len(self._buckets)}>"

    def take(self, key: str) -> float:
        """``0.0`` when ``key`` may go on, else the seconds it has to wait."""
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = TokenBucket(self.capacity, self.per_seconds, self._clock)
        self._buckets[key] = bucket
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return bucket.take()


def _rate_limited(per_second: float, wait: float) -> Message:
    event = {
        "type": "error",
        "code": "rate_limited",
        "message": f"More than {per_second:g} messages a second: this one was dropped; "
        f"send again in {wait:.1f}s.",
        "retry_after_seconds": round(wait, 3),
    }
    return {"type": "websocket.send", "text": json.dumps(event)}


class MessageRateLimit:
    """ASGI middleware: each WebSocket on ``path`` may send ``per_second`` frames a second."""

    def __init__(
        self, app: ASGIApp, *, path: str, per_second: float, clock: Clock = time.monotonic
    ) -> None:
        self.app = app
        self.path = path
        self.per_second = per_second
        self._clock = clock

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        await self.app(scope, *self._limited(receive, send))

    def _limited(self, receive: Receive, send: Send) -> tuple[Receive, Send]:
        """``receive`` that drops (and answers) frames over the bound, and the one ``send``
        both the app and those answers go through, in turn, never after the close."""
        bucket = TokenBucket(self.per_second, 1.0, self._clock)
        lock = asyncio.Lock()
        closed = False

        async def serial_send(message: Message) -> None:
            nonlocal closed
            async with lock:
                closed = closed or message["type"] == "websocket.close"
                await send(message)

        async def limited_receive() -> Message:
            while True:
                message = await receive()
                wait = bucket.take() if message["type"] == "websocket.receive" else 0.0
                if not wait:
                    return message
                async with lock:
                    if not closed:
                        with contextlib.suppress(OSError, RuntimeError):  # the client left
                            await send(_rate_limited(self.per_second, wait))

        return limited_receive, serial_send
