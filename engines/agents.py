"""Agents: the registry that names them, the run handle they receive, and their result."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from .context import UserExecutionContext
from .errors import AgentNotFoundError

if TYPE_CHECKING:
    from .emitter import UserWebSocketEmitter

__all__ = [
    "Agent",
    "AgentFactory",
    "AgentRegistry",
    "AgentResult",
    "AgentRun",
    "UserAgents",
]

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


class AgentRun:
    """What an agent sees of its run: the context, the message, and ways to report progress."""

    __slots__ = ("_caller", "_emitter", "agent_name", "cancel_reason", "context", "message")

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
        self._emitter = emitter
        self._caller = caller

    def caller_cancelled(self) -> bool:
        """Whether ``caller``, the task that started this run, is being cancelled."""
        return self._caller is not None and self._caller.cancelling() > 0

    def __repr__(self) -> str:
        return (
            f"<AgentRun agent_name={self.agent_name!r} user_id={self.context.user_id!r} "
            f"run_id={self.context.run_id!r}>"
        )

    async def think(self, text: str, *, step: int | None = None) -> None:
        """Report a reasoning step to the user (an ``agent_thinking`` event)."""
        await self._emitter.notify_agent_thinking(self.agent_name, text, step=step)

    async def use_tool(self, tool_name: str, fn: Callable[..., Any], /, **params: Any) -> Any:
        """Run ``fn(**params)`` (sync or async) between ``tool_executing`` and
        ``tool_completed`` events, and return its result. A failing tool reports its error
        in ``tool_completed`` and re-raises."""
        emitter = self._emitter
        await emitter.notify_tool_executing(self.agent_name, tool_name, params)
        started = time.perf_counter()
        try:
            result = fn(**params)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            await emitter.notify_tool_completed(
                self.agent_name, tool_name, None, duration_ms=_ms_since(started), error=str(exc)
            )
            raise
        await emitter.notify_tool_completed(
            self.agent_name, tool_name, result, duration_ms=_ms_since(started)
        )
        return result


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
