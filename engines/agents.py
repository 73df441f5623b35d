"""Agents: the registry that names them, the run handle they receive, and their result."""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeAlias, TypeVar

from .context import UserExecutionContext
from .errors import AgentNotFoundError

if TYPE_CHECKING:
    from .emitter import UserWebSocketEmitter

__all__ = [
    "STOP_REASONS",
    "Agent",
    "AgentFactory",
    "AgentRegistry",
    "AgentResult",
    "AgentRun",
    "UserAgents",
    "inline_tool",
]

P = ParamSpec("P")
R = TypeVar("R")

Agent: TypeAlias = Callable[["AgentRun"], Awaitable[Any]]
"""An agent is an async callable that receives an :class:`AgentRun` and returns its result."""

AgentFactory: TypeAlias = Callable[[UserExecutionContext], Agent]
"""Builds a fresh agent for one user context, so stateful agents are never shared."""


@dataclass(frozen=True, slots=True)
class AgentResult:
    """The outcome of one agent run."""

    agent_name: str
    success: bool
    result: Any = None
    error: str | None = None
    error_type: str | None = None
    duration_ms: float = 0.0


STOP_REASONS: Final = ("cancelled", "timeout", "engine_closed")
"""The ``data.reason`` of an ``agent_stopped`` event: the caller (or a Stop) cancelled the
run, it ran past its timeout, or its engine was cleaned up."""

_INLINE: Final = "__enginescope_inline__"


def inline_tool(fn: Callable[P, R]) -> Callable[P, R]:
    """Mark a sync tool as trivial, so :meth:`AgentRun.use_tool` calls it on the event
    loop's thread instead of in a worker thread. Usable as a decorator; for functions that
    return at once (no I/O, no locks), where a thread hop costs more than the call."""

    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        return fn(*args, **kwargs)

    setattr(call, _INLINE, True)
    return call


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object whose __call__ is async
    )


async def _call_tool(fn: Callable[..., Any], params: dict[str, Any]) -> Any:
    """``fn(**params)``: awaited when async, inline when marked, else in a worker thread
    that sees the caller's context variables (``asyncio.to_thread`` copies them)."""
    if getattr(fn, _INLINE, False) or _is_async(fn):
        result = fn(**params)
    else:
        result = await asyncio.to_thread(fn, **params)
    if inspect.isawaitable(result):
        result = await result
    return result


class AgentRun:
    """What an agent sees of its run: the context, the message, and ways to report progress.

    Once the run is asked to stop (its engine closes, it times out, its caller is
    cancelled) or has sent its final event, its reports send nothing, so a run that
    swallows its cancellation still ends with exactly one final event.
    """

    __slots__ = (
        "_caller",
        "_emitter",
        "_finished",
        "agent_name",
        "cancel_reason",
        "context",
        "message",
        "stop_reason",
    )

    def __init__(
        self,
        context: UserExecutionContext,
        agent_name: str,
        message: str,
        emitter: UserWebSocketEmitter,
        *,
        caller: asyncio.Task[Any] | None = None,
    ) -> None:
        self.context = context
        self.agent_name = agent_name
        self.message = message
        self.cancel_reason: str | None = None
        self.stop_reason: str | None = None
        self._emitter = emitter
        self._caller = caller
        self._finished = False

    def caller_cancelled(self) -> bool:
        """Whether ``caller``, the task that started this run, is being cancelled."""
        return self._caller is not None and self._caller.cancelling() > 0

    @property
    def is_stopping(self) -> bool:
        """Whether the run was asked to stop before it finished."""
        return self.stop_reason is not None or self.caller_cancelled()

    @property
    def is_finished(self) -> bool:
        """Whether the run sent its final event; it sends nothing more."""
        return self._finished

    def request_stop(self, reason: str, message: str) -> None:
        """Mark the run as stopping with ``reason`` (one of :data:`STOP_REASONS`) unless
        it already is; the engine calls this before it cancels the run's task."""
        if self.stop_reason is None:
            self.stop_reason, self.cancel_reason = reason, message

    def __repr__(self) -> str:
        return (
            f"<AgentRun agent_name={self.agent_name!r} user_id={self.context.user_id!r} "
            f"run_id={self.context.run_id!r}>"
        )

    def _silent(self) -> bool:
        return self._finished or self.stop_reason is not None or self.caller_cancelled()

    async def think(self, text: str, *, step: int | None = None) -> None:
        """Report a reasoning step to the user (an ``agent_thinking`` event)."""
        if not self._silent():
            await self._emitter.notify_agent_thinking(self.agent_name, text, step=step)

    async def stream_text(self, text: str) -> None:
        """Stream a piece of the reply as it is written (``agent_text_delta`` events).

        Pieces are coalesced by the emitter (at most one event per 50 ms or 256
        characters by default) and flushed before the run's next other event, so the
        deltas a client joins are exactly the text streamed here."""
        if not self._silent():
            await self._emitter.notify_agent_text_delta(self.agent_name, text)

    async def use_tool(self, tool_name: str, fn: Callable[..., Any], /, **params: Any) -> Any:
        """Run ``fn(**params)`` between ``tool_executing`` and ``tool_completed`` events,
        and return its result. A failing tool reports its error in ``tool_completed`` and
        re-raises.

        An async ``fn`` is awaited. A sync ``fn`` runs in a worker thread (with the
        caller's context variables), so a blocking call stalls no other user; mark a
        trivial one with :func:`inline_tool` to call it on the event loop's thread."""
        await self.report_tool_executing(tool_name, params)
        started = time.perf_counter()
        try:
            result = await _call_tool(fn, params)
        except Exception as exc:
            await self.report_tool_completed(
                tool_name, None, duration_ms=_ms_since(started), error=str(exc)
            )
            raise
        await self.report_tool_completed(tool_name, result, duration_ms=_ms_since(started))
        return result

    async def report_tool_executing(self, tool_name: str, params: Mapping[str, Any]) -> None:
        """A tool the agent runs by itself (a framework's tool) is starting."""
        if not self._silent():
            await self._emitter.notify_tool_executing(self.agent_name, tool_name, params)

    async def report_tool_completed(
        self,
        tool_name: str,
        result: Any = None,
        *,
        duration_ms: float | None = None,
        error: str | None = None,
    ) -> None:
        """A tool the agent runs by itself finished with ``result`` or failed with ``error``."""
        if not self._silent():
            await self._emitter.notify_tool_completed(
                self.agent_name, tool_name, result, duration_ms=duration_ms, error=error
            )

    async def finish_completed(self, result: Any, duration_ms: float) -> None:
        """Send ``agent_completed`` as the run's final event (the engine calls this)."""
        if not self._finished:
            self._finished = True
            await self._emitter.notify_agent_completed(
                self.agent_name, result, duration_ms=duration_ms
            )

    async def finish_failed(self, error: BaseException, duration_ms: float) -> None:
        """Send ``agent_error`` as the run's final event (the engine calls this)."""
        if not self._finished:
            self._finished = True
            await self._emitter.notify_agent_error(self.agent_name, error, duration_ms=duration_ms)

    async def finish_stopped(self, duration_ms: float) -> None:
        """Send ``agent_stopped`` as the run's final event (the engine calls this)."""
        if self._finished:
            return
        self._finished = True
        if self.stop_reason is None:
            self.request_stop(
                "cancelled", "cancelled by the caller" if self.caller_cancelled() else "cancelled"
            )
        await self._emitter.notify_agent_stopped(
            self.agent_name,
            self.stop_reason or "cancelled",
            message=self.cancel_reason,
            duration_ms=duration_ms,
        )


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)


def _shared(agent: Agent) -> AgentFactory:
    def source(context: UserExecutionContext) -> Agent:
        return agent

    return source


class AgentRegistry:
    """Names the agents an engine may run.

    ``register(name, agent)`` registers a stateless async callable shared safely by all
    users; ``register_factory(name, factory)`` registers a factory called once per engine,
    so an agent that keeps state never sees another user's.
    """

    def __init__(self) -> None:
        self._sources: dict[str, AgentFactory] = {}

    def __repr__(self) -> str:
        return f"<AgentRegistry agents={sorted(self._sources)}>"

    def __contains__(self, name: object) -> bool:
        return name in self._sources

    def __len__(self) -> int:
        return len(self._sources)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._sources))

    def register(self, name: str, agent: Agent, *, replace: bool = False) -> Agent:
        """Register ``agent`` under ``name`` and return it (usable as a decorator's body)."""
        if not callable(agent):
            raise TypeError(f"Agent {name!r} must be an async callable taking an AgentRun.")
        self._add(name, _shared(agent), replace=replace)
        return agent

    def register_factory(self, name: str, factory: AgentFactory, *, replace: bool = False) -> None:
        """Register ``factory``; each engine calls it once with its user context."""
        if not callable(factory):
            raise TypeError(f"Agent factory {name!r} must be callable with a user context.")
        self._add(name, factory, replace=replace)

    def agent(self, name: str) -> Callable[[Agent], Agent]:
        """Decorator form of :meth:`register`."""

        def decorate(agent: Agent) -> Agent:
            return self.register(name, agent)

        return decorate

    def unregister(self, name: str) -> None:
        """Remove ``name``; unknown names raise :class:`AgentNotFoundError`."""
        if self._sources.pop(name, None) is None:
            raise AgentNotFoundError(name, self.names())

    def names(self) -> tuple[str, ...]:
        """The registered agent names, sorted."""
        return tuple(sorted(self._sources))

    def for_user(self, context: UserExecutionContext) -> UserAgents:
        """A per-engine view that builds each agent at most once for ``context``."""
        return UserAgents(self, context)

    def _add(self, name: str, source: AgentFactory, *, replace: bool) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"Agent name must be a non-empty string, got {name!r}.")
        if name in self._sources and not replace:
            raise ValueError(f"Agent {name!r} is already registered; pass replace=True.")
        self._sources[name] = source

    def _source(self, name: str) -> AgentFactory:
        try:
            return self._sources[name]
        except KeyError:
            raise AgentNotFoundError(name, self.names()) from None


class UserAgents:
    """The agents of one engine: built lazily from the registry, never shared across users."""

    __slots__ = ("_agents", "_context", "_registry")

    def __init__(self, registry: AgentRegistry, context: UserExecutionContext) -> None:
        self._registry = registry
        self._context = context
        self._agents: dict[str, Agent] = {}

    def get(self, name: str) -> Agent:
        """The agent called ``name`` for this user; :class:`AgentNotFoundError` if unknown
        (or not a string)."""
        if not isinstance(name, str):
            raise AgentNotFoundError(name, self.names())
        agent = self._agents.get(name)
        if agent is None:
            agent = self._registry._source(name)(self._context)
            self._agents[name] = agent
        return agent

    def names(self) -> tuple[str, ...]:
        """The agent names this user may run."""
        return self._registry.names()
