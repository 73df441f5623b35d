"""The factory's live engines, kept in creation order and per user (not API).

Engines are keyed by themselves (identity): an object's hash is its address, so engines
made where freed ones lived land in the same, cache-warm, part of the table, where a random
string id would touch a random part of a large table on every create and cleanup. Creation
order makes the reaper's expired engines a prefix (O(expired) to find them), the per-user
index answers a user's engines in O(1) (a tuple per user: a user has one or two
engines, and a tuple is a third of a dict's memory), and every count is a ``len`` of a live
structure, so the factory's metrics are exact at every moment.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .engine import UserExecutionEngine

__all__ = ["EngineRegistry"]


class EngineRegistry:
    """Engines, oldest first, and by user; an engine is itself, whatever its id."""

    __slots__ = ("_by_user", "_engines")

    def __init__(self) -> None:
        self._engines: OrderedDict[UserExecutionEngine, None] = OrderedDict()
        self._by_user: dict[str, tuple[UserExecutionEngine, ...]] = {}

    def __repr__(self) -> str:
        return f"<EngineRegistry engines={len(self._engines)} users={len(self._by_user)}>"

    def __len__(self) -> int:
        return len(self._engines)

    def __bool__(self) -> bool:
        return bool(self._engines)

    @property
    def user_count(self) -> int:
        """Users with at least one engine."""
        return len(self._by_user)

    def holds(self, engine: UserExecutionEngine) -> bool:
        """Whether ``engine`` itself (not another with its id) is registered."""
        return engine in self._engines

    def add(self, engine: UserExecutionEngine) -> None:
        self._engines[engine] = None
        user_id = engine.context.user_id
        self._by_user[user_id] = (*self._by_user.get(user_id, ()), engine)

    def remove(self, engine: UserExecutionEngine) -> bool:
        """Drop ``engine`` from both indexes; ``False`` if it was not registered."""
        if engine not in self._engines:
            return False
        del self._engines[engine]
        user_id = engine.context.user_id
        engines = self._by_user[user_id]
        index = engines.index(engine)
        rest = engines[:index] + engines[index + 1 :]
        if rest:
            self._by_user[user_id] = rest
        else:
            del self._by_user[user_id]
        return True

    def oldest(self) -> UserExecutionEngine:
        """The engine created first (the registry must not be empty)."""
        return next(iter(self._engines))

    def all(self) -> tuple[UserExecutionEngine, ...]:
        """Every engine, oldest first."""
        return tuple(self._engines)

    def items(self) -> list[tuple[str, UserExecutionEngine]]:
        """``(engine_id, engine)`` pairs, oldest first."""
        return [(engine.engine_id, engine) for engine in self._engines]

    def keys(self) -> list[str]:
        """The engine ids, oldest first."""
        return [engine.engine_id for engine in self._engines]

    def for_user(self, user_id: str) -> tuple[UserExecutionEngine, ...]:
        """The engines of ``user_id``, oldest first."""
        return self._by_user.get(user_id, ())

    def counts(self) -> dict[str, int]:
        """``{user_id: engine count}``."""
        return {user_id: len(engines) for user_id, engines in self._by_user.items()}

    def summary(self) -> dict[str, Any]:
        """Per-engine stats; an engine whose stats fail is reported, not fatal."""
        engines: dict[str, Any] = {}
        for engine_id, engine in self.items():
            try:
                engines[engine_id] = engine.get_user_execution_stats()
            except Exception as exc:  # noqa: BLE001 - one bad engine must not hide the rest
                engines[engine_id] = {
                    "engine_id": engine_id,
                    "user_id": engine.context.user_id,
                    "error": f"{type(exc).__name__}: {exc}",
                }
        return {
            "total_active_engines": len(self._engines),
            "active_users": len(self._by_user),
            "engines": engines,
        }
