"""The slot-ledger contract: every SlotLedger admits a user's engines exactly up to the
limit, keeps users independent and releases idempotently, whatever its backend."""

from __future__ import annotations

import asyncio

import pytest
from enginescope.engines import ImmediateSlotLedger, SlotLedger, UserEngineLimitError


class TestAdmission:
    async def test_slots_are_admitted_up_to_the_limit(self, ledger: SlotLedger) -> None:
        """Each acquire returns the user's count; the one past the limit is refused."""
        assert [1, 2] == [await ledger.acquire("alice", f"s-{n}", 2) for n in range(2)]
        with pytest.raises(UserEngineLimitError, match=r"'alice'.*\(2/2\)") as refused:
            await ledger.acquire("alice", "s-3", 2)
        assert ("alice", 2, 2) == (
            refused.value.user_id,
            refused.value.active,
            refused.value.limit,
        )

    async def test_users_are_independent(self, ledger: SlotLedger) -> None:
        """One user at the limit does not stop another."""
        await ledger.acquire("alice", "a-1", 1)
        assert 1 == await ledger.acquire("bob", "b-1", 1)
        with pytest.raises(UserEngineLimitError):
            await ledger.acquire("alice", "a-2", 1)

    async def test_concurrent_acquires_admit_exactly_the_limit(self, ledger: SlotLedger) -> None:
        """Twenty callers racing for two slots: two win, eighteen are refused."""
        results = await asyncio.gather(
            *(ledger.acquire("alice", f"s-{n}", 2) for n in range(20)), return_exceptions=True
        )
        refused = [r for r in results if isinstance(r, UserEngineLimitError)]
        assert (2, 18) == (len(results) - len(refused), len(refused))


class TestRelease:
    async def test_release_frees_the_slot(self, ledger: SlotLedger) -> None:
        """A released slot can be taken again."""
        await ledger.acquire("alice", "s-1", 1)
        assert await ledger.release("alice", "s-1") is True
        assert 1 == await ledger.acquire("alice", "s-2", 1)

    async def test_release_is_idempotent(self, ledger: SlotLedger) -> None:
        """Releasing twice, or a slot never taken, is a no-op that says False."""
        await ledger.acquire("alice", "s-1", 2)
        assert [True, False] == [await ledger.release("alice", "s-1") for _ in range(2)]
        assert await ledger.release("alice", "never-taken") is False
        assert await ledger.release("nobody", "s-1") is False

    async def test_release_frees_only_its_own_slot(self, ledger: SlotLedger) -> None:
        """Releasing one slot leaves the user's other slots and other users' slots held."""
        await ledger.acquire("alice", "a-1", 2)
        await ledger.acquire("alice", "a-2", 2)
        await ledger.acquire("bob", "b-1", 1)
        await ledger.release("alice", "a-1")
        assert 2 == await ledger.acquire("alice", "a-3", 2)
        with pytest.raises(UserEngineLimitError):
            await ledger.acquire("bob", "b-2", 1)


class TestProtocol:
    def test_it_is_a_slot_ledger_that_says_whether_it_waits(self, ledger: SlotLedger) -> None:
        """Every ledger satisfies the protocol and declares ``immediate`` as a bool."""
        assert isinstance(ledger, SlotLedger)
        assert isinstance(ledger.immediate, bool)
        assert ledger.immediate == isinstance(ledger, ImmediateSlotLedger)

    async def test_immediate_calls_agree_with_the_async_ones(self, ledger: SlotLedger) -> None:
        """A ledger that answers synchronously does the same through either door."""
        if not isinstance(ledger, ImmediateSlotLedger) or not ledger.immediate:
            pytest.skip("this ledger suspends; it has no synchronous calls")
        assert 1 == ledger.acquire_nowait("alice", "s-1", 2)
        assert 2 == await ledger.acquire("alice", "s-2", 2)
        with pytest.raises(UserEngineLimitError):
            ledger.acquire_nowait("alice", "s-3", 2)
        assert ledger.release_nowait("alice", "s-1") is True
        assert await ledger.release("alice", "s-1") is False
