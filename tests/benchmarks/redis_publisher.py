"""The publishing replica of ``test_redis_bridge.py``'s throughput benchmark, in its own process.

Usage: ``python redis_publisher.py URL PREFIX USERS EVENTS``. Prints ``ready``; then, for
each ``go`` line on stdin, USERS runs publish EVENTS ordered ``agent_thinking`` events each
through a ``RedisWebSocketBridge`` at once (the thought carries ``time.monotonic()`` at
the send, for the receiver's latency), and it prints ``published``. Any other line ends it.
"""

from __future__ import annotations

import asyncio
import sys
import time

from enginescope.engines import UserWebSocketEmitter
from enginescope.engines.redis import RedisWebSocketBridge


async def _run(bridge: RedisWebSocketBridge, user_id: str, run_id: str, events: int) -> None:
    emitter = UserWebSocketEmitter(user_id, "thread", run_id, bridge)
    for step in range(events):
        await emitter.notify_agent_thinking("bench", repr(time.monotonic()), step=step)


async def main(url: str, prefix: str, users: int, events: int) -> None:
    bridge = RedisWebSocketBridge(url, key_prefix=prefix, stream_maxlen=events * 4)
    loop = asyncio.get_running_loop()
    print("ready", flush=True)  # noqa: T201 - the protocol with the benchmark
    rounds = 0
    while (await loop.run_in_executor(None, sys.stdin.readline)).strip() == "go":
        rounds += 1
        user_ids = [f"{prefix}-user-{i}" for i in range(users)]
        await asyncio.gather(*(_run(bridge, u, f"run-{rounds}", events) for u in user_ids))
        print("published", flush=True)  # noqa: T201
    await bridge.aclose()


if __name__ == "__main__":
    url, prefix, users, events = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    asyncio.run(main(url, prefix, users, events))
