"""enginescope.engines: isolated per-user execution engines, their factory and the bridge.

Pure asyncio and pydantic; imports no DI framework. The Redis backend
(``RedisSlotLedger``, ``RedisWebSocketBridge``) is imported on first use and needs the
``redis`` extra.
"""

import importlib
from typing import TYPE_CHECKING

from .agents import (
    STOP_REASONS,
    Agent,
    AgentFactory,
    AgentRegistry,
    AgentResult,
    AgentRun,
    UserAgents,
    inline_tool,
)
from .bridge import (
    TRY_AGAIN_LATER,
    AgentWebSocketBridge,
    Connection,
    ConnectionBridge,
    ResumableBridge,
    SocketLike,
    WebSocketBridge,
)
from .compat import (
    configure_execution_engine_factory,
    create_request_scoped_engine,
    get_execution_engine_factory,
    reset_execution_engine_factory,
    user_execution_engine,
)
from .context import (
    UserExecutionContext,
    check_identifier,
    metadata_limits,
    set_metadata_limits,
    validate_user_context,
)
from .emitter import EVENT_TYPES, UserWebSocketEmitter
from .engine import UserExecutionEngine
from .errors import (
    AgentNotFoundError,
    BridgeClosedError,
    BridgeConfigError,
    ConnectionLimitError,
    EngineBusyError,
    EngineClosedError,
    EngineScopeError,
    ExecutionEngineFactoryError,
    FactoryBridgeError,
    FactoryCapacityError,
    FactoryConfigError,
    FactoryNotConfiguredError,
    FactoryShutdownError,
    FrameworkNotInstalledError,
    InvalidContextError,
    InvalidEventSettingError,
    InvalidResumeTokenError,
    InvalidSettingError,
    InvalidSocketError,
    InvalidTimeoutError,
    InvalidTimeoutTypeError,
    InvalidWebSocketBridgeError,
    SlotLedgerUnavailableError,
    UserEngineLimitError,
    WebSocketBridgeError,
)
from .factory import ExecutionEngineFactory
from .sanitize import redact_text, sanitize
from .slots import ImmediateSlotLedger, InMemorySlotLedger, SlotLedger

__all__ = [
    "EVENT_TYPES",
    "STOP_REASONS",
    "TRY_AGAIN_LATER",
    "Agent",
    "AgentFactory",
    "AgentNotFoundError",
    "AgentRegistry",
    "AgentResult",
    "AgentRun",
    "AgentWebSocketBridge",
    "BridgeClosedError",
    "BridgeConfigError",
    "Connection",
    "ConnectionBridge",
    "ConnectionLimitError",
    "EngineBusyError",
    "EngineClosedError",
    "EngineScopeError",
    "ExecutionEngineFactory",
    "ExecutionEngineFactoryError",
    "FactoryBridgeError",
    "FactoryCapacityError",
    "FactoryConfigError",
    "FactoryNotConfiguredError",
    "FactoryShutdownError",
    "FrameworkNotInstalledError",
    "ImmediateSlotLedger",
    "InMemorySlotLedger",
    "InvalidContextError",
    "InvalidEventSettingError",
    "InvalidResumeTokenError",
    "InvalidSettingError",
    "InvalidSocketError",
    "InvalidTimeoutError",
    "InvalidTimeoutTypeError",
    "InvalidWebSocketBridgeError",
    "RedisSlotLedger",
    "RedisWebSocketBridge",
    "ResumableBridge",
    "SlotLedger",
    "SlotLedgerUnavailableError",
    "SocketLike",
    "UserAgents",
    "UserEngineLimitError",
    "UserExecutionContext",
    "UserExecutionEngine",
    "UserWebSocketEmitter",
    "WebSocketBridge",
    "WebSocketBridgeError",
    "check_identifier",
    "configure_execution_engine_factory",
    "create_request_scoped_engine",
    "get_execution_engine_factory",
    "inline_tool",
    "metadata_limits",
    "redact_text",
    "reset_execution_engine_factory",
    "sanitize",
    "set_metadata_limits",
    "user_execution_engine",
    "validate_user_context",
]

_REDIS_EXPORTS = {
    "RedisSlotLedger": ".redis_slots",
    "RedisWebSocketBridge": ".redis_bridge",
}

if TYPE_CHECKING:
    from .redis_bridge import RedisWebSocketBridge
    from .redis_slots import RedisSlotLedger


def __getattr__(name: str) -> object:
    """Import the Redis backend's names only when they are used."""
    module = _REDIS_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
