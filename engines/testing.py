"""Recording fakes for tests: a :class:`RecordingBridge` and a :class:`FakeSocket`; and
:func:`demo_agent`, a deterministic agent (no network, no model) for tests and demos.

They record what they were asked to do, so a test can assert on it::

    bridge = RecordingBridge()
    emitter = UserWebSocketEmitter("u-1", "t-1", "r-1", bridge)
    await emitter.notify_agent_started("triage")
    assert ["agent_started"] == bridge.types_for("u-1")
"""

from __future__ import annotations

import asyncio
import copy
import re
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .bridge import AgentWebSocketBridge

if TYPE_CHECKING:
    from .agents import AgentRun
    from .bridge import SocketLike
    from .connection import Connection

__all__ = ["DEMO_AGENT_NAME", "FakeSocket", "RecordingBridge", "demo_agent", "word_statistics"]


def _snapshot(event: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``event`` that later mutation of the original cannot change."""
    try:
        return copy.deepcopy(dict(event))
    except Exception:  # noqa: BLE001 - an uncopyable event is still recorded, shallowly
        return dict(event)


class RecordingBridge:
    """A :class:`~enginescope.engines.bridge.ConnectionBridge` that records every event.

    ``connections`` is what ``send_to_user`` reports for a user with no registered socket
    (set it to 0 for "user offline", or per user with :meth:`set_connections`);
    :meth:`fail_with` makes every send raise. Sockets registered with
    :meth:`register_connection` (the ``WebSocketGateway`` does) also receive the events,
    through an in-process :class:`AgentWebSocketBridge`, so a ``TestClient`` WebSocket test
    sees them on the socket as well as in :attr:`events`.
    """

    def __init__(self, *, connections: int = 1, fail_with: BaseException | None = None) -> None:
        self.connections = connections
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.attempts = 0
        self._failure = fail_with
        self._per_user: dict[str, int] = {}
        self._recorded = asyncio.Event()
        self._local = AgentWebSocketBridge()

    def __repr__(self) -> str:
        users = len({user_id for user_id, _ in self.events})
        sockets = self._local.connection_count()
        registered = f" sockets={sockets}" if sockets else ""
        return f"<RecordingBridge events={len(self.events)} users={users}{registered}>"

    @property
    def resumable(self) -> bool:
        """``False``: nothing is replayed to a socket that reconnects."""
        return False

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called (registering then fails)."""
        return self._local.closed

    async def send_to_user(self, user_id: str, event: Mapping[str, Any]) -> int:
        """Record ``(user_id, event)`` and deliver it to the user's registered sockets.

        Returns how many sockets it reached, or the configured connection count when the
        user has none registered.
        """
        self.attempts += 1
        if self._failure is not None:
            raise self._failure
        self.events.append((user_id, _snapshot(event)))
        self._recorded.set()
        if self._local.connection_count(user_id):
            return await self._local.send_to_user(user_id, event)
        return self._per_user.get(user_id, self.connections)

    def register_connection(self, user_id: str, socket: SocketLike) -> Connection:
        """Register ``socket`` for ``user_id``: later events are sent to it too."""
        return self._local.register_connection(user_id, socket)

    def unregister_connection(self, connection: Connection | None) -> None:
        """Unregister ``connection``; unknown or ``None`` is a no-op."""
        self._local.unregister_connection(connection)

    def connection_count(self, user_id: str | None = None) -> int:
        """Registered sockets of ``user_id``, or of everybody."""
        return self._local.connection_count(user_id)

    async def flush(self, user_id: str | None = None) -> None:
        """Wait until every event queued to a registered socket has been sent."""
        await self._local.flush(user_id)

    def get_metrics(self) -> dict[str, int]:
        """The delivery counters of the registered sockets, plus ``events_recorded``."""
        return {**self._local.get_metrics(), "events_recorded": len(self.events)}

    async def aclose(self) -> None:
        """Unregister every socket and stop their senders; the record is kept. Idempotent."""
        await self._local.aclose()

    def fail_with(self, error: BaseException | None = None) -> None:
        """Make later sends raise ``error`` (a ``ConnectionError`` by default)."""
        self._failure = error if error is not None else ConnectionError("bridge is down")

    def recover(self) -> None:
        """Make later sends succeed again."""
        self._failure = None

    def set_connections(self, count: int, user_id: str | None = None) -> None:
        """Report ``count`` connections for ``user_id`` (or for every user)."""
        if user_id is None:
            self.connections = count
            self._per_user.clear()
        else:
            self._per_user[user_id] = count

    def events_for(self, user_id: str) -> list[dict[str, Any]]:
        """The events sent to ``user_id``, oldest first."""
        return [event for recipient, event in self.events if recipient == user_id]

    def types_for(self, user_id: str) -> list[str]:
        """The ``type`` of each event sent to ``user_id``, oldest first."""
        return [str(event.get("type")) for event in self.events_for(user_id)]

    def user_ids(self) -> list[str]:
        """Every user that was sent an event, in order of their first event."""
        return list(dict.fromkeys(user_id for user_id, _ in self.events))

    def clear(self) -> None:
        """Forget every recorded event."""
        self.events.clear()
        self.attempts = 0

    async def wait_for_events(
        self, count: int, *, user_id: str | None = None, timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        """Wait until ``count`` events were recorded (for ``user_id``, or in total)."""

        def recorded() -> list[dict[str, Any]]:
            if user_id is None:
                return [event for _, event in self.events]
            return self.events_for(user_id)

        async with asyncio.timeout(timeout):
            while len(recorded()) < count:
                self._recorded.clear()
                await self._recorded.wait()
        return recorded()


class FakeSocket:
    """A :class:`~enginescope.engines.bridge.SocketLike` that records what it is sent.

    ``gate``: each send waits for this event first (a socket "blocked" until the test sets
    it); ``delay``: seconds each send takes; ``fail_with``: sends raise it after
    ``fail_after`` successful sends; ``close_error``: ``close()`` raises it.
    """

    def __init__(
        self,
        name: str = "socket",
        *,
        delay: float = 0.0,
        gate: asyncio.Event | None = None,
        fail_with: BaseException | None = None,
        fail_after: int = 0,
        close_error: BaseException | None = None,
    ) -> None:
        self.name = name
        self.delay = delay
        self.gate = gate
        self.fail_with = fail_with
        self.fail_after = fail_after
        self.close_error = close_error
        self.messages: list[Any] = []
        self.close_codes: list[int] = []
        self.attempts = 0
        self.sending = asyncio.Event()  # set once a send has started

    def __repr__(self) -> str:
        return (
            f"<FakeSocket {self.name!r} messages={len(self.messages)} "
            f"closed={self.closed} close_codes={self.close_codes}>"
        )

    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
        return bool(self.close_codes)

    async def send_json(self, data: Any) -> None:
        """Wait for the gate and the delay, then record ``data`` (or fail as configured)."""
        self.attempts += 1
        self.sending.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_with is not None and len(self.messages) >= self.fail_after:
            raise self.fail_with
        self.messages.append(data)

    async def close(self, code: int = 1000) -> None:
        """Record the close ``code`` (or raise ``close_error``)."""
        self.close_codes.append(code)
        if self.close_error is not None:
            raise self.close_error

    def types(self) -> list[str]:
        """The ``type`` of each message received, oldest first."""
        return [str(message.get("type")) for message in self.messages if isinstance(message, dict)]


DEMO_AGENT_NAME = "demo"
_WORD = re.compile(r"[\w']+")


def word_statistics(text: str) -> dict[str, Any]:
    """Count the words of ``text`` and name the most common ones."""
    words = [word.lower() for word in _WORD.findall(text)]
    return {
        "words": len(words),
        "unique_words": len(set(words)),
        "characters": len(text),
        "most_common": [word for word, _ in Counter(words).most_common(3)],
    }


async def demo_agent(run: AgentRun) -> str:
    """Think once, use one tool and reply: exactly five events per run."""
    await run.think(f"Reading your message of {len(run.message)} characters.")
    stats = await run.use_tool("word_statistics", word_statistics, text=run.message)
    words, unique = stats["words"], stats["unique_words"]
    plural = "" if words == 1 else "s"
    return f"Your message has {words} word{plural} ({unique} unique)."
