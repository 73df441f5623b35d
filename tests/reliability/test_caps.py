"""Caps on what one client can hold, and the lifecycle holes a hostile or broken
collaborator could open: each test here failed before the change it pins down."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from enginescope.engines import (
    AgentRegistry,
    AgentRun,
    AgentWebSocketBridge,
    ConnectionLimitError,
    ExecutionEngineFactory,
    ExecutionEngineFactoryError,
    FactoryCapacityError,
    FactoryConfigError,
    InMemorySlotLedger,
    UserEngineLimitError,
    UserExecutionContext,
    WebSocketBridgeError,
)
from enginescope.engines.testing import FakeSocket, RecordingBridge

from tests.support import Stubborn


def ctx(user_id: str) -> UserExecutionContext:
    return UserExecutionContext(user_id=user_id, thread_id="t-1", run_id="r-1")


class TakesThenSuspends(InMemorySlotLedger):
    """A shared-ledger stand-in: ``acquire`` writes the slot, then waits for the reply."""

    immediate = False

    def __init__(self) -> None:
        super().__init__()
        self.taken = asyncio.Event()
        self.reply = asyncio.Event()

    async def acquire(self, user_id: str, slot_id: str, limit: int) -> int:
        count = self.acquire_nowait(user_id, slot_id, limit)
        self.taken.set()
        await self.reply.wait()
        return count

    async def release(self, user_id: str, slot_id: str) -> bool:
        await asyncio.sleep(0)
        return self.release_nowait(user_id, slot_id)


class TestLedgerThatSuspendsAfterTakingTheSlot:
    async def test_a_caller_cancelled_there_leaks_no_slot(self) -> None:
        """Cancelling create_for_user while the ledger holds the slot gives the slot back."""
        ledger = TakesThenSuspends()
        factory = ExecutionEngineFactory(RecordingBridge(), slot_ledger=ledger)
        creating = asyncio.create_task(factory.create_for_user(ctx("u-1")))
        await ledger.taken.wait()
        creating.cancel()
        with pytest.raises(asyncio.CancelledError):
            await creating
        assert 0 == ledger.count("u-1")
        ledger.reply.set()
        engines = [await factory.create_for_user(ctx("u-1")) for _ in range(2)]
        assert 2 == len(engines)
        assert 2 == ledger.count("u-1")
        await factory.shutdown()
        assert 0 == ledger.total()

    async def test_a_ledger_error_after_the_write_leaks_no_slot(self) -> None:
        """An acquire that took the slot and then raised leaves the user with no slot held."""

        class Flaky(InMemorySlotLedger):
            immediate = False

            async def acquire(self, user_id: str, slot_id: str, limit: int) -> int:
                self.acquire_nowait(user_id, slot_id, limit)
                raise ConnectionError("reply lost")

        ledger = Flaky()
        factory = ExecutionEngineFactory(RecordingBridge(), slot_ledger=ledger)
        for _ in range(3):
            with pytest.raises(ConnectionError):
                await factory.create_for_user(ctx("u-1"))
        assert 0 == ledger.count("u-1")
        assert 3 == factory.get_factory_metrics()["creation_errors"]
        await factory.shutdown()


class Swallower(Stubborn):
    """A stubborn agent that, once let go, still speaks after its engine was removed."""

    async def __call__(self, run: AgentRun) -> str:  # type: ignore[override]
        await super().__call__(run)
        await run.think("still here after my engine was removed")
        return "late result"


class TestRemovedEngineReachesNobody:
    async def test_a_run_that_outlives_the_shutdown_deadline_sends_nothing_after(self) -> None:
        """Events of a run that swallowed cancellation past the deadline never go out."""
        bridge, agents, swallower = RecordingBridge(), AgentRegistry(), Swallower()
        agents.register("stubborn", swallower)
        factory = ExecutionEngineFactory(
            bridge, agent_registry=agents, shutdown_timeout_seconds=0.05
        )
        engine = await factory.create_for_user(ctx("u-1"))
        run = asyncio.create_task(engine.execute_agent("stubborn", "hi"))
        await swallower.started.wait()
        await factory.shutdown()
        assert 0 == factory.get_factory_metrics()["active_engines_count"]
        sent_at_shutdown = len(bridge.events)
        swallower.release.set()
        await asyncio.wait((run,))
        late = [event["type"] for _, event in bridge.events[sent_at_shutdown:]]
        assert [] == late


class TestFactoryCapacity:
    async def test_engines_beyond_the_cap_are_refused_by_their_own_error(self) -> None:
        """The factory holds at most ``max_engines`` live engines across all users."""
        factory = ExecutionEngineFactory(RecordingBridge(), max_engines=3)
        engines = [await factory.create_for_user(ctx(f"u-{n}")) for n in range(3)]
        with pytest.raises(FactoryCapacityError, match=r"\(3/3\)") as refused:
            await factory.create_for_user(ctx("u-9"))
        assert (3, 3) == (refused.value.active, refused.value.limit)
        assert isinstance(refused.value, ExecutionEngineFactoryError)
        metrics = factory.get_factory_metrics()
        assert (1, 3, 3) == (
            metrics["capacity_rejections"],
            metrics["active_engines_count"],
            factory.slot_ledger.total(),  # type: ignore[attr-defined]
        )
        await factory.cleanup_engine(engines[0])
        assert "u-9" == (await factory.create_for_user(ctx("u-9"))).user_id
        await factory.shutdown()

    async def test_concurrent_creators_cannot_overshoot_the_cap(self) -> None:
        """While a suspending ledger answers, admissions in flight count against the cap."""

        class Slow(InMemorySlotLedger):
            immediate = False

            async def acquire(self, user_id: str, slot_id: str, limit: int) -> int:
                await asyncio.sleep(0.01)
                return self.acquire_nowait(user_id, slot_id, limit)

        factory = ExecutionEngineFactory(RecordingBridge(), max_engines=3, slot_ledger=Slow())
        results = await asyncio.gather(
            *(factory.create_for_user(ctx(f"u-{n}")) for n in range(10)), return_exceptions=True
        )
        admitted = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, FactoryCapacityError)]
        assert (3, 7) == (len(admitted), len(refused))
        await factory.shutdown()

    @pytest.mark.parametrize("value", [0, -1, 1.5, True, "10"])
    def test_bad_caps_are_named(self, value: Any) -> None:
        """max_engines must be a positive integer (or None for no cap)."""
        with pytest.raises(FactoryConfigError, match="max_engines") as refused:
            ExecutionEngineFactory(RecordingBridge(), max_engines=value)
        assert isinstance(refused.value, ValueError)

    async def test_none_means_no_cap(self) -> None:
        """max_engines=None admits as many engines as the per-user limits allow."""
        factory = ExecutionEngineFactory(RecordingBridge(), max_engines=None)
        for n in range(50):
            await factory.create_for_user(ctx(f"u-{n}"))
        assert 50 == factory.get_factory_metrics(include_keys=False)["active_engines_count"]
        await factory.shutdown()

    async def test_the_per_user_limit_is_still_checked_under_the_cap(self) -> None:
        """A user at its limit gets UserEngineLimitError, not the capacity error."""
        factory = ExecutionEngineFactory(RecordingBridge(), max_engines=10)
        for _ in range(2):
            await factory.create_for_user(ctx("u-1"))
        with pytest.raises(UserEngineLimitError):
            await factory.create_for_user(ctx("u-1"))
        await factory.shutdown()


class TestConnectionsPerUser:
    async def test_a_user_cannot_hold_more_sockets_than_the_cap(self) -> None:
        """The bridge refuses a user's socket beyond ``max_connections_per_user``."""
        bridge = AgentWebSocketBridge(max_connections_per_user=2)
        first, _ = (bridge.register_connection("eve", FakeSocket()) for _ in range(2))
        with pytest.raises(ConnectionLimitError, match=r"'eve'.*\(2/2\)") as refused:
            bridge.register_connection("eve", FakeSocket())
        assert ("eve", 2) == (refused.value.user_id, refused.value.limit)
        assert isinstance(refused.value, WebSocketBridgeError)
        assert 2 == bridge.connection_count("eve")
        bridge.register_connection("bob", FakeSocket())  # other users are not affected
        bridge.unregister_connection(first)
        bridge.register_connection("eve", FakeSocket())
        assert 2 == bridge.connection_count("eve")
        await bridge.aclose()

    async def test_events_fan_out_only_to_admitted_sockets(self) -> None:
        """A refused socket never receives anything."""
        bridge = AgentWebSocketBridge(max_connections_per_user=1)
        admitted, refused = FakeSocket(), FakeSocket()
        bridge.register_connection("eve", admitted)
        with pytest.raises(ConnectionLimitError):
            bridge.register_connection("eve", refused)
        assert 1 == await bridge.send_to_user("eve", {"type": "agent_thinking", "seq": 1})
        await bridge.flush()
        assert (1, 0) == (len(admitted.messages), len(refused.messages))
        await bridge.aclose()

    @pytest.mark.parametrize("value", [0, -3, 2.5, True])
    def test_bad_caps_are_named(self, value: Any) -> None:
        """max_connections_per_user must be a positive integer."""
        with pytest.raises(ValueError, match="max_connections_per_user"):
            AgentWebSocketBridge(max_connections_per_user=value)
