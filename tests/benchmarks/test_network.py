"""Over a real network: the chat example under uvicorn, many WebSocket clients at once.

The example app (``python -m examples.chat``) runs in a subprocess on 127.0.0.1 with no
artificial tool delay. Each client authenticates with a signed token, then all of them send
one message at the same moment; a client's latency is from its send to its
``agent_completed``. ``scripts/bench`` uses 1,000 clients; the normal test run uses 50.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the example is a folder of the repository, not installed
    sys.path.insert(0, str(ROOT))

from examples.chat.auth import TokenSigner  # noqa: E402 - needs ROOT on the path

SECRET = secrets.token_urlsafe(32)
FIVE = ["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]
FULL_CLIENTS, QUICK_CLIENTS = 1000, 50
CONNECTING_AT_ONCE = 100
TIMEOUT = 60.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """``python -m examples.chat`` on a free port, its log in a file."""

    def __init__(self, log_path: Path) -> None:
        port = _free_port()
        self.url, self.ws_url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws"
        self._log = log_path.open("wb")
        self.log_path = log_path
        env = {**os.environ, "CHAT_SECRET": SECRET, "CHAT_TOOL_DELAY_SECONDS": "0"}
        command = [sys.executable, "-m", "examples.chat", "--port", str(port)]
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [*command, "--log-level", "warning"],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_path.read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        pytest.fail(f"chat server not healthy:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    started = Server(tmp_path / "server.log")
    try:
        started.wait_healthy()
        yield started
    finally:
        started.stop()


class Client:
    """One user's socket: sends one message and times it until ``agent_completed``."""

    def __init__(self, user_id: str, socket: ClientConnection) -> None:
        self.user_id = user_id
        self.socket = socket
        self.events: list[dict[str, Any]] = []
        self.latency = 0.0

    async def ask(self, text: str) -> None:
        started = time.perf_counter()
        await self.socket.send(json.dumps({"type": "message", "text": text}))
        while True:
            event = json.loads(await self.socket.recv())
            if event["type"] in {*FIVE, "agent_error", "agent_stopped"}:
                self.events.append(event)
            if event["type"] in {"agent_completed", "agent_error", "agent_stopped", "error"}:
                self.latency = time.perf_counter() - started
                return

    def problems(self) -> list[str]:
        found = [
            f"{self.user_id} got an event of {event['user_id']}"
            for event in self.events
            if event["user_id"] != self.user_id
        ]
        if FIVE != [event["type"] for event in self.events]:
            found.append(f"{self.user_id}: {[event['type'] for event in self.events]}")
        return found


async def open_client(server: Server, signer: TokenSigner, number: int) -> Client:
    user_id = f"bench-{number}-{secrets.token_hex(3)}"
    token = signer.issue(user_id, f"Bench {number}")
    socket = await connect(server.ws_url, open_timeout=TIMEOUT)
    await socket.send(json.dumps({"type": "auth", "token": token}))
    greeting = json.loads(await asyncio.wait_for(socket.recv(), TIMEOUT))
    assert "session" == greeting["type"], greeting
    return Client(user_id, socket)


async def open_clients(server: Server, count: int) -> list[Client]:
    signer = TokenSigner(SECRET, 3600)
    gate = asyncio.Semaphore(CONNECTING_AT_ONCE)

    async def opened(number: int) -> Client:
        async with gate:
            return await open_client(server, signer, number)

    return list(await asyncio.gather(*(opened(n) for n in range(count))))


async def close_clients(clients: list[Client]) -> None:
    await asyncio.gather(*(client.socket.close() for client in clients))


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


@pytest.mark.e2e
@pytest.mark.benchmark(group="network: chat app, one message per client")
def test_clients_over_websockets(bench: Any, server: Server) -> None:
    """Every client gets exactly its own five events; latency from send to completion."""
    count = FULL_CLIENTS if bench.full else QUICK_CLIENTS
    clients = bench.run(open_clients(server, count))

    async def everybody_asks() -> None:
        await asyncio.wait_for(
            asyncio.gather(*(client.ask(f"2 + {n}") for n, client in enumerate(clients))),
            TIMEOUT,
        )

    bench.record(role="ours", ops=count * len(FIVE), rate_unit="events/s")
    bench.benchmark.pedantic(lambda: bench.run(everybody_asks()), rounds=1)

    latencies = [client.latency for client in clients]
    problems = [problem for client in clients for problem in client.problems()]
    bench.run(close_clients(clients))
    bench.benchmark.extra_info["metrics"] = {
        "clients": count,
        "events": sum(len(client.events) for client in clients),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
    }
    assert [] == problems[:5]
    assert count * len(FIVE) == bench.benchmark.extra_info["metrics"]["events"]
