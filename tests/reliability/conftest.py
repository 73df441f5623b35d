"""Fixtures for the reliability tests: a loop guard that fails on leaked tasks and on
errors the event loop would otherwise only log."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest_asyncio

from tests.reliability.invariants import check_quiescent


@dataclass
class LoopGuard:
    """What the guard saw: the tasks alive at the start and the loop's error reports."""

    baseline: set[asyncio.Task[Any]]
    errors: list[dict[str, Any]] = field(default_factory=list)


@pytest_asyncio.fixture
async def guard() -> AsyncIterator[LoopGuard]:
    """Fail the test if a task it started is still pending at the end, or if the loop
    reported an error (a "Task was destroyed but it is pending", an unretrieved exception)."""
    loop = asyncio.get_running_loop()
    seen = LoopGuard(set(asyncio.all_tasks()))
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.errors.append(context))
    try:
        yield seen
        await check_quiescent(seen.baseline)
        gc.collect()
        await asyncio.sleep(0)
        assert [] == [context.get("message") for context in seen.errors]
    finally:
        loop.set_exception_handler(previous)
