"""Errors raised while wiring engines into containers; all derive from ``EngineScopeError``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

from enginescope.errors import EngineScopeError

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = [
    "ContainerShutDownError",
    "EngineContainerError",
    "EngineContainerNotFoundError",
    "InvalidSettingsError",
    "UnsupportedBackendError",
]


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


class EngineContainerNotFoundError(EngineContainerError, TypeError):
    """A helper was given a container that neither is nor composes one engine container."""

    def __init__(self, caller: str, container: object, candidates: tuple[str, ...]) -> None:
        self.caller = caller
        self.container = container
        self.candidates = candidates
        kind = getattr(container, "__name__", None) or type(container).__name__
        if candidates:
            found = f"composes {len(candidates)} ({', '.join(candidates)}); pick one"
            hint = f"app_container.{candidates[0]}()"
        else:
            found = "has no websocket_bridge, engine_factory and user_engine"
            hint = "app_container.engines() for engines = providers.Container(EngineContainer)"
        super().__init__(
            f"{caller} needs an EngineContainer or a container that composes exactly one; "
            f"{kind} {found}. Pass the engine container, e.g. {hint}."
        )


class InvalidSettingsError(EngineContainerError, ValueError):
    """The value given as an engine container's ``settings`` is not valid; ``field`` names it."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(
            f"Invalid engine settings: {field!r} {reason}; fix it in what you pass as "
            "settings (an EngineSettings, a mapping or a Configuration option)."
        )

    @classmethod
    def from_validation(cls, error: ValidationError) -> Self:
        """The first problem pydantic found, with the field it concerns."""
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "settings"
        more = f" ({error.error_count() - 1} more)" if error.error_count() > 1 else ""
        return cls(field, f"is invalid: {first['msg']} (got {first.get('input')!r}){more}")

    @classmethod
    def not_settings(cls, value: object) -> Self:
        """Something that is neither ``EngineSettings`` nor a mapping."""
        hint = "; load the Configuration before starting" if value is None else ""
        return cls("settings", f"must be EngineSettings or a mapping, got {value!r}{hint}")


class ContainerShutDownError(EngineContainerError, RuntimeError):
    """A resource of an engine container was resolved after ``shutdown_resources()``."""

    def __init__(self, resource: str) -> None:
        self.resource = resource
        super().__init__(
            f"Cannot start {resource}: its container was shut down (shutdown_resources()) "
            "and a resolve does not start it again; call `await container.init_resources()` "
            "first (the app's lifespan does), then resolve."
        )
