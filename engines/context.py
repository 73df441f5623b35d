"""The user execution context: who a piece of work belongs to, validated once."""

from __future__ import annotations

import copy
import json
import os
import re
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import partial
from itertools import repeat
from types import MappingProxyType
from typing import Annotated, Any, NamedTuple, Self, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetPydanticSchema,
    ValidationError,
    WithJsonSchema,
    field_serializer,
    field_validator,
)
from pydantic_core import core_schema

from ._lifecycle import check_positive
from .errors import InvalidContextError, InvalidSettingError

__all__ = [
    "DEFAULT_MAX_METADATA_BYTES",
    "DEFAULT_MAX_METADATA_DEPTH",
    "MAX_ID_LENGTH",
    "PLACEHOLDER_IDS",
    "RESERVED_METADATA_KEYS",
    "MetadataLimits",
    "UserExecutionContext",
    "check_identifier",
    "metadata_limits",
    "require_identifier",
    "set_metadata_limits",
    "validate_user_context",
]

MAX_ID_LENGTH = 256
PLACEHOLDER_IDS = frozenset(
    "none null nil nan undefined placeholder registry unknown n/a tbd todo dummy changeme".split()  # noqa: SIM905
)
RESERVED_METADATA_KEYS = frozenset({"user_id", "thread_id", "run_id", "request_id"})


_spare_request_ids: list[str] = []
_VERSION_4 = bytes(byte & 0x0F | 0x40 for byte in range(256))  # byte 6 of a uuid4
_RFC_4122_VARIANT = bytes(byte & 0x3F | 0x80 for byte in range(256))  # byte 8
os.register_at_fork(after_in_child=_spare_request_ids.clear)  # a forked child reads its own


def _new_request_id() -> str:
    """A fresh ``uuid4().hex``, made the way uuid4 makes it (16 bytes of ``os.urandom``, the
    version and variant bits set) but 64 ids at a time, in one system call, and without a
    ``UUID`` object per id."""
    try:
        return _spare_request_ids.pop()  # atomic: threads never get the same id
    except IndexError:
        block = bytearray(os.urandom(16 * 64))
        block[6::16] = block[6::16].translate(_VERSION_4)
        block[8::16] = block[8::16].translate(_RFC_4122_VARIANT)
        text = block.hex()
        _spare_request_ids.extend(text[start : start + 32] for start in range(32, len(text), 32))
        return text[:32]


def check_identifier(value: object) -> str:
    """Return ``value`` if it is a usable identifier, else raise ``ValueError`` saying why.

    The one identifier rule of the package: the context, the emitter, the bridges and the
    slot ledgers all accept exactly the ids it accepts. Refused: non-strings, empty or
    blank ids, ids over :data:`MAX_ID_LENGTH`, leading or trailing whitespace, anything
    that does not print as itself (control and format characters such as zero-width
    spaces, bidi overrides and a BOM, lone surrogates, private-use and unassigned code
    points, whitespace other than the ASCII space, letters that render blank) and the
    :data:`PLACEHOLDER_IDS`, compared after NFKC normalisation and case folding.
    """
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {type(value).__name__}")  # noqa: TRY004
    if len(value) > MAX_ID_LENGTH:
        raise ValueError(f"must be at most {MAX_ID_LENGTH} characters, got {len(value)}")
    if not value.strip():
        raise ValueError("must not be empty or blank")
    if not value.isprintable() or (not value.isascii() and _BLANK_LETTERS.search(value)):
        raise ValueError(_unprintable_reason(value))
    if value != value.strip():
        raise ValueError("must not have leading or trailing whitespace")
    if _comparable(value) in PLACEHOLDER_IDS:
        raise ValueError(f"is a placeholder value ({value!r}), not a real identifier")
    return value


# Letters that str.isprintable() accepts but that render as nothing.
_BLANK_LETTERS = re.compile("[\u115f\u1160\u3164\uffa0\u2800]")


def _comparable(value: str) -> str:
    """``value`` as placeholders are compared: NFKC-normalised and case-folded."""
    if value.isascii():
        return value.lower()
    return unicodedata.normalize("NFKC", value).casefold()


def _unprintable_reason(value: str) -> str:
    index, char = next(
        (i, ch) for i, ch in enumerate(value) if not ch.isprintable() or _BLANK_LETTERS.match(ch)
    )
    code = f"U+{ord(char):04X}"
    category = unicodedata.category(char)
    if category == "Cc":
        return f"must not contain control characters ({code} at index {index})"
    kind = "a lone surrogate" if category == "Cs" else unicodedata.name(char, category)
    return (
        f"must not contain invisible or deceptive characters ({code}, {kind}, at index "
        f"{index}); use printable characters only"
    )


def _identifier_schema(_source: object, _handler: object) -> core_schema.CoreSchema:
    """An id field's schema: an id of visible ASCII characters (no spaces) with one that no
    placeholder has (a character other than a letter or ``/``) is checked by pydantic-core
    alone; any other value goes on to :func:`check_identifier`, which accepts it or says why
    not."""
    quick = core_schema.str_schema(
        strict=True,
        max_length=MAX_ID_LENGTH,
        pattern=r"^[!-~]*[!-~--A-Za-z/][!-~]*$",  # [a--b]: the characters of a not in b
        regex_engine="rust-regex",  # where $ is the end of the text, never before a newline
    )
    full = core_schema.no_info_plain_validator_function(check_identifier)
    return core_schema.union_schema([quick, full], mode="left_to_right")


_Identifier = Annotated[
    str, GetPydanticSchema(_identifier_schema), WithJsonSchema({"type": "string"})
]


def require_identifier(field: str, value: object) -> str:
    """:func:`check_identifier` for ``field``, raising :class:`InvalidContextError`."""
    try:
        return check_identifier(value)
    except ValueError as exc:
        raise InvalidContextError(field, str(exc)) from None


class MetadataLimits(NamedTuple):
    """How much metadata a context accepts: JSON bytes and nesting levels."""

    max_bytes: int
    max_depth: int


DEFAULT_MAX_METADATA_BYTES = 64 * 1024
DEFAULT_MAX_METADATA_DEPTH = 32
_limits = MetadataLimits(DEFAULT_MAX_METADATA_BYTES, DEFAULT_MAX_METADATA_DEPTH)


def metadata_limits() -> MetadataLimits:
    """The limits every new context's ``metadata`` is checked against."""
    return _limits


def set_metadata_limits(
    *, max_bytes: int | None = None, max_depth: int | None = None
) -> MetadataLimits:
    """Change the metadata limits of every context built from now on; return the old ones.

    ``max_bytes`` bounds the metadata's compact JSON form (default
    :data:`DEFAULT_MAX_METADATA_BYTES`, 64 KiB), ``max_depth`` its nesting (default
    :data:`DEFAULT_MAX_METADATA_DEPTH`); ``None`` keeps a limit as it is.
    """
    global _limits  # noqa: PLW0603 - one process-wide knob, read by the model's validator
    previous = _limits
    _limits = MetadataLimits(
        _positive_int("max_bytes", previous.max_bytes if max_bytes is None else max_bytes),
        _positive_int("max_depth", previous.max_depth if max_depth is None else max_depth),
    )
    return previous


def _positive_int(field: str, value: int) -> int:
    return check_positive(field, value, integer=True, error=_limit_error)


def _limit_error(field: str, value: object, expected: str) -> InvalidSettingError:
    return InvalidSettingError(field, value, expected, "set_metadata_limits")


_JSON_SCALARS = (str, int, float, bool, type(None))


class _MetadataCopier:
    """Copies metadata in one walk, refusing it as soon as it is too deep, cyclic, not
    JSON data, or too large (counting a lower bound of its compact JSON length), so 50 MB
    are refused after reading 64 KiB of them."""

    __slots__ = ("_on_path", "limits", "remaining")

    def __init__(self, limits: MetadataLimits) -> None:
        self.limits = limits
        self.remaining = limits.max_bytes
        self._on_path: set[int] = set()

    def spend(self, size: int) -> None:
        self.remaining -= size
        if self.remaining < 0:
            raise ValueError(
                f"must be at most {self.limits.max_bytes} bytes as JSON, got more; keep "
                "large data out of the context (or raise the limit with set_metadata_limits)"
            )

    def copy(self, value: object, depth: int) -> object:
        if isinstance(value, str):
            self.spend(len(value) + 2)
            return value
        if isinstance(value, _JSON_SCALARS):
            self.spend(1)  # a number, a boolean, null: at least one character
            return value
        if isinstance(value, dict | list | tuple):
            return self._container(value, depth + 1)
        raise ValueError(f"must be JSON-serialisable ({type(value).__name__} is not)")

    def _container(self, value: dict[Any, Any] | list[Any] | tuple[Any, ...], depth: int) -> object:
        if depth > self.limits.max_depth:
            raise ValueError(f"must be nested at most {self.limits.max_depth} levels deep")
        if id(value) in self._on_path:
            raise ValueError("must not contain itself")
        self._on_path.add(id(value))
        self.spend(1 + len(value))  # brackets and commas
        copied = self._items(value, depth) if isinstance(value, dict) else self._list(value, depth)
        self._on_path.discard(id(value))
        return tuple(copied) if isinstance(value, tuple) else copied

    def _items(self, value: dict[Any, Any], depth: int) -> dict[Any, Any]:
        copied = {}
        for key, item in value.items():
            if not isinstance(key, _JSON_SCALARS):
                reason = f"keys must be strings or numbers, got {type(key).__name__}"
                raise ValueError(reason)  # noqa: TRY004 - becomes an InvalidContextError
            self.spend(len(key) + 3 if isinstance(key, str) else 3)  # quotes and colon
            copied[key] = self.copy(item, depth)
        return copied

    def _list(self, value: list[Any] | tuple[Any, ...], depth: int) -> list[Any]:
        return [self.copy(item, depth) for item in value]


def _copy_metadata(value: Mapping[Any, Any], limits: MetadataLimits) -> dict[Any, Any]:
    try:
        copied = _MetadataCopier(limits)._container(dict(value), 1)  # the top is level 1
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - a hostile mapping: not data
        raise ValueError(f"must be JSON-serialisable ({type(exc).__name__})") from None
    return cast("dict[Any, Any]", copied)  # a dict copies to a dict


def _check_metadata(value: object) -> Mapping[str, Any]:
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        raise ValueError(f"must be a mapping, got {type(value).__name__}")  # noqa: TRY004
    limits = _limits
    bad_key = next((key for key in value if not isinstance(key, str)), None)
    if bad_key is not None:
        raise ValueError(f"keys must be strings, got {bad_key!r}")
    copied = _copy_metadata(value, limits)
    reserved = sorted(RESERVED_METADATA_KEYS.intersection(copied))
    if reserved:
        raise ValueError(f"must not set reserved keys {reserved}")
    try:
        size = len(json.dumps(copied, allow_nan=False, separators=(",", ":")))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"must be JSON-serialisable ({exc})") from None
    if size > limits.max_bytes:
        raise ValueError(
            f"must be at most {limits.max_bytes} bytes as JSON, got {size}; keep large data "
            "out of the context (or raise the limit with set_metadata_limits)"
        )
    return MappingProxyType(copied)


def _to_context_error(exc: ValidationError) -> InvalidContextError:
    errors = exc.errors(include_url=False)
    where = errors[0]["loc"][:1]
    # An id refused by both checks of _identifier_schema has two errors; the last says why.
    first = [error for error in errors if error["loc"][:1] == where][-1]
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, InvalidContextError):  # raised by __init__ inside model_validate
        return cause
    field = ".".join(str(part) for part in where) or "context"
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

    user_id: _Identifier
    thread_id: _Identifier
    run_id: _Identifier
    request_id: _Identifier = Field(default_factory=_new_request_id)
    websocket_client_id: _Identifier | None = None
    created_at: datetime = Field(default_factory=partial(datetime.now, UTC))
    # Contexts without metadata share one empty read-only mapping, handed out by C code.
    metadata: Mapping[str, Any] = Field(default_factory=repeat(MappingProxyType({})).__next__)

    def __init__(self, **data: Any) -> None:
        try:  # what BaseModel.__init__ does, without a second frame and a second **data
            self.__pydantic_validator__.validate_python(data, self_instance=self)
        except ValidationError as exc:
            raise _to_context_error(exc) from None

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Self:
        """Build a context from a mapping, raising :class:`InvalidContextError` on bad input."""
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as exc:
            raise _to_context_error(exc) from None

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, **kwargs: Any) -> Self:
        """Build a context from JSON, raising :class:`InvalidContextError` on bad input."""
        try:
            return super().model_validate_json(json_data, **kwargs)
        except ValidationError as exc:
            raise _to_context_error(exc) from None

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
