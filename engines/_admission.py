"""Taking and giving back a user's slots in the factory's ledger (not API).

One rule: after asking the ledger for a slot, every failure path gives it back. A ledger may
take the slot and then be interrupted (a cancelled caller, an error after its write);
``release`` is idempotent by protocol, so this never leaks a slot nor frees another's. A
ledger that answers synchronously (``immediate``) is used without a coroutine per call.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .errors import UserEngineLimitError
from .slots import ImmediateSlotLedger, SlotLedger

if TYPE_CHECKING:
    from collections.abc import MutableMapping

__all__ = ["SlotAdmission"]


def _immediate(ledger: SlotLedger) -> ImmediateSlotLedger | None:
    """``ledger`` if it says it answers synchronously (see :class:`SlotLedger`)."""
    if getattr(ledger, "immediate", False) is True and isinstance(ledger, ImmediateSlotLedger):
        return ledger
    return None


class SlotAdmission:
    """The factory's door to its :class:`SlotLedger`, counting refusals and failures."""

    __slots__ = ("_counters", "_limit", "admitting", "immediate", "ledger")

    def __init__(self, ledger: SlotLedger, limit: int, counters: MutableMapping[str, int]) -> None:
        self.ledger = ledger
        self.immediate = _immediate(ledger)
        self.admitting = 0  # slots being asked for right now (a suspending ledger)
        self._limit = limit
        self._counters = counters

    def __repr__(self) -> str:
        return f"<SlotAdmission ledger={self.ledger!r} admitting={self.admitting}>"

    def take_now(self, ledger: ImmediateSlotLedger, user_id: str, slot_id: str) -> None:
        """:meth:`take` for a ledger that answers synchronously."""
        try:
            ledger.acquire_nowait(user_id, slot_id, self._limit)
        except UserEngineLimitError:
            self._counters["user_limit_rejections"] += 1
            raise
        except BaseException:
            self._counters["creation_errors"] += 1
            ledger.release_nowait(user_id, slot_id)
            raise

    async def take(self, user_id: str, slot_id: str) -> None:
        """Take ``user_id``'s slot or raise (:class:`UserEngineLimitError` when full)."""
        self.admitting += 1
        try:
            await self.ledger.acquire(user_id, slot_id, self._limit)
        except UserEngineLimitError:
            self._counters["user_limit_rejections"] += 1
            raise
        except BaseException:
            self._counters["creation_errors"] += 1
            await self.give_back(user_id, slot_id)
            raise
        finally:
            self.admitting -= 1

    async def give_back(self, user_id: str, slot_id: str) -> None:
        """Give a slot back; shielded, so a caller cancelled while a shared ledger answers
        does not leave the slot taken by an engine that is already unregistered."""
        if self.immediate is not None:
            self.immediate.release_nowait(user_id, slot_id)
            return
        await asyncio.shield(self.ledger.release(user_id, slot_id))
