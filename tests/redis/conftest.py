"""A real ``redis-server`` per test, on a free port in a temp dir; replicas built on it.

Skipped (with the reason) only when the ``redis-server`` binary is not installed;
``.ci/run`` installs it, so CI always runs these tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from enginescope.engines import AgentRegistry, ExecutionEngineFactory
from enginescope.engines.redis import RedisSlotLedger, RedisWebSocketBridge

REDIS_SERVER = shutil.which("redis-server")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Without the ``redis-server`` binary, skip the tests marked ``redis``, saying why."""
    if REDIS_SERVER is not None:
        return
    skip = pytest.mark.skip(
        reason="redis-server is not installed; install it (apt-get install redis-server) "
        "to run the Redis scale-out tests"
    )
    for item in items:
        if item.get_closest_marker("redis") is not None:
            item.add_marker(skip)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process on a fixed port; it can be killed and started again."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._extra: list[str] | None = None

    def __repr__(self) -> str:
        return f"<RedisServer port={self.port} running={self.running}>"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 10.0, extra: list[str] | None = None) -> None:
        """Start the server (empty: no persistence) and wait until it answers PING."""
        assert REDIS_SERVER is not None
        command = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        command += extra or []
        self._extra = extra
        self.process = subprocess.Popen(  # noqa: S603 - a fixed, trusted command line
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while not _ping(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.01)

    def kill(self) -> None:
        """Kill the server abruptly (SIGKILL), as a crash would; its data is gone."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL)."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self.process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh, empty redis-server for this test."""
    server = RedisServer(tmp_path)
    for attempt in range(3):  # the free port may be taken between probe and bind
        try:
            server.start()
            break
        except RuntimeError:
            if attempt == 2:
                raise
            server.port = _free_port()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of this test's redis-server."""
    return redis_server.url


@pytest_asyncio.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client for inspecting the server from the test (closed afterwards)."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


class Replica:
    """One app replica in this process: its own Redis clients, ledger, bridge and factory."""

    def __init__(self, name: str, factory: ExecutionEngineFactory) -> None:
        self.name = name
        self.factory = factory

    def __repr__(self) -> str:
        return f"<Replica {self.name} {self.factory!r}>"

    @property
    def bridge(self) -> RedisWebSocketBridge:
        bridge = self.factory.websocket_bridge
        assert isinstance(bridge, RedisWebSocketBridge)
        return bridge

    @property
    def ledger(self) -> RedisSlotLedger:
        ledger = self.factory.slot_ledger
        assert isinstance(ledger, RedisSlotLedger)
        return ledger

    async def close(self) -> None:
        await self.factory.shutdown()
        await self.bridge.close()


ReplicaMaker = Callable[..., Replica]


@pytest_asyncio.fixture
async def make_replica(redis_url: str, registry: AgentRegistry) -> AsyncIterator[ReplicaMaker]:
    """Build replicas sharing this test's Redis; all are shut down at the end."""
    replicas: list[Replica] = []

    def make(
        name: str = "replica",
        *,
        limit: int = 2,
        lease_ttl_seconds: float = 30.0,
        heartbeat_interval_seconds: float | None = None,
        **bridge_options: Any,
    ) -> Replica:
        ledger = RedisSlotLedger(
            redis_url,
            lease_ttl_seconds=lease_ttl_seconds,
            heartbeat_interval_seconds=heartbeat_interval_seconds,
        )
        bridge = RedisWebSocketBridge(redis_url, **bridge_options)
        factory = ExecutionEngineFactory(
            bridge, agent_registry=registry, max_engines_per_user=limit, slot_ledger=ledger
        )
        replica = Replica(name, factory)
        replicas.append(replica)
        return replica

    try:
        yield make
    finally:
        for replica in reversed(replicas):
            await replica.close()


class ReplyDroppingProxy:
    """A TCP proxy in front of Redis that can lose one reply, as a dropped network would.

    ``drop_reply_to(b'"step":1')`` arms it: the next request containing those bytes reaches
    Redis (which runs it), but its reply never comes back and the client's connection is
    cut, so the client sees a dropped connection after the command took effect.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.dropped = 0
        self._marker: bytes | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return (
            f"<ReplyDroppingProxy port={self.port} -> {self.upstream_port} dropped={self.dropped}>"
        )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def drop_reply_to(self, marker: bytes) -> None:
        self._marker = marker

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in tuple(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream_reader, upstream_writer = await asyncio.open_connection(
            "127.0.0.1", self.upstream_port
        )
        muted = asyncio.Event()  # set once this connection's replies are to be lost
        replies = asyncio.ensure_future(self._replies(upstream_reader, writer, muted))
        try:
            while data := await reader.read(65536):
                if self._marker is not None and self._marker in data:
                    self._marker = None
                    muted.set()
                    upstream_writer.write(data)
                    await upstream_writer.drain()
                    await asyncio.sleep(0.05)  # Redis runs the command meanwhile
                    self.dropped += 1
                    break
                upstream_writer.write(data)
                await upstream_writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            replies.cancel()
            writer.transport.abort()
            upstream_writer.transport.abort()
            self._tasks.discard(task)

    @staticmethod
    async def _replies(
        upstream: asyncio.StreamReader, writer: asyncio.StreamWriter, muted: asyncio.Event
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await upstream.read(65536):
                if not muted.is_set():
                    writer.write(data)
                    await writer.drain()


@pytest_asyncio.fixture
async def reply_dropping_proxy(redis_server: RedisServer) -> AsyncIterator[ReplyDroppingProxy]:
    """A :class:`ReplyDroppingProxy` in front of this test's redis-server."""
    proxy = ReplyDroppingProxy(redis_server.port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.aclose()


REDIS_CLI = shutil.which("redis-cli")


def _free_cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    while True:
        port = _free_port()
        if port >= 55535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


_CLUSTER_OPTIONS = (
    "--cluster-enabled",
    "yes",
    "--cluster-node-timeout",
    "1000",  # a dead primary is failed over within a few seconds
    "--repl-diskless-sync-delay",
    "0",  # replicas sync at once (a replica that never synced cannot take over)
    "--cluster-require-full-coverage",
    "no",  # the other primaries' slots are served while one primary fails over
)


class ClusterServers:
    """A Redis Cluster on loopback: 3 primaries and 3 replicas, each a redis-server."""

    def __init__(self, directory: Path, nodes: int = 6) -> None:
        self.directory = directory
        self.servers: list[RedisServer] = []
        for index in range(nodes):
            node_dir = directory / f"node-{index}"
            node_dir.mkdir()
            server = RedisServer(node_dir)
            server.port = _free_cluster_port()
            self.servers.append(server)

    def __repr__(self) -> str:
        return f"<ClusterServers ports={[s.port for s in self.servers]}>"

    @property
    def url(self) -> str:
        """A seed node's URL (any node will do)."""
        return self.servers[0].url

    def start(self) -> None:
        for server in self.servers:
            server.start(extra=[*_CLUSTER_OPTIONS])
        assert REDIS_CLI is not None
        nodes = [f"127.0.0.1:{server.port}" for server in self.servers]
        subprocess.run(  # noqa: S603 - a fixed, trusted command line
            [REDIS_CLI, "--cluster", "create", *nodes, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.wait_ok()

    def cli(self, server: RedisServer, *args: str) -> str:
        assert REDIS_CLI is not None
        done = subprocess.run(  # noqa: S603 - a fixed, trusted command line
            [REDIS_CLI, "-p", str(server.port), *args],
            check=False,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return done.stdout

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Wait until every running node says cluster_state:ok and every replica is in
        sync with its primary."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = self._running()
            infos = [self.cli(s, "cluster", "info") for s in running]
            replication = [self.cli(s, "info", "replication") for s in running]
            replicas = [info for info in replication if "role:slave" in info]
            if (
                all("cluster_state:ok" in info for info in infos)
                and replicas
                and all("master_link_status:up" in info for info in replicas)
            ):
                return
            time.sleep(0.05)
        raise RuntimeError("the Redis cluster did not reach cluster_state:ok")

    def primary_of(self, key: str) -> RedisServer:
        """The server that is the primary for ``key``'s slot now."""
        slot = int(self.cli(self.servers[0], "cluster", "keyslot", key).strip())
        for line in self.cli(self._running()[0], "cluster", "nodes").splitlines():
            fields = line.split()
            if "master" not in fields[2] or "fail" in fields[2]:
                continue
            for part in fields[8:]:
                low, _, high = part.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    port = int(fields[1].split(":")[1].split("@")[0])
                    return next(s for s in self.servers if s.port == port)
        raise LookupError(f"no primary serves slot {slot}")

    def _running(self) -> list[RedisServer]:
        return [server for server in self.servers if server.running]

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def _cluster(directory: Path) -> ClusterServers:
    if REDIS_CLI is None:
        pytest.skip("redis-cli is not installed (it ships with redis-server)")
    cluster = ClusterServers(directory)
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="module")
def shared_redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterServers]:
    """One Redis Cluster (3 primaries, 3 replicas) for a module's tests."""
    cluster = _cluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis_cluster(shared_redis_cluster: ClusterServers) -> ClusterServers:
    """The module's cluster, emptied for this test (FLUSHALL on every primary)."""
    for server in shared_redis_cluster.servers:
        shared_redis_cluster.cli(server, "flushall")  # a replica refuses: it follows
    return shared_redis_cluster


@pytest.fixture
def fresh_redis_cluster(tmp_path: Path) -> Iterator[ClusterServers]:
    """A Redis Cluster of this test alone (to kill nodes of)."""
    cluster = _cluster(tmp_path)
    try:
        yield cluster
    finally:
        cluster.stop()


BridgeMaker = Callable[..., RedisWebSocketBridge]


@pytest_asyncio.fixture
async def make_bridge(redis_url: str) -> AsyncIterator[BridgeMaker]:
    """Bridges (replicas) on this test's Redis, closed at the end."""
    bridges: list[RedisWebSocketBridge] = []

    def make(**options: Any) -> RedisWebSocketBridge:
        bridge = RedisWebSocketBridge(redis_url, **options)
        bridges.append(bridge)
        return bridge

    yield make
    for bridge in bridges:
        await bridge.aclose()
