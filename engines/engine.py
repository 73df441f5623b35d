"""The per-user execution engine: runs agents for one user context and nobody else."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import numbers
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from .agents import AgentRegistry, AgentResult, AgentRun, UserAgents, _ms_since
from .context import UserExecutionContext
from .errors import (
    EngineBusyError,
    EngineClosedError,
    InvalidTimeoutError,
    InvalidTimeoutTypeError,
)
from .sanitize import redact_text

if TYPE_CHECKING:
    from .emitter import UserWebSocketEmitter

__all__ = ["DEFAULT_MAX_CONCURRENT_RUNS", "UserExecutionEngine", "new_engine_id"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_CONCURRENT_RUNS = 4
_LOGGED_ERROR_LENGTH = 10_000
_PROCESS_TAG = uuid.uuid4().hex[:12]
_engine_numbers = itertools.count(1)

_NO_RUNS: Final = MappingProxyType(
    dict.fromkeys(
        ("runs_started", "runs_succeeded", "runs_failed", "runs_timed_out", "runs_cancelled"), 0
    )
)

OnClosed = Callable[["UserExecutionEngine"], Awaitable[None]]


def new_engine_id() -> str:
    """A process-unique, replica-unique engine id: a random process tag and a counter.

    Never time-based, so two engines created in the same instant cannot collide.
    """
    return f"eng-{_PROCESS_TAG}-{next(_engine_numbers)}"


class UserExecutionEngine:
    """Runs agents for exactly one :class:`UserExecutionContext`.

    Every event goes through the engine's own :class:`UserWebSocketEmitter`, which can only
    address this engine's user. ``cleanup()`` cancels running agents, closes the emitter,
    marks the engine inactive and tells its factory; it is idempotent.
    """

    def __init__(
        self,
        context: UserExecutionContext,
        websocket_emitter: UserWebSocketEmitter,
        *,
        agents: UserAgents | AgentRegistry | None = None,
        database_session_manager: Any = None,
        redis_manager: Any = None,
        engine_id: str | None = None,
        max_concurrent_runs: int = DEFAULT_MAX_CONCURRENT_RUNS,
        agent_timeout_seconds: float | None = None,
        on_closed: OnClosed | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(agents, AgentRegistry) or agents is None:
            agents = (AgentRegistry() if agents is None else agents).for_user(context)
        self.engine_id = engine_id or new_engine_id()
        self.context = context
        self.websocket_emitter = websocket_emitter
        self.database_session_manager = database_session_manager
        self.redis_manager = redis_manager
        self.created_at = datetime.now(UTC)
        self.created_monotonic = clock()
        self.max_concurrent_runs = max_concurrent_runs
        self.agent_timeout_seconds = agent_timeout_seconds
        self._agents = agents
        self._clock = clock
        self._on_closed = on_closed
        self._active = True
        self._cleanup: _Cleanup | None = None  # made by the first cleanup() call
        self._runs: dict[asyncio.Task[AgentResult], AgentRun] = {}
        self._stats: dict[str, int] | None = None  # made by the first run

    def __repr__(self) -> str:
        state = "active" if self._active else "closed"
        return (
            f"<UserExecutionEngine engine_id={self.engine_id!r} "
            f"user_id={self.context.user_id!r} {state} runs={len(self._runs)}>"
        )

    @property
    def user_id(self) -> str:
        """The user this engine belongs to."""
        return self.context.user_id

    @property
    def active_runs(self) -> int:
        """Agent runs in progress now."""
        return len(self._runs)

    def get_user_context(self) -> UserExecutionContext:
        """The context this engine was created for."""
        return self.context

    def is_active(self) -> bool:
        """``True`` until :meth:`cleanup` starts."""
        return self._active

    def age_seconds(self) -> float:
        """Seconds since the engine was created, by the engine's clock."""
        return self._clock() - self.created_monotonic

    def get_user_execution_stats(self) -> dict[str, Any]:
        """A JSON-ready snapshot of this engine: identity, age and run counters."""
        ctx = self.context
        return {
            "engine_id": self.engine_id,
            "user_id": ctx.user_id,
            "thread_id": ctx.thread_id,
            "run_id": ctx.run_id,
            "request_id": ctx.request_id,
            "created_at": self.created_at.isoformat(),
            "age_seconds": round(self.age_seconds(), 3),
            "is_active": self._active,
            "active_runs": len(self._runs),
            "max_concurrent_runs": self.max_concurrent_runs,
            **(self._stats or _NO_RUNS),
        }

    async def execute_agent(
        self, agent_name: str, message: str, *, timeout: float | None = None
    ) -> AgentResult:
        """Run ``agent_name`` on ``message`` and return its :class:`AgentResult`.

        Emits ``agent_started``, the agent's own progress events, then one final event:
        ``agent_completed``, ``agent_error`` (the agent raised) or ``agent_stopped`` (a
        timeout, the engine closing or a cancelled caller; ``data.reason`` says which).
        An agent's exception, a timeout, or the engine closing give a failed result; the
        engine stays usable after a failed run. Cancelling the caller cancels the run and
        propagates. ``timeout`` is a positive number of seconds; ``inf`` means no deadline,
        ``None`` the engine's ``agent_timeout_seconds``.
        """
        seconds = check_timeout(timeout)
        run = self._start_run(agent_name, message)
        task = asyncio.create_task(self._run(run), name=f"enginescope-run-{self.engine_id}")
        self._runs[task] = run
        task.add_done_callback(self._forget_run)
        limit = self.agent_timeout_seconds if seconds is None else seconds
        if limit is None or math.isinf(limit):
            return await self._await_run(task, run)
        try:
            done, _ = await asyncio.wait((task,), timeout=limit)
        except asyncio.CancelledError:
            await _stop(task, run, "cancelled", "cancelled by the caller")
            raise
        if not done:
            await _stop(task, run, "timeout", f"timed out after {limit}s")
            self._count("runs_timed_out")
            return _failed(run, f"Agent {agent_name!r} timed out after {limit}s", "TimeoutError")
        if task.cancelled():
            return _failed(run, run.cancel_reason or "cancelled", "CancelledError")
        return task.result()

    async def _await_run(self, task: asyncio.Task[AgentResult], run: AgentRun) -> AgentResult:
        """Wait for a run that has no deadline by awaiting its task directly.

        A cancelled caller cancels the run too (its ``agent_stopped`` event says
        "cancelled") and the cancellation propagates, also when the agent swallowed it and
        returned; a run cancelled by the engine closing is a failed result.
        """
        try:
            result = await task
        except asyncio.CancelledError:
            if run.caller_cancelled():
                await _stop(task, run, "cancelled", "cancelled by the caller")
                raise
            return _failed(run, run.cancel_reason or "cancelled", "CancelledError")
        if run.caller_cancelled():  # the agent swallowed the caller's cancellation
            raise asyncio.CancelledError
        return result

    def _start_run(self, agent_name: str, message: str) -> AgentRun:
        if not self._active:
            raise EngineClosedError(self.engine_id)
        if not isinstance(message, str):
            raise TypeError(f"message must be a string, got {type(message).__name__}")
        self._agents.get(agent_name)  # unknown agents fail here, before any event is sent
        if len(self._runs) >= self.max_concurrent_runs:
            raise EngineBusyError(self.engine_id, self.max_concurrent_runs)
        self._count("runs_started")
        caller = asyncio.current_task()
        return AgentRun(self.context, agent_name, message, self.websocket_emitter, caller=caller)

    async def _run(self, run: AgentRun) -> AgentResult:
        name = run.agent_name
        started = time.perf_counter()
        await self.websocket_emitter.notify_agent_started(name, message=run.message)
        try:
            result = await self._agents.get(name)(run)
        except asyncio.CancelledError:
            await self._stopped(run, started)
            raise
        except Exception as exc:  # noqa: BLE001 - an agent's failure becomes its result
            if run.is_stopping:  # the agent turned its cancellation into an error
                return await self._stopped(run, started)
            self._count("runs_failed")
            logger.info(
                "agent run failed",
                extra={
                    "engine_id": self.engine_id,
                    "agent_name": name,
                    "error": redact_text(repr(exc), _LOGGED_ERROR_LENGTH),
                },
            )
            duration = _ms_since(started)
            await run.finish_failed(exc, duration)
            return AgentResult(name, False, None, str(exc), type(exc).__name__, duration)
        if run.is_stopping:  # the agent swallowed its cancellation
            return await self._stopped(run, started)
        duration = _ms_since(started)
        self._count("runs_succeeded")
        await run.finish_completed(result, duration)
        return AgentResult(name, True, result, None, None, duration)

    async def _stopped(self, run: AgentRun, started: float) -> AgentResult:
        """End a stopped run with its one ``agent_stopped`` event."""
        self._count("runs_cancelled")
        await run.finish_stopped(_ms_since(started))
        return _failed(run, run.cancel_reason or "cancelled", "CancelledError")

    def _count(self, counter: str) -> None:
        if self._stats is None:
            self._stats = dict(_NO_RUNS)
        self._stats[counter] += 1

    def _forget_run(self, task: asyncio.Task[AgentResult]) -> None:
        self._runs.pop(task, None)

    async def cleanup(self) -> None:
        """Cancel running agents, close the emitter, go inactive and tell the factory.

        Idempotent: a second call waits for the first to finish and returns.
        """
        if self._cleanup is not None:
            await self._cleanup.wait()
            return
        self._cleanup = cleanup = _Cleanup()
        self._active = False
        try:
            if self._runs:
                await self._cancel_runs()
            await self.websocket_emitter.close()
        finally:
            cleanup.finish()
            if self._on_closed is not None:
                await self._on_closed(self)

    aclose = cleanup
    """The same as :meth:`cleanup`."""

    def close_now(self) -> bool:
        """:meth:`cleanup` without awaiting, when it can finish at once: no run in progress
        and an emitter that closes synchronously. Returns ``False`` (having done nothing)
        when :meth:`cleanup` must be awaited instead. Does not call ``on_closed``: it is for
        the owner that would be told (the factory), which deregisters the engine itself."""
        close = getattr(self.websocket_emitter, "close_now", None)
        if self._cleanup is not None or self._runs or not callable(close):
            return False
        self._cleanup = cleanup = _Cleanup()
        self._active = False
        try:
            close()
        finally:
            cleanup.finish()
        return True

    @property
    def closed(self) -> bool:
        """Whether :meth:`cleanup` has finished."""
        return self._cleanup is not None and self._cleanup.finished

    async def _cancel_runs(self) -> None:
        if not self._runs:
            return
        for task, run in list(self._runs.items()):
            run.request_stop("engine_closed", "engine closed")
            task.cancel()
        await asyncio.wait(tuple(self._runs))


def check_timeout(timeout: object) -> float | None:
    """``timeout`` as seconds (``inf``: no deadline), or ``None``; anything but a positive
    real number or ``None`` raises :class:`InvalidTimeoutError` (NaN, zero, negatives) or
    :class:`InvalidTimeoutTypeError` (bools, strings, complex numbers)."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise InvalidTimeoutTypeError(timeout)
    try:
        seconds = float(timeout)
    except OverflowError:  # an int too large for a float: no deadline in practice
        return math.inf
    if not seconds > 0:  # NaN compares false
        raise InvalidTimeoutError(timeout)
    return seconds


class _Cleanup:
    """An engine's cleanup in progress; a second caller waits on it (a future, made only
    when somebody has to wait, so the common single cleanup allocates no event)."""

    __slots__ = ("_waiters", "finished")

    def __init__(self) -> None:
        self.finished = False
        self._waiters: list[asyncio.Future[None]] = []

    async def wait(self) -> None:
        if not self.finished:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter

    def finish(self) -> None:
        self.finished = True
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)


async def _stop(task: asyncio.Task[AgentResult], run: AgentRun, reason: str, message: str) -> None:
    """Cancel ``task`` with ``reason`` and wait for it to send its ``agent_stopped``."""
    run.request_stop(reason, message)
    task.cancel()
    await asyncio.wait((task,))


def _failed(run: AgentRun, error: str, error_type: str) -> AgentResult:
    return AgentResult(run.agent_name, False, None, error, error_type)
