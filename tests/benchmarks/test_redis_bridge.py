"""Cross-replica events through Redis, next to their references, in the same run.

Two ``RedisWebSocketBridge`` objects on one real ``redis-server`` play two replicas: the
engine's emitter publishes on B, the user's socket is registered on A.

- latency: one event at a time, from ``notify_*`` on B to the socket's ``send_json`` on A;
  the rows carry p50 and p99 (``metrics``) besides the mean per event. Reference: the
  in-process ``AgentWebSocketBridge`` carrying the same events to the same sockets.
- throughput: 200 users, each publishing 100 ordered events, all users at once; every
  socket must get its user's events once each and in order. Replica B runs in its own
  process (``redis_publisher.py``) as a real replica does (``[two processes]``), or in the
  receiver's event loop (``[one process]``). The rows carry the latency of each event
  from its send to its socket (p50, p99). Reference: ``redis-benchmark -c 50`` appending
  to a stream (``XADD``) on the same server, in the same run; target: at least half its
  rate (ratio <= 2).

Skipped when ``redis-server`` is not installed (``.ci/run`` installs it).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from enginescope.engines import AgentWebSocketBridge, UserWebSocketEmitter, WebSocketBridge
from enginescope.engines.redis import RedisWebSocketBridge

REDIS_SERVER = shutil.which("redis-server")
REDIS_BENCHMARK = shutil.which("redis-benchmark")
PUBLISHER = Path(__file__).with_name("redis_publisher.py")
LATENCY_EVENTS = 500
THROUGHPUT_USERS = 200
EVENTS_PER_USER = 100
BENCHMARK_CLIENTS = 50

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


# -- throughput ----------------------------------------------------------------------------


class ArrivalSocket:
    """Records each event's step and its latency (the thought is the send's monotonic time)."""

    def __init__(self, latencies: list[float]) -> None:
        self.steps: list[int] = []
        self.expected = 0
        self.arrived = asyncio.Event()
        self._latencies = latencies

    async def send_json(self, data: Any) -> None:
        self._latencies.append(time.monotonic() - float(data["data"]["thought"]))
        self.steps.append(data["data"]["step"])
        if len(self.steps) >= self.expected:
            self.arrived.set()

    async def wait_for(self, total: int) -> None:
        self.expected = total
        if len(self.steps) < total:
            self.arrived.clear()
            await self.arrived.wait()


class PublisherProcess:
    """Replica B in its own process: ``redis_publisher.py``, one round per ``go``."""

    def __init__(self, url: str, prefix: str, users: int, events: int) -> None:
        command = [sys.executable, str(PUBLISHER), url, prefix, str(users), str(events)]
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and script
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self._expect("ready")

    def _expect(self, line: str) -> None:
        assert self.process.stdout is not None
        got = self.process.stdout.readline().strip()
        assert line == got, f"publisher said {got!r}, expected {line!r}"

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    async def published(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._expect, "published")

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("stop\n")
        self.process.stdin.close()
        self.process.wait(timeout=30)
        assert self.process.stdout is not None
        self.process.stdout.close()


class InProcessPublisher:
    """Replica B in the receiver's event loop (the same rounds as :class:`PublisherProcess`)."""

    def __init__(self, url: str, prefix: str, users: int, events: int) -> None:
        self.bridge = RedisWebSocketBridge(url, key_prefix=prefix, stream_maxlen=events * 4)
        self.users = [f"{prefix}-user-{i}" for i in range(users)]
        self.events = events
        self.rounds = 0
        self.task: asyncio.Future[Any] | None = None

    def go(self) -> None:
        self.rounds += 1
        self.task = asyncio.ensure_future(asyncio.gather(*(self._run(user) for user in self.users)))

    async def _run(self, user_id: str) -> None:
        emitter = UserWebSocketEmitter(user_id, "thread", f"run-{self.rounds}", self.bridge)
        for step in range(self.events):
            await emitter.notify_agent_thinking("bench", repr(time.monotonic()), step=step)

    async def published(self) -> None:
        assert self.task is not None
        await self.task

    def close(self) -> None:
        pass


def _throughput(bench: Any, redis_url: str, variant: str) -> None:
    users = THROUGHPUT_USERS if bench.full else 20
    events = EVENTS_PER_USER if bench.full else 10
    prefix = f"bench-{variant.replace(' ', '-')}"
    receiver = RedisWebSocketBridge(
        redis_url,
        local=AgentWebSocketBridge(queue_size=events * 2),
        key_prefix=prefix,
        stream_maxlen=events * 4,
    )
    latencies: list[float] = []
    sockets = [ArrivalSocket(latencies) for _ in range(users)]

    async def connect_all() -> None:
        for index, arrival in enumerate(sockets):
            await receiver.connect(f"{prefix}-user-{index}", arrival)

    bench.run(connect_all())
    maker = PublisherProcess if variant == "two processes" else InProcessPublisher
    publisher: Any = bench.run(_make_in_loop(maker, redis_url, prefix, users, events))
    rounds = 0

    async def one_round() -> None:
        nonlocal rounds
        rounds += 1
        publisher.go()
        for arrival in sockets:
            await arrival.wait_for(rounds * events)
        await publisher.published()

    targets = {"max_ratio": 2.0} if variant == "two processes" else {}
    try:
        bench.batches(
            one_round,
            ops=users * events,
            rounds=5,
            role="ours",
            rate_unit="events/s",
            targets=targets,
            metrics={"users": users, "events_per_user": events},
        )
    finally:
        publisher.close()
        bench.run(_close(receiver, getattr(publisher, "bridge", None)))
    quantiles = statistics.quantiles(latencies, n=100)
    bench.benchmark.extra_info["metrics"].update(
        p50_ms=round(quantiles[49] * 1e3, 2), p99_ms=round(quantiles[98] * 1e3, 2)
    )
    for arrival in sockets:
        assert list(range(events)) * rounds == arrival.steps


async def _make_in_loop(maker: Any, *args: Any) -> Any:
    return maker(*args)


async def _close(*bridges: RedisWebSocketBridge | None) -> None:
    for bridge in bridges:
        if bridge is not None:
            await bridge.aclose()
            await bridge.local.aclose()


@pytest.mark.benchmark(group="cross-replica event throughput")
@pytest.mark.parametrize("variant", ["two processes", "one process"])
def test_redis_bridge_throughput(bench: Any, bench_redis_url: str, variant: str) -> None:
    """200 users' ordered events published on replica B all reach their sockets on A."""
    _throughput(bench, bench_redis_url, variant)


def _redis_benchmark(port: int, requests: int) -> float:
    """Run ``redis-benchmark -c 50`` appending to a stream; return its requests per second."""
    assert REDIS_BENCHMARK is not None
    command = [REDIS_BENCHMARK, "-h", "127.0.0.1", "-p", str(port)]
    command += ["-c", str(BENCHMARK_CLIENTS), "-n", str(requests), "--csv"]
    command += ["XADD", "redis-benchmark-stream", "*", "event", "x" * 200]
    done = subprocess.run(  # noqa: S603 - a fixed, trusted command line
        command, capture_output=True, text=True, check=True, timeout=120
    )
    last = done.stdout.strip().splitlines()[-1]
    return float(last.split(",")[1].strip('"'))


@pytest.mark.benchmark(group="cross-replica event throughput")
@pytest.mark.skipif(REDIS_BENCHMARK is None, reason="redis-benchmark is not installed")
def test_redis_benchmark_xadd(bench: Any, bench_redis_url: str) -> None:
    """Reference: redis-benchmark's 50 clients appending to a stream on the same server."""
    port = urlsplit(bench_redis_url).port
    assert port is not None
    requests = 100_000 if bench.full else 1_000
    rates: list[float] = []
    bench.record(
        role="peer",
        ops=requests,
        rate_unit="XADD/s",
        note=f"redis-benchmark -c {BENCHMARK_CLIENTS}, XADD of 200 bytes",
    )
    bench.benchmark.pedantic(
        lambda: rates.append(_redis_benchmark(port, requests)),
        rounds=3 if bench.full else 1,
        warmup_rounds=0,
    )
    bench.benchmark.extra_info["metrics"] = {"reported_rps": round(statistics.median(rates))}
    assert all(rate > 0 for rate in rates)
