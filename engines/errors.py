"""Errors raised by the engine domain. All derive from :class:`EngineScopeError`."""

from __future__ import annotations

from enginescope.errors import EngineScopeError

__all__ = [
    "AgentNotFoundError",
    "BridgeClosedError",
    "BridgeConfigError",
    "ConnectionLimitError",
    "EngineBusyError",
    "EngineClosedError",
    "EngineScopeError",
    "ExecutionEngineFactoryError",
    "FactoryBridgeError",
    "FactoryCapacityError",
    "FactoryConfigError",
    "FactoryNotConfiguredError",
    "FactoryShutdownError",
    "FrameworkNotInstalledError",
    "InvalidContextError",
    "InvalidEventSettingError",
    "InvalidResumeTokenError",
    "InvalidSettingError",
    "InvalidSocketError",
    "InvalidTimeoutError",
    "InvalidTimeoutTypeError",
    "InvalidWebSocketBridgeError",
    "SlotLedgerUnavailableError",
    "UserEngineLimitError",
    "WebSocketBridgeError",
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


class InvalidSettingError(EngineScopeError, ValueError):
    """A setting of a component is out of range; ``field`` names it."""

    def __init__(self, field: str, value: object, expected: str, owner: str = "") -> None:
        self.field = field
        self.value = value
        self.expected = expected
        where = f"{owner} " if owner else ""
        super().__init__(f"{where}{field} must be {expected}, got {value!r}; pass {field} > 0.")


class InvalidTimeoutError(InvalidSettingError):
    """A ``timeout`` argument is not a positive number of seconds, ``inf`` or ``None``."""

    def __init__(self, value: object, owner: str = "execute_agent()") -> None:
        expected = "a positive number of seconds, inf (no deadline) or None"
        InvalidSettingError.__init__(self, "timeout", value, expected, owner)


class InvalidTimeoutTypeError(InvalidTimeoutError, TypeError):
    """A ``timeout`` argument is not a real number at all (a string, a bool, a complex)."""


class ExecutionEngineFactoryError(EngineScopeError):
    """The execution engine factory could not do what was asked."""


class FactoryConfigError(ExecutionEngineFactoryError, InvalidSettingError):
    """An :class:`ExecutionEngineFactory` setting is out of range."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        InvalidSettingError.__init__(self, field, value, expected, "ExecutionEngineFactory")


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


class FactoryCapacityError(ExecutionEngineFactoryError, RuntimeError):
    """The factory already holds ``limit`` live engines, across all users."""

    def __init__(self, active: int, limit: int) -> None:
        self.active = active
        self.limit = limit
        super().__init__(
            f"The ExecutionEngineFactory already holds {active} live engines ({active}/{limit}); "
            "retry later, or raise max_engines if the server can carry more."
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


class WebSocketBridgeError(EngineScopeError):
    """A WebSocket bridge could not do what was asked."""


class BridgeConfigError(WebSocketBridgeError, InvalidSettingError):
    """A bridge setting is out of range; ``field`` names it."""

    def __init__(
        self,
        field: str,
        value: object,
        expected: str = "a positive number",
        owner: str = "AgentWebSocketBridge",
    ) -> None:
        InvalidSettingError.__init__(self, field, value, expected, owner)


class BridgeClosedError(WebSocketBridgeError, RuntimeError):
    """The bridge was closed and accepts no new connections."""

    def __init__(self) -> None:
        super().__init__(
            "Cannot register a connection: the bridge is closed; "
            "build a new bridge (or register before shutdown)."
        )


class ConnectionLimitError(WebSocketBridgeError, RuntimeError):
    """A user already holds ``limit`` open connections on this bridge."""

    def __init__(self, user_id: str, limit: int) -> None:
        self.user_id = user_id
        self.limit = limit
        super().__init__(
            f"User {user_id!r} already has {limit} open connections ({limit}/{limit}); "
            "close one or raise max_connections_per_user."
        )


class InvalidSocketError(WebSocketBridgeError, TypeError):
    """The object given as a socket has no ``send_json`` method."""

    def __init__(self, socket: object) -> None:
        self.socket = socket
        super().__init__(
            f"Cannot register {type(socket).__name__} as a socket: it has no "
            "'async send_json(data)' method; pass a Starlette WebSocket or a SocketLike."
        )


class InvalidWebSocketBridgeError(WebSocketBridgeError, TypeError):
    """A ``websocket_bridge`` argument is missing or has no ``send_to_user`` method."""

    def __init__(self, bridge: object, field: str = "websocket_bridge") -> None:
        self.field = field
        self.bridge = bridge
        what = "is missing (None)" if bridge is None else f"{type(bridge).__name__} has no"
        super().__init__(
            f"Invalid {field!r}: {what} 'async send_to_user(user_id, event)' method; "
            "pass an AgentWebSocketBridge or another WebSocketBridge."
        )


class InvalidResumeTokenError(WebSocketBridgeError, ValueError):
    """A ``resume_from`` value is malformed (or the bridge cannot resume)."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field = field
        self.value = value
        super().__init__(
            f"Invalid {field}={value!r}: expected {expected}; pass the value from the last "
            "event the client received, or nothing to receive only new events."
        )


class FactoryBridgeError(ExecutionEngineFactoryError, InvalidWebSocketBridgeError):
    """The factory was given no usable ``websocket_bridge``."""


class InvalidEventSettingError(InvalidSettingError):
    """An emitter setting (the text-delta coalescing) is out of range; ``field`` names it."""

    def __init__(self, field: str, value: object, expected: str) -> None:
        self.field = field
        self.value = value
        self.expected = expected
        EngineScopeError.__init__(
            self, f"UserWebSocketEmitter {field} must be {expected}, got {value!r}."
        )


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
