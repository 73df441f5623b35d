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
    BridgeClosedError,
    BridgeConfigError,
    Connection,
    InvalidSocketError,
    InvalidWebSocketBridgeError,
    SocketLike,
    WebSocketBridge,
    WebSocketBridgeError,
)
from .compat import (
    configure_execution_engine_factory,
    create_request_scoped_engine,
    get_execution_engine_factory,
    reset_execution_engine_factory,
    user_execution_engine,
)
from .context import UserExecutionContext, validate_user_context
from .demo import DEMO_AGENT_NAME, demo_agent
from .emitter import EVENT_TYPES, UserWebSocketEmitter, sanitize
from .engine import UserExecutionEngine
from .errors import (
    AgentNotFoundError,
    EngineBusyError,
    EngineClosedError,
    EngineScopeError,
    ExecutionEngineFactoryError,
    FactoryNotConfiguredError,
    FactoryShutdownError,
    FrameworkNotInstalledError,
    InvalidContextError,
    InvalidEventSettingError,
    SlotLedgerUnavailableError,
    UserEngineLimitError,
)
from .factory import ExecutionEngineFactory
from .slots import InMemorySlotLedger, SlotLedger

__all__ = [
    "DEMO_AGENT_NAME",
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
    "EngineBusyError",
    "EngineClosedError",
    "EngineScopeError",
    "ExecutionEngineFactory",
    "ExecutionEngineFactoryError",
    "FactoryNotConfiguredError",
    "FactoryShutdownError",
    "FrameworkNotInstalledError",
    "InMemorySlotLedger",
    "InvalidContextError",
    "InvalidEventSettingError",
    "InvalidResumeTokenError",
    "InvalidSocketError",
    "InvalidWebSocketBridgeError",
    "RedisSlotLedger",
    "RedisWebSocketBridge",
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
    "configure_execution_engine_factory",
    "create_request_scoped_engine",
    "demo_agent",
    "get_execution_engine_factory",
    "inline_tool",
    "reset_execution_engine_factory",
    "sanitize",
    "user_execution_engine",
    "validate_user_context",
]

_REDIS_EXPORTS = {
    "InvalidResumeTokenError": ".redis_bridge",
    "RedisSlotLedger": ".redis_slots",
    "RedisWebSocketBridge": ".redis_bridge",
}

if TYPE_CHECKING:
    from .redis_bridge import InvalidResumeTokenError, RedisWebSocketBridge
    from .redis_slots import RedisSlotLedger


def __getattr__(name: str) -> object:
    """Import the Redis backend's names only when they are used."""
    module = _REDIS_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)
