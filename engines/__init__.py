"""enginescope.engines: isolated per-user execution engines, their factory and the bridge.

Pure asyncio and pydantic; imports no DI framework.
"""

from .agents import Agent, AgentFactory, AgentRegistry, AgentResult, AgentRun, UserAgents
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
    InvalidContextError,
    UserEngineLimitError,
)
from .factory import ExecutionEngineFactory
from .slots import InMemorySlotLedger, SlotLedger

__all__ = [
    "DEMO_AGENT_NAME",
    "EVENT_TYPES",
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
    "InMemorySlotLedger",
    "InvalidContextError",
    "InvalidSocketError",
    "InvalidWebSocketBridgeError",
    "SlotLedger",
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
    "reset_execution_engine_factory",
    "sanitize",
    "user_execution_engine",
    "validate_user_context",
]
