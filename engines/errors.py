"""Errors raised by the engine domain. All derive from :class:`EngineScopeError`."""

from __future__ import annotations

from enginescope.errors import EngineScopeError

__all__ = [
    "AgentNotFoundError",
    "EngineBusyError",
    "EngineClosedError",
    "EngineScopeError",
    "ExecutionEngineFactoryError",
    "FactoryNotConfiguredError",
    "FactoryShutdownError",
    "FrameworkNotInstalledError",
    "InvalidContextError",
    "InvalidEventSettingError",
    "SlotLedgerUnavailableError",
    "UserEngineLimitError",
]


class InvalidContextError(EngineScopeError, ValueError):
    """A user context failed validation; ``field`` names the offending field."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(
            f"Invalid user context: {field!r} {reason}; build the context from the "
            "authenticated request's real identifiers."
        )


class ExecutionEngineFactoryError(EngineScopeError):
    """The execution engine factory could not do what was asked."""


class UserEngineLimitError(ExecutionEngineFactoryError):
    """A user already holds ``limit`` active engines."""

    def __init__(self, user_id: str, active: int, limit: int) -> None:
        self.user_id = user_id
        self.active = active
        self.limit = limit
        super().__init__(
            f"User {user_id!r} already has {active} active engines ({active}/{limit}); "
            "close one or raise max_engines_per_user."
        )


class FactoryShutdownError(ExecutionEngineFactoryError):
    """The factory has been shut down and accepts no new work."""

    def __init__(self, action: str = "create an engine") -> None:
        self.action = action
        super().__init__(
            f"Cannot {action}: the ExecutionEngineFactory has been shut down; "
            "configure or build a new factory."
        )


class FactoryNotConfiguredError(ExecutionEngineFactoryError, RuntimeError):
    """The module-level factory was used before it was configured."""

    def __init__(self) -> None:
        super().__init__(
            "No ExecutionEngineFactory is configured; call "
            "configure_execution_engine_factory(websocket_bridge) at startup."
        )


class AgentNotFoundError(EngineScopeError, LookupError):
    """No agent is registered under ``agent_name``."""

    def __init__(self, agent_name: str, known: tuple[str, ...] = ()) -> None:
        self.agent_name = agent_name
        self.known = known
        hint = f"registered agents: {', '.join(known)}" if known else "no agents are registered"
        super().__init__(
            f"Unknown agent {agent_name!r} ({hint}); register it with "
            "AgentRegistry.register(name, agent)."
        )


class EngineClosedError(EngineScopeError, RuntimeError):
    """The engine was cleaned up and cannot run agents any more."""

    def __init__(self, engine_id: str) -> None:
        self.engine_id = engine_id
        super().__init__(
            f"Engine {engine_id!r} is closed; create a new engine for this user context."
        )


class EngineBusyError(EngineScopeError, RuntimeError):
    """The engine already runs its maximum number of concurrent agent runs."""

    def __init__(self, engine_id: str, limit: int) -> None:
        self.engine_id = engine_id
        self.limit = limit
        super().__init__(
            f"Engine {engine_id!r} already runs {limit} agents ({limit}/{limit}); "
            "wait for one to finish or raise max_concurrent_runs."
        )


class SlotLedgerUnavailableError(ExecutionEngineFactoryError):
    """The shared slot ledger (Redis) could not be reached, so the engine was refused."""

    def __init__(self, user_id: str, url: str, reason: str) -> None:
        self.user_id = user_id
        self.url = url
        self.reason = reason
        super().__init__(
            f"Cannot admit an engine for user {user_id!r}: Redis is unreachable at {url} "
            f"({reason}). The engine was refused so the per-user limit still holds across "
            "replicas; check that redis-server is running and that ENGINESCOPE_REDIS_URL "
            "points at it, then retry (the ledger reconnects by itself)."
        )


class InvalidEventSettingError(EngineScopeError, ValueError):
    """An event setting (such as the text-delta coalescing) has a value it cannot take."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field = field
        self.value = value
        super().__init__(f"{field} must be {expected}, got {value!r}.")


class FrameworkNotInstalledError(EngineScopeError, ImportError):
    """An agent adapter was imported without the framework it adapts."""

    def __init__(self, framework: str, extra: str) -> None:
        self.framework = framework
        self.extra = extra
        super().__init__(
            f"The {framework} adapter needs {framework}, which is not installed; "
            f"install it with: pip install 'enginescope[{extra}]'",
            name=framework,
        )
