"""The invariant checker the reliability tests call after every step.

Each check raises ``AssertionError`` saying which invariant broke and what it saw, so a
failing hypothesis example or a failing cancellation point names the broken promise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from enginescope.engines import AgentWebSocketBridge, ExecutionEngineFactory, InMemorySlotLedger

__all__ = [
    "OUR_TASK_PREFIX",
    "check_bridge",
    "check_factory",
    "check_no_tasks_of_ours",
    "check_quiescent",
    "foreign_tasks",
]

OUR_TASK_PREFIX = "enginescope-"


def check_factory(factory: ExecutionEngineFactory, *, settled: bool = True) -> None:
    """The registry, the per-user counts, the counters and the slot ledger agree.

    ``settled``: no cleanup is in flight, so every registered engine must be active.
    """
    metrics = factory.get_factory_metrics(include_keys=True)
    contexts = factory.get_active_contexts()
    keys = metrics["active_engine_keys"]
    active = metrics["active_engines_count"]
    assert active == len(keys) == sum(contexts.values()), (
        f"engine counts disagree: active_engines_count={active}, "
        f"len(active_engine_keys)={len(keys)}, sum(get_active_contexts())={sum(contexts.values())}"
    )
    assert len(set(keys)) == len(keys), f"duplicate engine keys: {keys}"
    created, cleaned = metrics["total_engines_created"], metrics["total_engines_cleaned"]
    assert created - cleaned == active, (
        f"created ({created}) - cleaned ({cleaned}) != active ({active})"
    )
    assert len(contexts) == metrics["active_users_count"]
    for user_id, count in contexts.items():
        assert 0 < count <= factory.max_engines_per_user, (
            f"user {user_id!r} holds {count} engines, limit {factory.max_engines_per_user}"
        )
        engines = factory.engines_for_user(user_id)
        assert count == len(engines)
        assert all(engine.context.user_id == user_id for engine in engines), (
            f"an engine of another user is filed under {user_id!r}"
        )
    if factory.is_shutdown and _shutdown_finished(factory):
        assert 0 == active, f"{active} engines still registered after shutdown returned: {keys}"
    if settled:
        inactive = [key for key, engine in factory._engines.items() if not engine.is_active()]
        assert not inactive, f"registered engines are inactive: {inactive}"
    _check_ledger(factory, contexts)


def _check_ledger(factory: ExecutionEngineFactory, contexts: dict[str, int]) -> None:
    ledger = factory.slot_ledger
    if not isinstance(ledger, InMemorySlotLedger):
        return
    if factory.is_shutdown and _shutdown_finished(factory):
        assert 0 == ledger.total(), f"slots held after shutdown: {ledger!r}"
        return
    assert sum(contexts.values()) == ledger.total(), (
        f"slot ledger holds {ledger.total()} slots for {sum(contexts.values())} engines: "
        f"{ledger._slots}"
    )
    for user_id in set(contexts) | set(ledger._slots):
        assert contexts.get(user_id, 0) == ledger.count(user_id), (
            f"user {user_id!r}: {contexts.get(user_id, 0)} engines but "
            f"{ledger.count(user_id)} slots"
        )
        held = set(ledger._slots.get(user_id, ()))
        registered = {engine.engine_id for engine in factory.engines_for_user(user_id)}
        assert held == registered, f"user {user_id!r}: slots {held} != engines {registered}"


def _shutdown_finished(factory: ExecutionEngineFactory) -> bool:
    done = factory._shutdown_done
    return done is not None and done.is_set()


def check_bridge(bridge: AgentWebSocketBridge) -> None:
    """Every registered connection is open, has a live sender, and its socket is not closed."""
    total = 0
    for user_id, connections in bridge._users.items():
        assert connections, f"empty connection map left for user {user_id!r}"
        for connection in connections.values():
            total += 1
            assert user_id == connection.user_id, "a connection is filed under another user"
            assert connection.is_open, f"closed connection still registered: {connection!r}"
            assert not getattr(connection.socket, "closed", False), (
                f"connection registered for a closed socket: {connection!r}"
            )
            assert connection._task is not None
            assert not connection._task.done(), (
                f"registered connection has no live sender task: {connection!r}"
            )
    assert total == bridge.connection_count(), (
        f"bridge counts {bridge.connection_count()} connections, registry holds {total}"
    )


def foreign_tasks(baseline: Iterable[asyncio.Task[object]]) -> list[asyncio.Task[object]]:
    """Tasks not done now that were not in ``baseline`` (the caller's own task excluded)."""
    known = set(baseline)
    current = asyncio.current_task()
    return [
        task
        for task in asyncio.all_tasks()
        if task not in known and task is not current and not task.done()
    ]


def check_no_tasks_of_ours() -> None:
    """No ``enginescope-*`` task is still running (call after shutdown and bridge close)."""
    ours = [
        task.get_name()
        for task in asyncio.all_tasks()
        if task.get_name().startswith(OUR_TASK_PREFIX) and not task.done()
    ]
    assert not ours, f"tasks of ours still running: {ours}"


async def check_quiescent(
    baseline: Iterable[asyncio.Task[object]], *, timeout: float = 2.0
) -> None:
    """Wait (bounded) for every task started since ``baseline`` to finish; fail if one hangs."""
    pending = foreign_tasks(baseline)
    if pending:
        _, still = await asyncio.wait(pending, timeout=timeout)
        assert not still, f"tasks still pending after {timeout}s: {sorted(map(repr, still))}"
