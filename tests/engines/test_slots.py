"""InMemorySlotLedger: the per-user admission of one process."""

from __future__ import annotations

import asyncio

import pytest
from enginescope.engines import InMemorySlotLedger, SlotLedger, UserEngineLimitError

pytestmark = pytest.mark.asyncio


class TestInMemorySlotLedger:
    async def test_acquire_up_to_the_limit(self) -> None:
        """Slots are granted up to the limit, then refused naming the user and the count."""
        ledger = InMemorySlotLedger()
        assert await ledger.acquire("u", "a", 2) == 1
        assert await ledger.acquire("u", "b", 2) == 2
        with pytest.raises(UserEngineLimitError, match=r"\(2/2\)"):
            await ledger.acquire("u", "c", 2)
        assert ledger.count("u") == 2

    async def test_release_is_idempotent_and_frees_the_user(self) -> None:
        """Releasing twice returns False the second time; an empty user is forgotten."""
        ledger = InMemorySlotLedger()
        await ledger.acquire("u", "a", 1)
        assert await ledger.release("u", "a")
        assert not await ledger.release("u", "a")
        assert not await ledger.release("ghost", "a")
        assert (
            ledger.count("u"),
            ledger.total(),
            repr(ledger),
        ) == (0, 0, "<InMemorySlotLedger users=0 slots=0>")

    async def test_a_slot_taken_twice_is_held_once(self) -> None:
        """Acquiring a slot the user already holds counts it once; one release frees it."""
        ledger = InMemorySlotLedger()
        assert [1, 1] == [await ledger.acquire("u", "a", 2) for _ in range(2)]
        assert await ledger.release("u", "a")
        assert (0, False) == (ledger.count("u"), await ledger.release("u", "a"))

    async def test_releasing_one_slot_keeps_the_others_in_order(self) -> None:
        """Releasing a user's middle slot leaves the other two held and the user known."""
        ledger = InMemorySlotLedger()
        for slot_id in ("a", "b", "c"):
            await ledger.acquire("u", slot_id, 3)
        assert await ledger.release("u", "b")
        assert (2, 3) == (ledger.count("u"), await ledger.acquire("u", "d", 3))
        assert (False, True) == (await ledger.release("u", "b"), await ledger.release("u", "c"))

    async def test_users_are_independent(self) -> None:
        """One user's full ledger does not affect another user."""
        ledger = InMemorySlotLedger()
        await ledger.acquire("a", "1", 1)
        assert await ledger.acquire("b", "1", 1) == 1

    async def test_concurrent_acquires_admit_exactly_the_limit(self) -> None:
        """200 concurrent acquires for one user admit exactly the limit."""
        ledger = InMemorySlotLedger()
        results = await asyncio.gather(
            *(ledger.acquire("u", str(i), 5) for i in range(200)), return_exceptions=True
        )
        assert sum(isinstance(result, int) for result in results) == 5
        assert ledger.count("u") == 5

    async def test_satisfies_the_protocol_and_closes(self) -> None:
        """The ledger is a SlotLedger and aclose() forgets every slot."""
        ledger = InMemorySlotLedger()
        await ledger.acquire("u", "a", 1)
        assert isinstance(ledger, SlotLedger)
        await ledger.aclose()
        assert ledger.total() == 0
