"""Each protocol's implementations, as parametrized fixtures with ids ``memory`` and ``redis``.

The Redis half runs against a real redis-server started for the test (skipped, saying why,
when the binary is not installed), exactly as tests/redis does.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from enginescope.engines import (
    AgentWebSocketBridge,
    ConnectionBridge,
    InMemorySlotLedger,
    SlotLedger,
)

from tests.redis.conftest import RedisServer

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The implementation under test: ``memory`` or ``redis``."""
    name: str = request.param
    if name == "redis" and shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed; install it to run the Redis contract half")
    return name


@pytest.fixture
def contract_redis_url(backend: str, tmp_path: Path) -> Iterator[str | None]:
    """A fresh redis-server's URL for the Redis half; ``None`` for the in-memory half."""
    if backend != "redis":
        yield None
        return
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest_asyncio.fixture
async def ledger(contract_redis_url: str | None) -> AsyncIterator[SlotLedger]:
    """A slot ledger of the backend under test, closed afterwards."""
    if contract_redis_url is None:
        built: SlotLedger = InMemorySlotLedger()
    else:
        from enginescope.engines import RedisSlotLedger  # noqa: PLC0415 - redis extra

        built = RedisSlotLedger(contract_redis_url)
    try:
        yield built
    finally:
        await built.aclose()


@pytest_asyncio.fixture
async def bridge(contract_redis_url: str | None) -> AsyncIterator[ConnectionBridge]:
    """A connection bridge of the backend under test, closed afterwards."""
    if contract_redis_url is None:
        built: ConnectionBridge = AgentWebSocketBridge(send_timeout_seconds=2.0)
    else:
        from enginescope.engines import RedisWebSocketBridge  # noqa: PLC0415 - redis extra

        built = RedisWebSocketBridge(contract_redis_url, block_ms=100)
    try:
        yield built
    finally:
        close = getattr(built, "aclose", None) or built.close  # type: ignore[attr-defined]
        await close()
