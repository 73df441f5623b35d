"""The garbage collector's settings for a server, measured: the fan-out and the per-message
lifecycle with the default collector, after ``gc.freeze()``, and with a higher generation-0
threshold too; one process, alternating, best of three rounds each.

Run from the repository root: ``.venv/bin/python tests/benchmarks/gc_tuning.py``.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from enginescope.containers import EngineContainer, user_scope
from enginescope.engines import UserExecutionContext

from tests.benchmarks.conftest import make_contexts
from tests.benchmarks.test_fanout import EVENTS_PER_RUN, Fanout, run_contexts

MESSAGES = 5000


def fanout_rate(fanout: Fanout, runs: list[UserExecutionContext]) -> float:
    """Events per second of the best of three fan-out rounds."""
    best = 0.0
    for _ in range(3):
        fanout.prepare(runs)
        started = time.perf_counter()
        fanout.run_all()
        best = max(best, len(runs) * EVENTS_PER_RUN / (time.perf_counter() - started))
    return best


def lifecycle_us(loop: asyncio.AbstractEventLoop, container: EngineContainer) -> float:
    """Microseconds per message of the best of three rounds (context, scope, engine, exit)."""

    async def batch() -> None:
        for n in range(MESSAGES):
            ctx = UserExecutionContext(user_id=f"user-{n % 100}", thread_id="t", run_id=f"r-{n}")
            async with user_scope(ctx):
                await container.user_engine()
            if n % 100 == 99:
                await asyncio.sleep(0)

    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        loop.run_until_complete(batch())
        best = min(best, (time.perf_counter() - started) / MESSAGES * 1e6)
    return best


def freeze(threshold: tuple[int, int, int]) -> Callable[[], None]:
    def apply() -> None:
        gc.collect()
        gc.freeze()
        gc.set_threshold(*threshold)

    return apply


def default() -> None:
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)


def main() -> None:
    loop = asyncio.new_event_loop()
    users = make_contexts(1000)
    runs = run_contexts(users)
    fanout = Fanout(loop, users)
    container = EngineContainer()

    async def start() -> None:
        await container.init_resources()

    loop.run_until_complete(start())
    modes = {
        "default": default,
        "gc.freeze() after startup": freeze((700, 10, 10)),
        "freeze + threshold 50,000": freeze((50_000, 20, 20)),
    }
    for _ in range(2):
        for name, apply in modes.items():
            apply()
            rate, per_message = fanout_rate(fanout, runs), lifecycle_us(loop, container)
            sys.stdout.write(f"{name:28s} fan-out {rate:9,.0f} events/s  {per_message:6.1f} us\n")


if __name__ == "__main__":
    main()
