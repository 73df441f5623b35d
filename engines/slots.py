"""Per-user engine slots: the ledger that admits at most ``limit`` engines per user."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from .errors import UserEngineLimitError

__all__ = ["ImmediateSlotLedger", "InMemorySlotLedger", "SlotLedger"]


@runtime_checkable
class SlotLedger(Protocol):
    """Admits or refuses a user's engines.

    ``acquire`` either records ``slot_id`` for ``user_id`` and returns the user's active
    count, or raises :class:`UserEngineLimitError`. ``release`` is idempotent: releasing a
    slot that is not held (never taken, already released, or taken by a cancelled
    ``acquire``) is a no-op that returns ``False``, so a caller may release on every failure
    path after calling ``acquire``. The in-memory ledger serves one process; a shared ledger
    (Redis) serves several replicas.

    ``immediate`` says whether the ledger answers without waiting: when it is ``True``,
    ``acquire_nowait`` and ``release_nowait`` do what ``acquire`` and ``release`` do,
    synchronously (it is an :class:`ImmediateSlotLedger`), and the factory uses them. A
    ledger that may suspend says ``False`` (a ledger without the attribute counts as
    ``False``).
    """

    @property
    def immediate(self) -> bool:
        """Whether ``acquire_nowait``/``release_nowait`` answer synchronously."""
        ...

    async def acquire(self, user_id: str, slot_id: str, limit: int) -> int: ...

    async def release(self, user_id: str, slot_id: str) -> bool: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class ImmediateSlotLedger(SlotLedger, Protocol):
    """A :class:`SlotLedger` whose ``immediate`` is ``True``: it also answers synchronously."""

    def acquire_nowait(self, user_id: str, slot_id: str, limit: int) -> int: ...

    def release_nowait(self, user_id: str, slot_id: str) -> bool: ...


class InMemorySlotLedger:
    """One process's slots: the slot ids each user holds, as a tuple; an operation costs
    O(1) in the other users and O(the user's slots), which the limit bounds.

    A tuple, not a set: a user holds one or two slots, and a set costs four times the
    memory of a small tuple (one per live user). ``acquire`` never suspends, so the check
    and the take happen in one step of the event loop: concurrent callers are admitted
    exactly up to the limit, with no lock.
    """

    __slots__ = ("_slots",)

    immediate = True
    """Every call answers synchronously (see :class:`SlotLedger`)."""

    def __init__(self) -> None:
        self._slots: dict[str, tuple[str, ...]] = {}

    def __repr__(self) -> str:
        return f"<InMemorySlotLedger users={len(self._slots)} slots={self.total()}>"

    async def acquire(self, user_id: str, slot_id: str, limit: int) -> int:
        """Take a slot for ``user_id`` or raise :class:`UserEngineLimitError`."""
        return self.acquire_nowait(user_id, slot_id, limit)

    def acquire_nowait(self, user_id: str, slot_id: str, limit: int) -> int:
        """Synchronous :meth:`acquire`."""
        held = self._slots.get(user_id, ())
        if len(held) >= limit:
            raise UserEngineLimitError(user_id, len(held), limit)
        if slot_id not in held:
            held = self._slots[user_id] = (*held, slot_id)
        return len(held)

    async def release(self, user_id: str, slot_id: str) -> bool:
        """Give ``slot_id`` back; ``False`` if it was not held."""
        return self.release_nowait(user_id, slot_id)

    def release_nowait(self, user_id: str, slot_id: str) -> bool:
        """Synchronous :meth:`release`."""
        held = self._slots.get(user_id, ())
        if slot_id not in held:
            return False
        index = held.index(slot_id)
        rest = held[:index] + held[index + 1 :]
        if rest:
            self._slots[user_id] = rest
        else:
            del self._slots[user_id]
        return True

    def count(self, user_id: str) -> int:
        """Slots ``user_id`` holds now."""
        return len(self._slots.get(user_id, ()))

    def total(self) -> int:
        """Slots held by all users."""
        return sum(len(held) for held in self._slots.values())

    async def aclose(self) -> None:
        """Forget every slot."""
        self._slots.clear()
