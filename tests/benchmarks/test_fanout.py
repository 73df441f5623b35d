"""Event fan-out in process: 10,000 concurrent agent runs of 1,000 users, one socket each.

Every run has its own engine (ten per user), as one message per user scope would. The
engines and sockets are set up untimed; a round is all runs started at once until the last
event has left the bridge's queues. Every event must reach its own user's socket, each
run's events in order.

The baseline is the least asyncio can do for the same traffic on the same machine: one
task per run putting five small dicts on its user's queue, one sender task per socket.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from enginescope.engines import (
    AgentRegistry,
    AgentWebSocketBridge,
    ExecutionEngineFactory,
    UserExecutionContext,
    UserExecutionEngine,
)
from enginescope.engines.testing import FakeSocket

USERS = 1000
RUNS_PER_USER = 10
EVENTS_PER_RUN = 5
EXPECTED_TYPES = [
    "agent_started",
    "agent_thinking",
    "tool_executing",
    "tool_completed",
    "agent_completed",
]


class Fanout:
    """Users with one socket each on a real bridge, and a fresh engine per run."""

    def __init__(self, loop: asyncio.AbstractEventLoop, registry: AgentRegistry) -> None:
        self.loop = loop
        self.bridge = AgentWebSocketBridge()
        self.factory = ExecutionEngineFactory(
            self.bridge, agent_registry=registry, max_engines_per_user=RUNS_PER_USER
        )
        self.sockets: dict[str, FakeSocket] = {}
        self.engines: list[UserExecutionEngine] = []

    def connect(self, users: list[UserExecutionContext]) -> None:
        async def register() -> None:
            for ctx in users:
                socket = self.sockets[ctx.user_id] = FakeSocket(ctx.user_id)
                self.bridge.register_connection(ctx.user_id, socket)

        self.loop.run_until_complete(register())

    def prepare(self, runs: list[UserExecutionContext]) -> None:
        """Untimed: clean the last round's engines and sockets, create this round's."""

        async def recreate() -> list[UserExecutionEngine]:
            for engine in self.engines:
                await self.factory.cleanup_engine(engine)
            return [await self.factory.create_for_user(ctx) for ctx in runs]

        for socket in self.sockets.values():
            socket.messages.clear()
        self.engines = self.loop.run_until_complete(recreate())

    def run_all(self) -> None:
        async def run() -> None:
            await asyncio.gather(
                *(engine.execute_agent("demo", "hello fan-out world") for engine in self.engines)
            )
            await self.bridge.flush()

        self.loop.run_until_complete(run())

    def close(self) -> None:
        self.loop.run_until_complete(self.factory.shutdown())
        self.loop.run_until_complete(self.bridge.close())


def misdelivered(sockets: dict[str, FakeSocket]) -> list[str]:
    """Every way the sockets' messages differ from each run's five events, in order."""
    problems = []
    for user_id, socket in sockets.items():
        by_run: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for event in socket.messages:
            if event["user_id"] != user_id:
                problems.append(f"{user_id} got an event of {event['user_id']}")
            by_run[event["run_id"]].append(event)
        if RUNS_PER_USER != len(by_run):
            problems.append(f"{user_id} got events of {len(by_run)} runs")
        for run_id, events in by_run.items():
            if EXPECTED_TYPES != [e["type"] for e in events]:
                problems.append(f"{run_id} of {user_id}: {[e['type'] for e in events]}")
            if list(range(1, EVENTS_PER_RUN + 1)) != [e["seq"] for e in events]:
                problems.append(f"{run_id} of {user_id}: seq {[e['seq'] for e in events]}")
    return problems


@pytest.mark.benchmark(group="event fan-out in process")
def test_event_fanout(
    bench: Any, registry: AgentRegistry, contexts: Callable[..., list[UserExecutionContext]]
) -> None:
    """50,000 events of 10,000 concurrent runs all reach their own user's socket, in order."""
    users = contexts(USERS)
    runs = [
        UserExecutionContext(user_id=ctx.user_id, thread_id=f"t-{n}", run_id=f"r-{n}")
        for ctx in users
        for n in range(RUNS_PER_USER)
    ]
    fanout = Fanout(bench.loop, registry)
    fanout.connect(users)
    bench.record(
        role="ours",
        ops=len(runs) * EVENTS_PER_RUN,
        rate_unit="events/s",
        targets={"min_rate": 200_000},
        metrics={"sockets": USERS, "runs": len(runs)},
    )

    bench.benchmark.pedantic(
        fanout.run_all, setup=lambda: fanout.prepare(runs), rounds=5 if bench.full else 1
    )

    delivered = sum(len(socket.messages) for socket in fanout.sockets.values())
    problems = misdelivered(fanout.sockets)
    metrics = fanout.bridge.get_metrics()
    fanout.close()
    assert len(runs) * EVENTS_PER_RUN == delivered
    assert [] == problems[:5]
    assert 0 == metrics["events_dropped_no_connection"]
    assert 0 == metrics["slow_consumer_disconnects"]


class BareFanout:
    """The baseline: asyncio queues and tasks only, no engines, emitter or bridge."""

    def __init__(self, loop: asyncio.AbstractEventLoop, user_ids: list[str]) -> None:
        self.loop = loop
        self.sockets = {user_id: FakeSocket(user_id) for user_id in user_ids}
        self.queues: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self.senders: list[asyncio.Task[None]] = []
        self.expected = 0
        self.sent = 0
        self.done: asyncio.Event | None = None
        loop.run_until_complete(self._start())

    async def _start(self) -> None:
        self.done = asyncio.Event()
        for user_id, socket in self.sockets.items():
            queue = self.queues[user_id] = asyncio.Queue()
            self.senders.append(asyncio.create_task(self._send(queue, socket)))

    async def _send(self, queue: asyncio.Queue[dict[str, Any]], socket: FakeSocket) -> None:
        while True:
            await socket.send_json(await queue.get())
            self.sent += 1
            if self.sent == self.expected and self.done is not None:
                self.done.set()

    async def _run(self, ctx: UserExecutionContext) -> None:
        queue = self.queues[ctx.user_id]
        for seq, event_type in enumerate(EXPECTED_TYPES, 1):
            event = {
                "type": event_type,
                "user_id": ctx.user_id,
                "thread_id": ctx.thread_id,
                "run_id": ctx.run_id,
                "timestamp": datetime.now(UTC).isoformat(),
                "seq": seq,
                "data": {},
            }
            queue.put_nowait(event)

    def prepare(self) -> None:
        for socket in self.sockets.values():
            socket.messages.clear()

    def run_all(self, runs: list[UserExecutionContext]) -> None:
        async def run() -> None:
            assert self.done is not None
            self.done.clear()
            self.expected, self.sent = len(runs) * EVENTS_PER_RUN, 0
            await asyncio.gather(*(asyncio.create_task(self._run(ctx)) for ctx in runs))
            await self.done.wait()

        self.loop.run_until_complete(run())

    def close(self) -> None:
        for sender in self.senders:
            sender.cancel()
        self.loop.run_until_complete(asyncio.wait(self.senders))


@pytest.mark.benchmark(group="event fan-out in process")
def test_bare_asyncio_fanout(
    bench: Any, contexts: Callable[..., list[UserExecutionContext]]
) -> None:
    """Baseline: the same 50,000 events through bare asyncio queues reach the same sockets."""
    users = contexts(USERS)
    runs = [
        UserExecutionContext(user_id=ctx.user_id, thread_id=f"t-{n}", run_id=f"r-{n}")
        for ctx in users
        for n in range(RUNS_PER_USER)
    ]
    bare = BareFanout(bench.loop, [ctx.user_id for ctx in users])
    bench.record(role="baseline", ops=len(runs) * EVENTS_PER_RUN, rate_unit="events/s")

    bench.benchmark.pedantic(
        bare.run_all, args=(runs,), setup=bare.prepare, rounds=5 if bench.full else 1
    )

    problems = misdelivered(bare.sockets)
    bare.close()
    assert len(runs) * EVENTS_PER_RUN == sum(len(s.messages) for s in bare.sockets.values())
    assert [] == problems[:5]
