"""Operations for counting instructions (``scripts/instructions``), which unlike wall-clock
time do not depend on what else the machine is doing.

``python tests/benchmarks/instructions.py lifecycle N`` runs N per-message lifecycles
(a fresh context, ``user_scope``, ``await user_engine()``, exit; yield every 100);
``... factory N`` runs N ``create_for_user`` + ``cleanup_engine``; ``... warm N`` resolves
an engine N times more inside one scope, and ``... warm-peer N`` calls dependency-injector's
``ContextLocalSingleton`` N times, the warm resolve's peer.
"""

from __future__ import annotations

import asyncio
import sys

from dependency_injector import containers, providers
from enginescope.containers import EngineContainer, user_scope
from enginescope.engines import AgentWebSocketBridge, ExecutionEngineFactory, UserExecutionContext


async def lifecycles(count: int) -> None:
    container = EngineContainer()
    await container.init_resources()
    for n in range(count):
        ctx = UserExecutionContext(user_id=f"user-{n % 100}", thread_id="t-1", run_id=f"run-{n}")
        async with user_scope(ctx):
            await container.user_engine()
        if n % 100 == 99:
            await asyncio.sleep(0)
    await container.shutdown_resources()


async def factory_cycles(count: int) -> None:
    factory = ExecutionEngineFactory(AgentWebSocketBridge())
    contexts = [
        UserExecutionContext(user_id=f"u-{n}", thread_id="t", run_id=f"r-{n}") for n in range(100)
    ]
    for n in range(count):
        engine = await factory.create_for_user(contexts[n % 100])
        await factory.cleanup_engine(engine)
    await factory.shutdown()


async def warm_resolves(count: int) -> None:
    container = EngineContainer()
    await container.init_resources()
    async with user_scope(UserExecutionContext(user_id="u", thread_id="t", run_id="r")):
        await container.user_engine()
        for _ in range(count):
            await container.user_engine()
    await container.shutdown_resources()


class _PeerContainer(containers.DeclarativeContainer):
    context = providers.Object(None)
    engine = providers.ContextLocalSingleton(dict, context=context)


async def warm_peer_calls(count: int) -> None:
    peer = _PeerContainer()
    peer.engine()
    for _ in range(count):
        peer.engine()


OPERATIONS = {
    "lifecycle": lifecycles,
    "factory": factory_cycles,
    "warm": warm_resolves,
    "warm-peer": warm_peer_calls,
}

if __name__ == "__main__":
    asyncio.run(OPERATIONS[sys.argv[1]](int(sys.argv[2])))
