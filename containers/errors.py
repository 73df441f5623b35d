"""Errors raised while wiring engines into containers; all derive from ``EngineScopeError``."""

from __future__ import annotations

from enginescope.errors import EngineScopeError

__all__ = ["EngineContainerError", "UnsupportedBackendError"]


class EngineContainerError(EngineScopeError):
    """An ``EngineContainer`` could not build what was asked."""


class UnsupportedBackendError(EngineContainerError, ValueError):
    """``EngineSettings.backend`` names a backend this container cannot build."""

    def __init__(self, backend: str, component: str) -> None:
        self.field = "backend"
        self.backend = backend
        self.component = component
        super().__init__(
            f"EngineSettings.backend={backend!r} has no {component} in this container; "
            "set ENGINESCOPE_BACKEND=memory, or override the container's "
            f"{component} provider with your own."
        )
