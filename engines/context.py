"""The user execution context: who a piece of work belongs to, validated once."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
)

from .errors import InvalidContextError

__all__ = [
    "MAX_ID_LENGTH",
    "PLACEHOLDER_IDS",
    "RESERVED_METADATA_KEYS",
    "UserExecutionContext",
    "check_identifier",
    "require_identifier",
    "validate_user_context",
]

MAX_ID_LENGTH = 256
PLACEHOLDER_IDS = frozenset(
    {
        "none",
        "null",
        "nil",
        "nan",
        "undefined",
        "placeholder",
        "registry",
        "unknown",
        "n/a",
        "tbd",
        "todo",
        "dummy",
        "changeme",
    }
)
RESERVED_METADATA_KEYS = frozenset({"user_id", "thread_id", "run_id", "request_id"})
_ID_FIELDS = ("user_id", "thread_id", "run_id", "request_id", "websocket_client_id")


def _new_request_id() -> str:
    return uuid.uuid4().hex


def _utcnow() -> datetime:
    return datetime.now(UTC)


def check_identifier(value: object) -> str:
    """Return ``value`` if it is a usable identifier, else raise ``ValueError`` saying why.

    The one identifier rule of the package: the context, the emitter, the bridges and the
    slot ledgers all accept exactly the ids it accepts.
    """
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {type(value).__name__}")  # noqa: TRY004
    if not value.strip():
        raise ValueError("must not be empty or blank")
    if len(value) > MAX_ID_LENGTH:
        raise ValueError(f"must be at most {MAX_ID_LENGTH} characters, got {len(value)}")
    if any(ord(ch) < 32 or 127 <= ord(ch) < 160 for ch in value):
        raise ValueError("must not contain control characters")
    if value != value.strip():
        raise ValueError("must not have leading or trailing whitespace")
    if value.lower() in PLACEHOLDER_IDS:
        raise ValueError(f"is a placeholder value ({value!r}), not a real identifier")
    return value


def require_identifier(field: str, value: object) -> str:
    """:func:`check_identifier` for ``field``, raising :class:`InvalidContextError`."""
    try:
        return check_identifier(value)
    except ValueError as exc:
        raise InvalidContextError(field, str(exc)) from None


def _check_metadata(value: object) -> Mapping[str, Any]:
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        raise ValueError(f"must be a mapping, got {type(value).__name__}")  # noqa: TRY004
    try:
        copied = copy.deepcopy(dict(value))
    except Exception as exc:  # noqa: BLE001 - a lock, a generator, a socket: not data
        raise ValueError(f"must be JSON-serialisable ({type(exc).__name__}: {exc})") from None
    bad_keys = [key for key in copied if not isinstance(key, str)]
    if bad_keys:
        raise ValueError(f"keys must be strings, got {bad_keys[0]!r}")
    reserved = sorted(RESERVED_METADATA_KEYS.intersection(copied))
    if reserved:
        raise ValueError(f"must not set reserved keys {reserved}")
    try:
        json.dumps(copied, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"must be JSON-serialisable ({exc})") from None
    return MappingProxyType(copied)


def _to_context_error(exc: ValidationError) -> InvalidContextError:
    first = exc.errors(include_url=False)[0]
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, InvalidContextError):  # raised by __init__ inside model_validate
        return cause
    field = ".".join(str(part) for part in first["loc"]) or "context"
    reason = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        reason = "is not a field of UserExecutionContext"
    elif first["type"] == "missing":
        reason = "is required"
    return InvalidContextError(field, reason)


class UserExecutionContext(BaseModel):
    """Immutable identity of one unit of user work: the user, the thread and the run.

    Every id is validated on construction; a bad one raises :class:`InvalidContextError`
    naming the field. ``metadata`` is deep-copied and exposed read-only.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    user_id: str
    thread_id: str
    run_id: str
    request_id: str = Field(default_factory=_new_request_id)
    websocket_client_id: str | None = None
    created_at: datetime = Field(default_factory=_utcnow)
    metadata: Mapping[str, Any] = Field(default_factory=lambda: MappingProxyType({}))

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _to_context_error(exc) from None

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Self:
        """Build a context from a mapping, raising :class:`InvalidContextError` on bad input."""
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as exc:
            raise _to_context_error(exc) from None

    @field_validator("user_id", "thread_id", "run_id", "request_id", mode="before")
    @classmethod
    def _validate_id(cls, value: object) -> str:
        return check_identifier(value)

    @field_validator("websocket_client_id", mode="before")
    @classmethod
    def _validate_optional_id(cls, value: object) -> str | None:
        return None if value is None else check_identifier(value)

    @field_validator("created_at", mode="after")
    @classmethod
    def _validate_created_at(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must be timezone-aware")
        return value.astimezone(UTC)

    @field_validator("metadata", mode="plain")
    @classmethod
    def _validate_metadata(cls, value: object) -> Mapping[str, Any]:
        return _check_metadata(value)

    @field_serializer("metadata")
    def _serialize_metadata(self, value: Mapping[str, Any]) -> dict[str, Any]:
        return copy.deepcopy(dict(value))

    def __hash__(self) -> int:
        return hash((self.user_id, self.thread_id, self.run_id, self.request_id))

    def __repr__(self) -> str:
        return (
            f"<UserExecutionContext user_id={self.user_id!r} thread_id={self.thread_id!r} "
            f"run_id={self.run_id!r}>"
        )

    @property
    def key(self) -> tuple[str, str, str]:
        """``(user_id, thread_id, run_id)``: the identity events are routed by."""
        return (self.user_id, self.thread_id, self.run_id)


def validate_user_context(obj: object) -> UserExecutionContext:
    """Return ``obj`` as a valid :class:`UserExecutionContext`.

    A context is returned unchanged; a mapping is validated into a new context; anything
    else raises :class:`InvalidContextError`.
    """
    if isinstance(obj, UserExecutionContext):
        return obj
    if isinstance(obj, Mapping):
        bad = next((key for key in obj if not isinstance(key, str)), None)
        if bad is not None:
            raise InvalidContextError("context", f"keys must be strings, got {bad!r}")
        return UserExecutionContext.model_validate(dict(obj))
    raise InvalidContextError(
        "context",
        f"must be a UserExecutionContext or a mapping, got {type(obj).__name__}",
    )
