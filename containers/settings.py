"""``EngineSettings``: every engine, bridge and backend knob, read from ``ENGINESCOPE_*``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from enginescope.engines.context import DEFAULT_MAX_METADATA_BYTES, DEFAULT_MAX_METADATA_DEPTH
from enginescope.engines.engine import DEFAULT_MAX_CONCURRENT_RUNS
from enginescope.engines.factory import DEFAULT_MAX_ENGINES
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import InvalidSettingsError

__all__ = ["Backend", "EngineSettings", "as_engine_settings"]

Backend = Literal["memory", "redis"]


class EngineSettings(BaseSettings):
    """The settings of an :class:`~enginescope.containers.EngineContainer`.

    Each field is read from the environment variable ``ENGINESCOPE_<FIELD>`` (case
    insensitive), e.g. ``ENGINESCOPE_MAX_ENGINES_PER_USER=4``. A zero or negative limit or
    timeout fails at startup with a ``pydantic.ValidationError`` that names the setting.
    Instances are frozen: build a new one (``settings.model_copy(update=...)``) to change one.
    """

    model_config = SettingsConfigDict(env_prefix="ENGINESCOPE_", frozen=True)

    max_engines_per_user: int = Field(default=2, gt=0)
    max_engines: int | None = Field(default=DEFAULT_MAX_ENGINES, gt=0)
    max_metadata_bytes: int = Field(default=DEFAULT_MAX_METADATA_BYTES, gt=0)
    max_metadata_depth: int = Field(default=DEFAULT_MAX_METADATA_DEPTH, gt=0)
    engine_timeout_seconds: float = Field(default=300, gt=0)
    cleanup_interval_seconds: float = Field(default=60, gt=0)
    shutdown_timeout_seconds: float = Field(default=10, gt=0)
    agent_timeout_seconds: float | None = Field(default=None, gt=0)
    max_concurrent_runs: int = Field(default=DEFAULT_MAX_CONCURRENT_RUNS, gt=0)

    bridge_queue_size: int = Field(default=256, gt=0)
    bridge_send_timeout_seconds: float = Field(default=10, gt=0)
    bridge_max_connections_per_user: int = Field(default=16, gt=0)

    backend: Backend = "memory"
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", min_length=1, repr=False)
    redis_lease_ttl_seconds: float = Field(default=30, gt=0)
    redis_stream_maxlen: int = Field(default=1000, gt=0)
    redis_replay_window_seconds: float = Field(default=60, gt=0)
    redis_key_prefix: str = Field(default="enginescope", min_length=1)
    redis_max_connections: int = Field(default=50, gt=0)
    redis_pool_timeout_seconds: float = Field(default=5, gt=0)
    redis_cluster: bool = False

    def factory_options(self) -> dict[str, Any]:
        """The keyword arguments of ``ExecutionEngineFactory`` these settings fix."""
        return {
            "max_engines_per_user": self.max_engines_per_user,
            "max_engines": self.max_engines,
            "engine_timeout_seconds": self.engine_timeout_seconds,
            "cleanup_interval_seconds": self.cleanup_interval_seconds,
            "shutdown_timeout_seconds": self.shutdown_timeout_seconds,
            "agent_timeout_seconds": self.agent_timeout_seconds,
            "max_concurrent_runs": self.max_concurrent_runs,
        }

    def redis_options(self) -> dict[str, Any]:
        """The keyword arguments the Redis slot ledger and bridge share."""
        return {
            "key_prefix": self.redis_key_prefix,
            "max_connections": self.redis_max_connections,
            "pool_timeout_seconds": self.redis_pool_timeout_seconds,
            "cluster": self.redis_cluster,
        }

    def bridge_options(self) -> dict[str, Any]:
        """The keyword arguments of ``AgentWebSocketBridge`` these settings fix."""
        return {
            "queue_size": self.bridge_queue_size,
            "send_timeout_seconds": self.bridge_send_timeout_seconds,
            "max_connections_per_user": self.bridge_max_connections_per_user,
        }


def as_engine_settings(value: object) -> EngineSettings:
    """``value`` as :class:`EngineSettings`: an instance as it is, a mapping validated into one.

    The mapping is what a ``Configuration`` option gives
    (``providers.Container(EngineContainer, settings=config.engines)``); strings are
    converted as from the environment, and ``ENGINESCOPE_*`` variables fill the fields it
    leaves out. A bad or unknown field raises
    :class:`~enginescope.containers.InvalidSettingsError` naming it.
    """
    if isinstance(value, EngineSettings):
        return value
    if not isinstance(value, Mapping):
        raise InvalidSettingsError.not_settings(value)
    try:
        return EngineSettings(**{str(key): item for key, item in value.items()})
    except ValidationError as error:
        raise InvalidSettingsError.from_validation(error) from None
