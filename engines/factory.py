"""The execution engine factory: per-user limits, the reaper, metrics and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ._admission import SlotAdmission
from ._lifecycle import BackgroundLoop, Backoff, check_positive
from ._registry import EngineRegistry
from .agents import AgentRegistry
from .bridge import require_bridge
from .context import UserExecutionContext, validate_user_context
from .emitter import UserWebSocketEmitter
from .engine import DEFAULT_MAX_CONCURRENT_RUNS, UserExecutionEngine, new_engine_id
from .errors import (
    FactoryBridgeError,
    FactoryCapacityError,
    FactoryConfigError,
    FactoryShutdownError,
)
from .slots import InMemorySlotLedger, SlotLedger

if TYPE_CHECKING:
    from .bridge import WebSocketBridge

__all__ = ["EmitterFactory", "ExecutionEngineFactory"]

logger = logging.getLogger(__name__)

EmitterFactory = Callable[[str, str, str, "WebSocketBridge"], "UserWebSocketEmitter"]

_COUNTERS = (
    "total_engines_created",
    "total_engines_cleaned",
    "creation_errors",
    "cleanup_errors",
    "timeout_cleanups",
    "user_limit_rejections",
    "capacity_rejections",
    "reaper_errors",
)
DEFAULT_MAX_ENGINES = 10_000


_positive = functools.partial(check_positive, error=FactoryConfigError)


class ExecutionEngineFactory:
    """Creates one isolated :class:`UserExecutionEngine` per user context.

    Admission is a per-user slot taken in O(1) before any await and given back on every
    failure path. Engines live in an ordered registry (oldest first), so the reaper finds
    expired engines without scanning the rest. Every metric is read off the live
    structures, so it is exact at every moment.
    """

    def __init__(
        self,
        websocket_bridge: WebSocketBridge | None,
        *,
        database_session_manager: Any = None,
        redis_manager: Any = None,
        agent_registry: AgentRegistry | None = None,
        max_engines_per_user: int = 2,
        max_engines: int | None = DEFAULT_MAX_ENGINES,
        engine_timeout_seconds: float = 300,
        cleanup_interval_seconds: float = 60,
        shutdown_timeout_seconds: float = 10,
        agent_timeout_seconds: float | None = None,
        max_concurrent_runs: int = DEFAULT_MAX_CONCURRENT_RUNS,
        slot_ledger: SlotLedger | None = None,
        emitter_factory: EmitterFactory | None = None,
        engine_class: type[UserExecutionEngine] = UserExecutionEngine,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        bridge = require_bridge(websocket_bridge, error=FactoryBridgeError)
        _positive("max_engines_per_user", max_engines_per_user, integer=True)
        if max_engines is not None:
            _positive("max_engines", max_engines, integer=True)
        _positive("max_concurrent_runs", max_concurrent_runs, integer=True)
        _positive("engine_timeout_seconds", engine_timeout_seconds)
        _positive("cleanup_interval_seconds", cleanup_interval_seconds)
        _positive("shutdown_timeout_seconds", shutdown_timeout_seconds)
        if agent_timeout_seconds is not None:
            _positive("agent_timeout_seconds", agent_timeout_seconds)
        self.websocket_bridge = bridge
        self.database_session_manager = database_session_manager
        self.redis_manager = redis_manager
        self.agent_registry = agent_registry if agent_registry is not None else AgentRegistry()
        self.max_engines_per_user = max_engines_per_user
        self.max_engines = max_engines
        self.engine_timeout_seconds = engine_timeout_seconds
        self.cleanup_interval_seconds = cleanup_interval_seconds
        self.shutdown_timeout_seconds = shutdown_timeout_seconds
        self.agent_timeout_seconds = agent_timeout_seconds
        self.max_concurrent_runs = max_concurrent_runs
        self.slot_ledger: SlotLedger = slot_ledger or InMemorySlotLedger()
        self._emitter_factory = emitter_factory
        self._engine_class = engine_class
        self._clock = clock
        self._engines = EngineRegistry()
        self._counters = dict.fromkeys(_COUNTERS, 0)
        self._slots = SlotAdmission(self.slot_ledger, max_engines_per_user, self._counters)
        self._reaper = BackgroundLoop(
            "enginescope-reaper",
            self._sweep_after_interval,
            on_error=self._reaper_failed,
            backoff=Backoff(base=0.05, cap=cleanup_interval_seconds),
        )
        self._engine_closed = self._on_engine_closed  # one bound method for every engine
        self._closing = False
        self._shutdown_done: asyncio.Event | None = None
        self._shutdown_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        state = "shut down" if self._closing else "open"
        engines, users = len(self._engines), self._engines.user_count
        return (
            f"<ExecutionEngineFactory engines={engines} users={users} "
            f"limit={self.max_engines_per_user} {state}>"
        )

    @property
    def is_shutdown(self) -> bool:
        """``True`` once :meth:`shutdown` has started; no new engines are made."""
        return self._closing

    # -- creation --------------------------------------------------------------------

    async def create_for_user(self, context: UserExecutionContext) -> UserExecutionEngine:
        """Create and register an engine for ``context``.

        Raises :class:`InvalidContextError` for a bad context, :class:`UserEngineLimitError`
        when the user is at ``max_engines_per_user`` and :class:`FactoryShutdownError`
        after shutdown. Any failure after the slot was taken gives the slot back.
        """
        if self._closing:
            raise FactoryShutdownError
        try:
            ctx = validate_user_context(context)
        except Exception:
            self._counters["creation_errors"] += 1
            raise
        self._check_capacity()
        engine_id = new_engine_id()
        if self._slots.immediate is not None:
            self._slots.take_now(self._slots.immediate, ctx.user_id, engine_id)
        else:
            await self._acquire_slot(ctx.user_id, engine_id)
        try:
            engine = self._build_engine(ctx, engine_id)
        except BaseException:
            self._counters["creation_errors"] += 1
            await self._slots.give_back(ctx.user_id, engine_id)
            raise
        self._register(engine)
        self._ensure_reaper()
        return engine

    create_execution_engine = create_for_user  # the compatibility name

    def _check_capacity(self) -> None:
        """Refuse a new engine at ``max_engines`` (slots being taken count: no overshoot)."""
        if (
            self.max_engines is not None
            and len(self._engines) + self._slots.admitting >= self.max_engines
        ):
            self._counters["capacity_rejections"] += 1
            raise FactoryCapacityError(len(self._engines) + self._slots.admitting, self.max_engines)

    async def _acquire_slot(self, user_id: str, engine_id: str) -> None:
        """Take the slot from a ledger that may suspend (see :class:`SlotAdmission`)."""
        await self._slots.take(user_id, engine_id)
        if self._closing:  # shutdown began while a shared ledger was answering
            await self._slots.give_back(user_id, engine_id)
            raise FactoryShutdownError

    def _build_engine(self, ctx: UserExecutionContext, engine_id: str) -> UserExecutionEngine:
        if self._emitter_factory is None:
            emitter = UserWebSocketEmitter.for_context(ctx, self.websocket_bridge)
        else:
            emitter = self._emitter_factory(
                ctx.user_id, ctx.thread_id, ctx.run_id, self.websocket_bridge
            )
        return self._engine_class(
            ctx,
            emitter,
            agents=self.agent_registry.for_user(ctx),
            database_session_manager=self.database_session_manager,
            redis_manager=self.redis_manager,
            engine_id=engine_id,
            max_concurrent_runs=self.max_concurrent_runs,
            agent_timeout_seconds=self.agent_timeout_seconds,
            on_closed=self._engine_closed,
            clock=self._clock,
        )

    def _register(self, engine: UserExecutionEngine) -> None:
        self._engines.add(engine)
        self._counters["total_engines_created"] += 1

    # -- scopes ----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def user_execution_scope(
        self, context: UserExecutionContext
    ) -> AsyncIterator[UserExecutionEngine]:
        """Create an engine for ``context`` and clean it up on every exit path."""
        engine = await self.create_for_user(context)
        try:
            yield engine
        finally:
            await self.cleanup_engine(engine)

    # -- cleanup ---------------------------------------------------------------------

    async def cleanup_engine(self, engine: UserExecutionEngine | None) -> None:
        """Close ``engine`` and remove it. ``None`` or an unknown engine is a no-op.

        A failing ``engine.cleanup()`` is logged and counted in ``cleanup_errors``; the
        engine is removed and its slot returned all the same.
        """
        if engine is None or not self._engines.holds(engine):
            return
        try:
            await engine.cleanup()
        except Exception:
            self._counters["cleanup_errors"] += 1
            logger.exception(
                "engine cleanup failed; engine removed anyway",
                extra={"engine_id": engine.engine_id, "user_id": engine.context.user_id},
            )
        finally:
            await self._on_engine_closed(engine)

    def cleanup_engine_now(self, engine: UserExecutionEngine | None) -> bool:
        """:meth:`cleanup_engine` without awaiting when nothing would wait (no run in
        progress, an in-memory ledger); ``False``, having done nothing, otherwise."""
        if engine is None or not self._engines.holds(engine):
            return True
        if self._slots.immediate is None or not engine.close_now():
            return False
        self._deregister(engine)
        self._slots.immediate.release_nowait(engine.context.user_id, engine.engine_id)
        return True

    async def _on_engine_closed(self, engine: UserExecutionEngine) -> None:
        """Remove ``engine``, close its emitter (a removed engine reaches nobody, even a
        run that swallowed its cancellation) and give its slot back; idempotent."""
        if not self._deregister(engine):
            return
        try:
            if getattr(engine.websocket_emitter, "is_closed", False) is not True:
                await self._silence(engine)
        finally:
            if self._slots.immediate is not None:  # no coroutine for an in-memory slot
                self._slots.immediate.release_nowait(engine.context.user_id, engine.engine_id)
            else:
                await self._slots.give_back(engine.context.user_id, engine.engine_id)

    def _deregister(self, engine: UserExecutionEngine) -> bool:
        """Drop ``engine`` from the registry and count it cleaned; ``False`` if absent."""
        if not self._engines.remove(engine):
            return False
        self._counters["total_engines_cleaned"] += 1
        return True

    @staticmethod
    async def _silence(engine: UserExecutionEngine) -> None:
        """Close the emitter its cleanup did not; a failure repeats one already logged."""
        try:
            await engine.websocket_emitter.close()
        except Exception:
            logger.debug(
                "closing a removed engine's emitter failed",
                exc_info=True,
                extra={"engine_id": engine.engine_id, "user_id": engine.context.user_id},
            )

    async def cleanup_user_context(self, user_id: str) -> int:
        """Close every engine of ``user_id``; returns how many were closed."""
        engines = self._engines.for_user(user_id)
        for engine in engines:
            await self.cleanup_engine(engine)
        return len(engines)

    # -- the reaper ------------------------------------------------------------------

    def _ensure_reaper(self) -> None:
        if not self._closing:
            self._reaper.start()

    async def _sweep_after_interval(self) -> None:
        await asyncio.sleep(self.cleanup_interval_seconds)
        await self.reap_expired()

    def _reaper_failed(self, error: BaseException, backoff: Backoff) -> None:
        self._counters["reaper_errors"] += 1
        logger.error("engine reaper sweep failed; it will retry", exc_info=error)

    async def reap_expired(self) -> int:
        """Close engines older than ``engine_timeout_seconds``; returns how many. They are
        a prefix of the creation-ordered registry: the sweep costs O(expired)."""
        deadline = self._clock() - self.engine_timeout_seconds
        reaped = 0
        while self._engines:
            engine = self._engines.oldest()
            if engine.is_active() and engine.created_monotonic > deadline:
                break
            if engine.is_active():
                self._counters["timeout_cleanups"] += 1
                reaped += 1
            await self.cleanup_engine(engine)
        return reaped

    # -- metrics ---------------------------------------------------------------------

    def get_factory_metrics(self, include_keys: bool = True) -> dict[str, Any]:
        """Counters and gauges read off the live registry; O(1) without keys."""
        metrics: dict[str, Any] = {
            **self._counters,
            "active_engines_count": len(self._engines),
            "active_users_count": self._engines.user_count,
            "max_engines_per_user": self.max_engines_per_user,
            "engine_timeout_seconds": self.engine_timeout_seconds,
            "cleanup_interval": self.cleanup_interval_seconds,
            "cleanup_task_running": self._reaper.running,
            "max_engines": self.max_engines,
            "is_shutdown": self._closing,
            "timestamp": datetime.now(UTC).isoformat(),
        }
        if include_keys:
            metrics["active_engine_keys"] = self._engines.keys()
        return metrics

    def get_active_engines_summary(self) -> dict[str, Any]:
        """Per-engine stats; an engine whose stats fail is reported, not fatal."""
        return self._engines.summary()

    def get_active_contexts(self) -> dict[str, int]:
        """``{user_id: active engine count}``."""
        return self._engines.counts()

    def engines_for_user(self, user_id: str) -> tuple[UserExecutionEngine, ...]:
        """The active engines of ``user_id``, oldest first."""
        return self._engines.for_user(user_id)

    # -- shutdown --------------------------------------------------------------------

    async def shutdown(self) -> None:
        """Refuse new engines, stop the reaper and close every engine within
        ``shutdown_timeout_seconds``. Idempotent; concurrent callers wait for the first.

        Cancelling a caller stops its wait, not the shutdown, so a later call still
        returns only once every engine is closed."""
        if self._shutdown_task is None:
            self._closing = True
            self._shutdown_done = asyncio.Event()
            self._shutdown_task = asyncio.create_task(
                self._shut_down(self._shutdown_done), name="enginescope-shutdown"
            )
        await asyncio.shield(self._shutdown_task)

    async def _shut_down(self, done: asyncio.Event) -> None:
        try:
            await self._reaper.aclose()
            await self._close_all_engines()
            await self.slot_ledger.aclose()
        finally:
            done.set()

    cleanup_all_contexts = shutdown  # the compatibility name

    async def _close_all_engines(self) -> None:
        engines = self._engines.all()
        if not engines:
            return
        tasks = [asyncio.create_task(self.cleanup_engine(engine)) for engine in engines]
        _, pending = await asyncio.wait(tasks, timeout=self.shutdown_timeout_seconds)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
            self._counters["cleanup_errors"] += len(pending)
            logger.error(
                "engines did not finish cleanup within the shutdown deadline",
                extra={"engines": len(pending), "timeout": self.shutdown_timeout_seconds},
            )
        for engine in self._engines.all():  # whatever a cancelled cleanup left
            await self._on_engine_closed(engine)
