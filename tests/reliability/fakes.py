"""Fakes for the reliability tests: a stepper that blocks at the k-th await, collaborators
that pass through it, sockets and bridges that count instead of recording, a hand clock."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping
from typing import Any

from enginescope.engines import (
    AgentRun,
    InMemorySlotLedger,
    UserExecutionEngine,
    UserWebSocketEmitter,
)
from enginescope.engines.testing import RecordingBridge

from tests.support import FakeClock

__all__ = [
    "CountingBridge",
    "DiscardSocket",
    "FakeClock",
    "Gate",
    "Stepper",
    "SteppingBridge",
    "SteppingEmitter",
    "SteppingEngine",
    "SteppingLedger",
    "gated_agent",
    "stepping_emitter_factory",
]


class Stepper:
    """Counts the awaits of every collaborator that calls :meth:`checkpoint`.

    Armed with ``arm(k)``, the k-th checkpoint sets ``reached`` and waits for ``release``;
    every other checkpoint yields to the loop once, so it is a real suspension point.
    """

    def __init__(self) -> None:
        self.count = 0
        self.block_at: int | None = None
        self.blocked_at: int | None = None
        self.labels: list[str] = []
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    def arm(self, k: int | None) -> None:
        self.count = 0
        self.block_at = k
        self.blocked_at = None
        self.labels = []
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    @property
    def blocked_label(self) -> str | None:
        """The label of the checkpoint that blocked (``None`` if none did)."""
        return self.labels[self.blocked_at - 1] if self.blocked_at else None

    def open(self) -> None:
        """Stop blocking: release the blocked checkpoint and every later one."""
        self.block_at = None
        self.release.set()

    async def checkpoint(self, label: str) -> None:
        self.count += 1
        self.labels.append(label)
        if self.count == self.block_at:
            self.blocked_at = self.count
            self.reached.set()
            await self.release.wait()
        else:
            await asyncio.sleep(0)


class SteppingLedger(InMemorySlotLedger):
    """A ledger that suspends like a remote one: before and after taking, before giving back.

    It keeps the ledger contract a real shared ledger keeps: an ``acquire`` cancelled after
    the slot was taken gives it back before the cancellation propagates.
    """

    __slots__ = ("stepper",)

    immediate = False  # acquire and release suspend at checkpoints

    def __init__(self, stepper: Stepper) -> None:
        super().__init__()
        self.stepper = stepper

    async def acquire(self, user_id: str, slot_id: str, limit: int) -> int:
        await self.stepper.checkpoint("ledger.acquire:before")
        count = self.acquire_nowait(user_id, slot_id, limit)
        try:
            await self.stepper.checkpoint("ledger.acquire:after")
        except BaseException:
            self.release_nowait(user_id, slot_id)
            raise
        return count

    async def release(self, user_id: str, slot_id: str) -> bool:
        await self.stepper.checkpoint("ledger.release")
        return self.release_nowait(user_id, slot_id)


class SteppingBridge(RecordingBridge):
    """A recording bridge whose every send is a checkpoint."""

    def __init__(self, stepper: Stepper) -> None:
        super().__init__()
        self.stepper = stepper

    async def send_to_user(self, user_id: str, event: Mapping[str, Any]) -> int:
        await self.stepper.checkpoint(f"bridge.send:{event.get('type')}")
        return await super().send_to_user(user_id, event)


class SteppingEmitter(UserWebSocketEmitter):
    """An emitter whose ``close`` is a checkpoint (an emitter that flushes on close)."""

    __slots__ = ("stepper",)

    def __init__(self, *args: Any, stepper: Stepper) -> None:
        super().__init__(*args)
        self.stepper = stepper

    async def close(self) -> None:
        await self.stepper.checkpoint("emitter.close")
        await super().close()


def stepping_emitter_factory(stepper: Stepper) -> Any:
    def make(user_id: str, thread_id: str, run_id: str, bridge: Any) -> UserWebSocketEmitter:
        return SteppingEmitter(user_id, thread_id, run_id, bridge, stepper=stepper)

    return make


class SteppingEngine(UserExecutionEngine):
    """An engine with async teardown of its own after the standard cleanup (say, a DB
    session to close); that teardown is a checkpoint. The stepper is set by the test."""

    stepper: Stepper | None = None

    async def cleanup(self) -> None:
        await super().cleanup()
        if self.stepper is not None:
            await self.stepper.checkpoint("engine.cleanup:extra")


class Gate:
    """An event the test opens to let waiting agents finish; counts who is waiting."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.waiting = 0
        self.entered = asyncio.Event()

    async def wait(self) -> None:
        self.waiting += 1
        self.entered.set()
        try:
            await self.event.wait()
        finally:
            self.waiting -= 1

    def open(self) -> None:
        self.event.set()


def gated_agent(gate: Gate, stepper: Stepper | None = None) -> Any:
    """An agent that thinks, waits on ``gate``, then uses a tool and returns."""

    async def agent(run: AgentRun) -> str:
        await run.think("waiting for the gate")
        if stepper is not None:
            await stepper.checkpoint("agent.before-gate")
        await gate.wait()
        return str(await run.use_tool("echo", _echo, text=run.message))

    return agent


def _echo(text: str) -> str:
    return text


class DiscardSocket:
    """A socket that counts what it is sent per user and keeps nothing."""

    __slots__ = ("count", "foreign", "user_id")

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.count = 0
        self.foreign = 0

    async def send_json(self, data: Any) -> None:
        self.count += 1
        if data.get("user_id") != self.user_id:
            self.foreign += 1


class CountingBridge:
    """A bridge that counts events per user and type, and discards them."""

    def __init__(self) -> None:
        self.by_type: Counter[str] = Counter()
        self.sent = 0

    async def send_to_user(self, user_id: str, event: Mapping[str, Any]) -> int:
        if event["user_id"] != user_id:  # pragma: no cover - would be a routing bug
            raise AssertionError(f"event of {event['user_id']!r} addressed to {user_id!r}")
        self.sent += 1
        self.by_type[event["type"]] += 1
        return 1
