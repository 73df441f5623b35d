"""Isolation and shutdown under load: thousands of concurrent runs through a real
AgentWebSocketBridge, random delays and cancellations, and a shutdown with 1,000 engines
whose agents are still running."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from typing import Any

import pytest
from enginescope.engines import (
    AgentRegistry,
    AgentResult,
    AgentRun,
    AgentWebSocketBridge,
    ExecutionEngineFactory,
    FactoryShutdownError,
    UserExecutionContext,
)
from enginescope.engines.testing import FakeSocket

from tests.reliability.conftest import LoopGuard
from tests.reliability.invariants import check_bridge, check_factory, check_no_tasks_of_ours

USERS = 1000
RUNS = 5000
FIVE_EVENTS = [
    "agent_started",
    "agent_thinking",
    "tool_executing",
    "tool_completed",
    "agent_completed",
]


def context(user: int, run: int) -> UserExecutionContext:
    return UserExecutionContext(user_id=f"user-{user}", thread_id=f"t-{run}", run_id=f"run-{run}")


def five_event_agent(rng: random.Random) -> Any:
    async def agent(run: AgentRun) -> str:
        await asyncio.sleep(rng.uniform(0, 0.004))
        await run.think(f"thinking about {run.message}")

        async def tool(text: str) -> str:
            await asyncio.sleep(rng.uniform(0, 0.004))
            return text.upper()

        return str(await run.use_tool("shout", tool, text=run.message))

    return agent


def connect_users(bridge: AgentWebSocketBridge, sockets_each: int) -> dict[str, list[FakeSocket]]:
    sockets: dict[str, list[FakeSocket]] = {}
    for user in range(USERS):
        user_id = f"user-{user}"
        sockets[user_id] = [FakeSocket(f"{user_id}-{n}") for n in range(sockets_each)]
        for socket in sockets[user_id]:
            bridge.register_connection(user_id, socket)
    return sockets


def events_by_run(socket: FakeSocket) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for message in socket.messages:
        runs[message["run_id"]].append(message)
    return runs


class TestIsolationUnderLoad:
    async def test_every_socket_gets_only_its_users_events_exactly_once_in_order(
        self, guard: LoopGuard
    ) -> None:
        """1,000 users with 2 sockets each, 5,000 concurrent runs with random delays and
        ~10% random cancellations: every socket sees only its user's events, and every
        finished run delivered its five events exactly once, in seq order, to each of its
        user's sockets."""
        rng = random.Random(20240611)
        bridge = AgentWebSocketBridge(queue_size=256)
        sockets = connect_users(bridge, sockets_each=2)
        registry = AgentRegistry()
        registry.register("five", five_event_agent(rng))
        factory = ExecutionEngineFactory(
            bridge, agent_registry=registry, max_engines_per_user=RUNS // USERS
        )

        async def one_run(ctx: UserExecutionContext) -> AgentResult:
            async with factory.user_execution_scope(ctx) as engine:
                return await engine.execute_agent("five", ctx.run_id)

        contexts = [context(n % USERS, n) for n in range(RUNS)]
        tasks = [asyncio.create_task(one_run(ctx)) for ctx in contexts]
        loop = asyncio.get_running_loop()
        doomed = rng.sample(range(RUNS), RUNS // 10)
        for n in doomed:
            loop.call_later(rng.uniform(0, 0.01), tasks[n].cancel)
        await asyncio.wait(tasks)
        await bridge.flush()

        finished: set[str] = set()
        finished_by_user: dict[str, list[str]] = defaultdict(list)
        for ctx, task in zip(contexts, tasks, strict=True):
            if not task.cancelled():
                finished.add(ctx.run_id)
                finished_by_user[ctx.user_id].append(ctx.run_id)
        assert len(finished) < RUNS, "no run was cancelled: the test lost its teeth"
        assert len(finished) > RUNS // 2
        for ctx, task in zip(contexts, tasks, strict=True):
            if not task.cancelled():
                assert (True, ctx.run_id.upper()) == (task.result().success, task.result().result)
        for user_id, user_sockets in sockets.items():
            per_socket = [events_by_run(socket) for socket in user_sockets]
            for socket, runs in zip(user_sockets, per_socket, strict=True):
                foreign = [m for m in socket.messages if m["user_id"] != user_id]
                assert [] == foreign, f"{socket!r} of {user_id} got another user's events"
                for run_id, events in runs.items():
                    types = [event["type"] for event in events]
                    seqs = [event["seq"] for event in events]
                    assert list(range(1, len(events) + 1)) == seqs, f"{run_id}: {seqs}"
                    if run_id in finished:
                        assert FIVE_EVENTS == types, f"{run_id} on {socket!r}: {types}"
                    else:
                        assert types[:-1] == FIVE_EVENTS[: len(types) - 1], types
                        assert types[-1] in (*FIVE_EVENTS, "agent_stopped"), types
            assert per_socket[0] == per_socket[1], f"{user_id}'s two sockets disagree"
            for run_id in finished_by_user[user_id]:
                assert run_id in per_socket[0], f"{user_id} never got finished run {run_id}"
        metrics = bridge.get_metrics()
        assert (0, 0) == (
            metrics["slow_consumer_disconnects"],
            metrics["failed_socket_disconnects"],
        )
        check_factory(factory)
        check_bridge(bridge)
        assert 0 == factory.get_factory_metrics()["active_engines_count"]
        await factory.shutdown()
        await bridge.close()
        check_no_tasks_of_ours()


class TestShutdownUnderLoad:
    async def test_shutdown_with_1000_running_engines_meets_its_deadline(
        self, guard: LoopGuard
    ) -> None:
        """1,000 engines whose agents wait forever: shutdown returns within
        the deadline (no cleanup abandoned), every engine is inactive, every socket was told
        (agent_stopped), no slot is held and new work is refused."""
        never = asyncio.Event()

        async def waits_forever(run: AgentRun) -> None:
            await run.think("waiting")
            await never.wait()

        bridge = AgentWebSocketBridge()
        sockets = connect_users(bridge, sockets_each=1)
        registry = AgentRegistry()
        registry.register("wait", waits_forever)
        factory = ExecutionEngineFactory(
            bridge, agent_registry=registry, shutdown_timeout_seconds=2
        )
        engines = [await factory.create_for_user(context(n, n)) for n in range(USERS)]
        runs = [asyncio.create_task(engine.execute_agent("wait", "hi")) for engine in engines]
        async with asyncio.timeout(10):
            while sum(engine.active_runs for engine in engines) < USERS:
                await asyncio.sleep(0.001)
            await bridge.flush()

        await factory.shutdown()

        # no engine had to be abandoned at the deadline: every cleanup finished in time
        assert 0 == factory.get_factory_metrics()["cleanup_errors"]
        assert not any(engine.is_active() for engine in engines)
        results = await asyncio.gather(*runs)
        assert {("CancelledError", False)} == {(r.error_type, r.success) for r in results}
        await bridge.flush()
        for user_id, (socket,) in sockets.items():
            assert ["agent_started", "agent_thinking", "agent_stopped"] == socket.types(), user_id
            assert "engine_closed" == socket.messages[-1]["data"]["reason"]
        check_factory(factory)
        assert 0 == factory.slot_ledger.total()  # type: ignore[attr-defined]
        with pytest.raises(FactoryShutdownError):
            await factory.create_for_user(context(0, RUNS))
        await bridge.close()
        check_no_tasks_of_ours()

    async def test_agents_that_ignore_cancellation_cannot_hold_shutdown_past_its_deadline(
        self, guard: LoopGuard
    ) -> None:
        """Agents that swallow cancellation: shutdown returns at its deadline,
        counts the engines it had to abandon, unregisters them and returns their slots."""
        release = asyncio.Event()

        async def stubborn(run: AgentRun) -> str:
            while not release.is_set():
                try:
                    await release.wait()
                except asyncio.CancelledError:
                    continue  # a badly written agent
            return "finally"

        async def polite(run: AgentRun) -> None:
            await release.wait()

        registry = AgentRegistry()
        registry.register("stubborn", stubborn)
        registry.register("polite", polite)
        factory = ExecutionEngineFactory(
            AgentWebSocketBridge(), agent_registry=registry, shutdown_timeout_seconds=0.5
        )
        engines = [await factory.create_for_user(context(n, n)) for n in range(200)]
        runs = [
            asyncio.create_task(engine.execute_agent("stubborn" if n < 10 else "polite", "x"))
            for n, engine in enumerate(engines)
        ]
        async with asyncio.timeout(5):
            while sum(engine.active_runs for engine in engines) < len(engines):
                await asyncio.sleep(0.001)

        await factory.shutdown()

        # shutdown returned at its deadline, not when the stubborn agents gave up
        assert 10 == sum(not run.done() for run in runs[:10])
        metrics = factory.get_factory_metrics()
        assert (0, 10) == (metrics["active_engines_count"], metrics["cleanup_errors"])
        assert not any(engine.is_active() for engine in engines)
        check_factory(factory)
        release.set()
        await asyncio.wait_for(asyncio.gather(*runs), 5)
        await factory.websocket_bridge.close()  # type: ignore[attr-defined]
