"""Event fan-out in process: 10,000 concurrent agent runs of 1,000 users, one socket each.

Every run has its own engine (ten per user), as one message per user scope would. The
engines and sockets are set up untimed; a round is all runs started at once until the last
event has left the bridge's queues. Every event must reach its own user's socket, each
run's events in order.

The agent reports five events (started, one thought, one tool call's two events,
completed) and does no work of its own, so the round measures the library: engine, emitter,
sanitising, bridge, sender tasks. A socket checks each event as a real one would serialise
it, keeping only ``(run_id, seq, type)``; keeping every envelope alive would mostly measure
the garbage collector walking them.

The baseline is the least asyncio can do for the same traffic on the same machine: one
task per run putting five small dicts on its user's queue, one sender task per socket.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import pytest
from enginescope.engines import (
    AgentRegistry,
    AgentRun,
    AgentWebSocketBridge,
    ExecutionEngineFactory,
    UserExecutionContext,
    UserExecutionEngine,
    inline_tool,
)

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


async def five_event_agent(run: AgentRun) -> str:
    """Think once, use one tool, reply: five events and no work of its own."""
    await run.think("Reading your message.")
    echoed = await run.use_tool("echo", _echo, text=run.message)
    return f"You said: {echoed}"


@inline_tool  # trivial: a worker thread would cost more than the call
def _echo(text: str) -> str:
    return text


class CheckingSocket:
    """A socket of one user: counts events of other users, keeps ``(run_id, seq, type)``."""

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.received: list[tuple[str, int, str]] = []
        self.foreign = 0

    async def send_json(self, data: dict[str, Any]) -> None:
        if data["user_id"] != self.user_id:
            self.foreign += 1
        self.received.append((data["run_id"], data["seq"], data["type"]))


def misdelivered(sockets: Iterable[CheckingSocket]) -> list[str]:
    """Every way the sockets' events differ from each run's five events, in order."""
    problems = []
    for socket in sockets:
        if socket.foreign:
            problems.append(f"{socket.user_id} got {socket.foreign} events of other users")
        by_run: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for run_id, seq, event_type in socket.received:
            by_run[run_id].append((seq, event_type))
        if RUNS_PER_USER != len(by_run):
            problems.append(f"{socket.user_id} got events of {len(by_run)} runs")
        expected = list(enumerate(EXPECTED_TYPES, 1))
        problems += [
            f"{run_id} of {socket.user_id}: {events}"
            for run_id, events in by_run.items()
            if expected != events
        ]
    return problems


def run_contexts(users: list[UserExecutionContext]) -> list[UserExecutionContext]:
    """``RUNS_PER_USER`` contexts (threads and runs) for each user."""
    return [
        UserExecutionContext(user_id=ctx.user_id, thread_id=f"t-{n}", run_id=f"r-{n}")
        for ctx in users
        for n in range(RUNS_PER_USER)
    ]


class Fanout:
    """Users with one socket each on a real bridge, and a fresh engine per run."""

    def __init__(self, loop: asyncio.AbstractEventLoop, users: list[UserExecutionContext]) -> None:
        self.loop = loop
        agents = AgentRegistry()
        agents.register("five", five_event_agent)
        self.bridge = AgentWebSocketBridge()
        self.factory = ExecutionEngineFactory(
            self.bridge, agent_registry=agents, max_engines_per_user=RUNS_PER_USER
        )
        self.sockets = {ctx.user_id: CheckingSocket(ctx.user_id) for ctx in users}
        self.engines: list[UserExecutionEngine] = []
        loop.run_until_complete(self._connect())

    async def _connect(self) -> None:
        for user_id, socket in self.sockets.items():
            self.bridge.register_connection(user_id, socket)

    def prepare(self, runs: list[UserExecutionContext]) -> None:
        """Untimed: clean the last round's engines and sockets, create this round's."""

        async def recreate() -> list[UserExecutionEngine]:
            for engine in self.engines:
                await self.factory.cleanup_engine(engine)
            return [await self.factory.create_for_user(ctx) for ctx in runs]

        for socket in self.sockets.values():
            socket.received.clear()
        self.engines = self.loop.run_until_complete(recreate())

    def run_all(self) -> None:
        async def run() -> None:
            runs = (engine.execute_agent("five", "hello fan-out") for engine in self.engines)
            results = await asyncio.gather(*runs)
            assert all(result.success for result in results)
            await self.bridge.flush()

        self.loop.run_until_complete(run())

    def close(self) -> None:
        self.loop.run_until_complete(self.factory.shutdown())
        self.loop.run_until_complete(self.bridge.close())


@pytest.mark.benchmark(group="event fan-out in process")
def test_event_fanout(bench: Any, contexts: Callable[..., list[UserExecutionContext]]) -> None:
    """50,000 events of 10,000 concurrent runs all reach their own user's socket, in order."""
    users = contexts(USERS)
    runs = run_contexts(users)
    fanout = Fanout(bench.loop, users)
    bench.record(
        role="ours",
        ops=len(runs) * EVENTS_PER_RUN,
        rate_unit="events/s",
        targets={"min_rate_ratio": 0.8},  # events/s at least 0.8x bare asyncio's
        metrics={"sockets": USERS, "runs": len(runs)},
    )

    bench.benchmark.pedantic(
        fanout.run_all, setup=lambda: fanout.prepare(runs), rounds=5 if bench.full else 1
    )

    delivered = sum(len(socket.received) for socket in fanout.sockets.values())
    problems = misdelivered(fanout.sockets.values())
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
        self.sockets = {user_id: CheckingSocket(user_id) for user_id in user_ids}
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

    async def _send(self, queue: asyncio.Queue[dict[str, Any]], socket: CheckingSocket) -> None:
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
            socket.received.clear()

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
    runs = run_contexts(users)
    bare = BareFanout(bench.loop, [ctx.user_id for ctx in users])
    bench.record(role="baseline", ops=len(runs) * EVENTS_PER_RUN, rate_unit="events/s")

    bench.benchmark.pedantic(
        bare.run_all, args=(runs,), setup=bare.prepare, rounds=5 if bench.full else 1
    )

    problems = misdelivered(bare.sockets.values())
    bare.close()
    assert len(runs) * EVENTS_PER_RUN == sum(len(s.received) for s in bare.sockets.values())
    assert [] == problems[:5]
