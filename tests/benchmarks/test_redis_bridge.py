"""Cross-replica events through Redis, next to the in-process bridge, in the same run.

Two ``RedisWebSocketBridge`` objects on one real ``redis-server`` play two replicas: the
engine's emitter publishes on B, the user's socket is registered on A. The reference is the
in-process ``AgentWebSocketBridge`` carrying the same events to the same sockets.

- latency: one event at a time, from ``notify_*`` on B to the socket's ``send_json`` on A;
  the rows carry p50 and p99 (``metrics``) besides the mean per event.
- throughput: 50 users, each with 100 events in flight in order, all users at once.

Skipped when ``redis-server`` is not installed (``.ci/run`` installs it).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from enginescope.engines import AgentWebSocketBridge, UserWebSocketEmitter, WebSocketBridge
from enginescope.engines.redis import RedisWebSocketBridge

REDIS_SERVER = shutil.which("redis-server")
LATENCY_EVENTS = 500
THROUGHPUT_USERS = 50
EVENTS_PER_USER = 100

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(
        REDIS_SERVER is None,
        reason="redis-server is not installed; install it to benchmark the Redis bridge",
    ),
]


@pytest.fixture(scope="module")
def bench_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One redis-server for this module's benchmarks (no persistence)."""
    assert REDIS_SERVER is not None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    directory: Path = tmp_path_factory.mktemp("redis-bench")
    command = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1"]
    command += ["--save", "", "--appendonly", "no", "--dir", str(directory)]
    server = subprocess.Popen(  # noqa: S603 - a fixed, trusted command line
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_for_ping(port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(timeout=10)


def _wait_for_ping(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.01)
    raise RuntimeError(f"redis-server did not answer on port {port}")


class CountingSocket:
    """Counts what it is sent and wakes whoever waits for the ``expected``-th event."""

    def __init__(self) -> None:
        self.received = 0
        self.expected = 0
        self.arrived = asyncio.Event()
        self.steps: list[int] = []

    async def send_json(self, data: Any) -> None:
        self.received += 1
        self.steps.append(data["data"]["step"])
        if self.received >= self.expected:
            self.arrived.set()

    async def wait_for(self, total: int) -> None:
        self.expected = total
        if self.received < total:
            self.arrived.clear()
            await self.arrived.wait()


class Replicas:
    """A publishing side and a receiving side: two Redis replicas, or one local bridge."""

    def __init__(self, loop: asyncio.AbstractEventLoop, redis_url: str | None) -> None:
        self.loop = loop
        self.local: AgentWebSocketBridge | None = None
        self.redis: list[RedisWebSocketBridge] = []
        if redis_url is None:
            self.local = AgentWebSocketBridge(queue_size=EVENTS_PER_USER * 2)
            self.publisher: WebSocketBridge = self.local
        else:
            self.redis = [
                RedisWebSocketBridge(
                    redis_url,
                    local=AgentWebSocketBridge(queue_size=EVENTS_PER_USER * 2),
                    key_prefix=f"bench-{id(self)}",
                    stream_maxlen=EVENTS_PER_USER * 4,
                )
                for _ in range(2)
            ]
            self.publisher = self.redis[1]  # replica B runs the engines
        self.sockets: dict[str, CountingSocket] = {}

    def connect(self, user_ids: list[str]) -> None:
        async def connect_all() -> None:
            for user_id in user_ids:
                socket = self.sockets[user_id] = CountingSocket()
                if self.local is not None:
                    self.local.register_connection(user_id, socket)
                else:
                    await self.redis[0].connect(user_id, socket)  # replica A holds the sockets

        self.loop.run_until_complete(connect_all())

    def emitter(self, user_id: str) -> UserWebSocketEmitter:
        return UserWebSocketEmitter(user_id, "thread", "run", self.publisher)

    def close(self) -> None:
        async def close_all() -> None:
            for bridge in self.redis:
                await bridge.close()
                await bridge.local.close()
            if self.local is not None:
                await self.local.close()

        self.loop.run_until_complete(close_all())


def _latency(bench: Any, redis_url: str | None, role: str) -> list[float]:
    replicas = Replicas(bench.loop, redis_url)
    replicas.connect(["latency-user"])
    socket = replicas.sockets["latency-user"]
    emitter = replicas.emitter("latency-user")
    samples: list[float] = []
    events = LATENCY_EVENTS if bench.full else 50

    async def one_at_a_time() -> None:
        for step in range(events):
            target = socket.received + 1
            started = time.perf_counter()
            await emitter.notify_agent_thinking("bench", "x", step=step)
            await socket.wait_for(target)
            samples.append(time.perf_counter() - started)

    bench.batches(one_at_a_time, ops=events, rounds=10, role=role)
    replicas.close()
    quantiles = statistics.quantiles(samples, n=100)
    bench.benchmark.extra_info["metrics"] = {
        "p50_us": round(quantiles[49] * 1e6, 1),
        "p99_us": round(quantiles[98] * 1e6, 1),
        "events": len(samples),
    }
    print(  # noqa: T201 - the benchmark reports its percentiles on the terminal too
        f"\n{role} latency: p50={quantiles[49] * 1e6:.0f}us p99={quantiles[98] * 1e6:.0f}us "
        f"over {len(samples)} events"
    )
    assert socket.steps == list(range(events)) * (len(samples) // events)
    return samples


@pytest.mark.benchmark(group="cross-replica event latency")
def test_redis_bridge_latency(bench: Any, bench_redis_url: str) -> None:
    """One event at a time from replica B's emitter reaches the socket on replica A."""
    _latency(bench, bench_redis_url, "ours")


@pytest.mark.benchmark(group="cross-replica event latency")
def test_in_process_bridge_latency(bench: Any) -> None:
    """Reference: the same events through the in-process bridge."""
    _latency(bench, None, "baseline")


def _throughput(bench: Any, redis_url: str | None, role: str) -> None:
    replicas = Replicas(bench.loop, redis_url)
    users = [f"throughput-user-{i}" for i in range(THROUGHPUT_USERS)]
    replicas.connect(users)
    emitters = [replicas.emitter(user) for user in users]
    rounds = 5 if bench.full else 1

    async def user_traffic(emitter: UserWebSocketEmitter) -> None:
        socket = replicas.sockets[emitter.user_id]
        target = socket.received + EVENTS_PER_USER
        for step in range(EVENTS_PER_USER):
            await emitter.notify_agent_thinking("bench", "x", step=step)
        await socket.wait_for(target)

    async def all_users() -> None:
        await asyncio.gather(*(user_traffic(emitter) for emitter in emitters))

    bench.batches(
        all_users,
        ops=THROUGHPUT_USERS * EVENTS_PER_USER,
        rounds=rounds,
        role=role,
        rate_unit="events/s",
        metrics={"users": THROUGHPUT_USERS, "events_per_user": EVENTS_PER_USER},
    )
    replicas.close()
    for received in replicas.sockets.values():
        assert received.steps == list(range(EVENTS_PER_USER)) * (
            received.received // EVENTS_PER_USER
        )


@pytest.mark.benchmark(group="cross-replica event throughput")
def test_redis_bridge_throughput(bench: Any, bench_redis_url: str) -> None:
    """50 users' events published on replica B all reach their sockets on replica A, in order."""
    _throughput(bench, bench_redis_url, "ours")


@pytest.mark.benchmark(group="cross-replica event throughput")
def test_in_process_bridge_throughput(bench: Any) -> None:
    """Reference: the same traffic through the in-process bridge."""
    _throughput(bench, None, "baseline")
