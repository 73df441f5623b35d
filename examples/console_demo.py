"""Console demo: three users run the built-in demo agent at once through one factory.

Each user has a socket of their own registered with the bridge; the demo prints what
every socket received, then the factory's metrics. Run it with ``python
examples/console_demo.py`` (or ``scripts/demo --console``).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from enginescope.engines import (
    AgentRegistry,
    AgentWebSocketBridge,
    ExecutionEngineFactory,
    UserExecutionContext,
)
from enginescope.engines.testing import demo_agent

WIDTH = 90  # characters of each event's data shown on its line

MESSAGES = {
    "alice": "How many words are in this short sentence?",
    "bob": "Tell me about the weather the weather the weather.",
    "carol": "Hello!",
}


class PrintingSocket:
    """Stands in for a browser's WebSocket: keeps what it receives."""

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.received: list[dict[str, Any]] = []

    async def send_json(self, data: Any) -> None:
        self.received.append(data)


def shorten(text: str, width: int = WIDTH) -> str:
    """``text``, or its first ``width - 1`` characters and an ellipsis when it is longer."""
    return text if len(text) <= width else text[: width - 1] + "…"


async def run_user(factory: ExecutionEngineFactory, user_id: str, message: str) -> None:
    ctx = UserExecutionContext(
        user_id=user_id, thread_id=f"{user_id}-thread", run_id=f"{user_id}-run"
    )
    async with factory.user_execution_scope(ctx) as engine:
        await engine.execute_agent("demo", message)


async def main() -> dict[str, Any]:
    agents = AgentRegistry()
    agents.register("demo", demo_agent)
    bridge = AgentWebSocketBridge()
    factory = ExecutionEngineFactory(bridge, agent_registry=agents)
    sockets = {user: PrintingSocket(user) for user in MESSAGES}
    for user, socket in sockets.items():
        bridge.register_connection(user, socket)
    await asyncio.gather(*(run_user(factory, user, text) for user, text in MESSAGES.items()))
    await bridge.flush()
    for user, socket in sockets.items():
        print(f"\n== events on {user}'s socket")
        for event in socket.received:
            print(f"  #{event['seq']} {event['type']:<16} {shorten(json.dumps(event['data']))}")
    metrics = factory.get_factory_metrics(include_keys=False)
    await factory.shutdown()
    await bridge.close()
    print("\n== factory metrics after the runs")
    print(json.dumps(factory.get_factory_metrics(include_keys=False), indent=2))
    return {"sockets": {u: s.received for u, s in sockets.items()}, "metrics": metrics}


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
