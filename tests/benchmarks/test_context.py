"""The context an app builds for every message: ``UserExecutionContext`` (every id checked,
a fresh request id and timestamp, read-only metadata) side by side with a plain pydantic
model of the same fields and defaults that checks nothing but the types (peer)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from enginescope.engines import UserExecutionContext
from pydantic import BaseModel, ConfigDict, Field

OPS = 1000
MESSAGES = [
    {"user_id": f"user-{n % 100}", "thread_id": "thread-1", "run_id": f"run-{n}"}
    for n in range(OPS)
]


class PlainContext(BaseModel):
    """The same fields and defaults as UserExecutionContext, frozen, types only."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    thread_id: str
    run_id: str
    request_id: str = Field(default_factory=lambda: os.urandom(16).hex())
    websocket_client_id: str | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    metadata: Mapping[str, Any] = Field(default_factory=dict)


def build_all(model: type[BaseModel]) -> set[str]:
    """One context per message; the request ids they got."""
    return {model(**fields).request_id for fields in MESSAGES}  # type: ignore[attr-defined]


def time_contexts(bench: Any, model: type[BaseModel]) -> set[str]:
    return bench.benchmark.pedantic(  # type: ignore[no-any-return]
        build_all, args=(model,), rounds=200 if bench.full else 1, warmup_rounds=1
    )


@pytest.mark.benchmark(group="context per message")
def test_user_execution_context(bench: Any) -> None:
    """Ours: three ids checked, the request id, created_at and metadata by default."""
    bench.record(role="ours", ops=OPS, targets={"max_us": 1.5})

    request_ids = time_contexts(bench, UserExecutionContext)

    assert OPS == len(request_ids)
    assert {32} == {len(request_id) for request_id in request_ids}


@pytest.mark.benchmark(group="context per message")
def test_plain_pydantic_model(bench: Any) -> None:
    """Peer: a frozen pydantic model of the same fields and defaults, no validation."""
    bench.record(role="peer", ops=OPS)

    request_ids = time_contexts(bench, PlainContext)

    assert OPS == len(request_ids)
