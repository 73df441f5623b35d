"""Input hygiene for events: JSON-ready, bounded copies with secrets redacted.

:func:`sanitize` is what the emitter applies to every tool parameter, tool result and step;
apps may call it on anything they send to a client themselves.
"""

from __future__ import annotations

import math
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields, is_dataclass
from datetime import date, time, timedelta
from decimal import Decimal
from enum import Enum
from fractions import Fraction
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from itertools import islice
from pathlib import PurePath
from types import ModuleType
from typing import Any

from pydantic import BaseModel, SecretBytes, SecretStr

from ._redact import (
    REDACTED,
    SECRET_KEY_PARTS,
    SECRET_KEY_WORDS,
    TOKEN_COUNT_KEYS,
    looks_secret,
    redact_credentials,
)

__all__ = [
    "CYCLE",
    "MAX_DEPTH",
    "REDACTED",
    "SECRET_KEY_PARTS",
    "SECRET_KEY_WORDS",
    "TOKEN_COUNT_KEYS",
    "looks_secret",
    "redact_text",
    "sanitize",
    "truncate_text",
]

MAX_DEPTH = "[MAX DEPTH]"
CYCLE = "[CYCLE]"
UNSANITISABLE = "[UNSANITISABLE]"
_MAX_INT_BITS = 1024  # larger ints are not JSON a client can parse (and may not stringify)
_SEQUENCES = (list, tuple, set, frozenset, deque)
_SCALARS = frozenset({str, int, float, bool, type(None)})  # exact types, not subclasses
# Values whose str() is their value: sent as (redacted) text.
_TEXT_LIKE = (
    uuid.UUID,
    Decimal,
    Fraction,
    complex,
    PurePath,
    IPv4Address,
    IPv6Address,
    IPv4Network,
    IPv6Network,
)
# A credential that starts inside the part of a text that is kept is seen whole.
_REDACTION_MARGIN = 1024


def _valid_unicode(text: str) -> str:
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates cannot be sent as UTF-8 text frames
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def _cut(text: str, limit: int, dropped: int = 0) -> str:
    limit = max(limit, 0)
    if len(text) > limit or dropped:
        kept = text[:limit]
        text = f"{kept}…[truncated {len(text) - len(kept) + dropped} chars]"
    return text if text.isascii() else _valid_unicode(text)


def truncate_text(text: str, limit: int = 2000) -> str:
    """Return ``text`` cut to ``limit`` characters plus a marker saying how much was cut."""
    return _cut(text, limit)


def redact_text(text: str, limit: int | None = None) -> str:
    """Return ``text`` with every credential-shaped value replaced by ``"[REDACTED]"``.

    Redacted: bearer and basic credentials (``Bearer [REDACTED]``), well-known API keys
    (``sk-...``, ``ghp_...``, ``xoxb-...``, ``AKIA...``, ``AIza...``), JWTs, the password
    of a URL (``postgres://user:[REDACTED]@host``), the value after a key that looks
    secret (``password=...``, ``"api_key": "..."``, ``Authorization: ...``) and private
    key blocks. With ``limit``, the result is also cut as by :func:`truncate_text`, and
    only the part that is kept is scanned. A text without any cue of these shapes costs a
    few substring tests. This is what the emitter applies to every free-text field.
    """
    if limit is None:
        return _valid_unicode(redact_credentials(text))
    if len(text) <= limit + _REDACTION_MARGIN:
        return _cut(redact_credentials(text), limit)
    head = text[: max(limit, 0) + _REDACTION_MARGIN]
    return _cut(redact_credentials(head), limit, len(text) - len(head))


def _unrepresentable(value: object) -> str:
    try:
        return f"<unrepresentable {type(value).__name__}>"
    except Exception:  # noqa: BLE001 - even the type name can be hostile
        return "<unrepresentable>"


def _int(value: int) -> int | str:
    value = int(value)
    if value.bit_length() > _MAX_INT_BITS:
        return f"<int of {value.bit_length()} bits>"
    return value


def _float(value: float) -> float | str:
    value = float(value)
    return value if math.isfinite(value) else repr(value)


def _is_named_tuple(value: tuple[Any, ...]) -> bool:
    return type(value) is not tuple and isinstance(getattr(type(value), "_fields", None), tuple)


def _fields_of(value: object) -> dict[str, Any] | None:
    """The fields of a record, by name: a pydantic model's, a dataclass's, an attrs class's,
    or an object's public instance attributes (``vars()`` without ``_`` names, so an ORM
    object's loaded columns without its instance state; nothing is loaded lazily).
    ``None`` for anything without fields."""
    if isinstance(value, BaseModel):
        return dict(value)
    if is_dataclass(value) and not isinstance(value, type):
        return {field.name: getattr(value, field.name) for field in fields(value)}
    attributes = getattr(type(value), "__attrs_attrs__", None)
    if attributes is not None:
        return {attribute.name: getattr(value, attribute.name) for attribute in attributes}
    if callable(value) or isinstance(value, ModuleType):
        return None
    state = getattr(value, "__dict__", None)
    if not isinstance(state, dict):
        return None
    public = {key: item for key, item in state.items() if type(key) is str and key[:1] != "_"}
    return public or None


def _plain_value(value: object) -> str | float | None:
    """The JSON stand-in of bytes, a date or time, a duration or a pydantic secret."""
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{value.nbytes if isinstance(value, memoryview) else len(value)} bytes>"
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, SecretStr | SecretBytes):
        return REDACTED
    return None


def _secret_pair_key(pair: tuple[Any, ...]) -> str | None:
    """The key of a pair such as ``("Authorization", "Bearer ...")`` if it looks secret."""
    key = pair[0] if len(pair) == 2 else None
    return key if isinstance(key, str) and looks_secret(key) else None


def _scalar_key(key: object) -> str | None:
    """The string JSON would use for a scalar key, or ``None`` for a non-scalar key."""
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int | float):
        return str(_float(key) if isinstance(key, float) else _int(key))
    return None


def _key_text(key: object) -> str:
    """The text of a non-string key: its JSON form, an enum's value, a tuple of scalars'
    repr; for anything else its type name, never its repr."""
    if isinstance(key, Enum):
        key = key.value
    if isinstance(key, str):
        return key
    scalar = _scalar_key(key)
    if scalar is not None:
        return scalar
    if type(key) is tuple and all(isinstance(item, str) or _scalar_key(item) for item in key):
        return repr(key)
    return _unrepresentable(key)


def _key_name(key: str, max_string: int) -> tuple[str, bool]:
    """The JSON key for the text ``key`` and whether its value must be redacted."""
    name = truncate_text(redact_credentials(key), max_string)
    return name, looks_secret(key) or (name is not key and looks_secret(name))


def _exact_scalar(value: object, max_string: int) -> object:
    """A value whose type is exactly one of :data:`_SCALARS`, JSON-ready."""
    if type(value) is str:
        return redact_text(value, max_string)
    if type(value) is float:
        return _float(value)
    if type(value) is int:
        return _int(value)
    return value  # None or a bool


def _flat_dict(value: dict[Any, Any], max_string: int) -> dict[str, object] | None:
    """``value`` sanitised if it maps strings to plain scalars (as most tool parameters
    do), without a walk; ``None`` if it holds anything else."""
    result: dict[str, object] = {}
    for key, item in value.items():
        if type(key) is not str or type(item) not in _SCALARS:
            return None
        name, secret = _key_name(key, max_string)
        result[name] = REDACTED if secret else _exact_scalar(item, max_string)
    return result


class _Sanitizer:
    """One walk over one value; remembers the containers on the current path (cycles)."""

    __slots__ = ("_on_path", "max_depth", "max_items", "max_string")

    def __init__(self, max_string: int, max_items: int, max_depth: int) -> None:
        self.max_string = max(max_string, 0)
        self.max_items = max(max_items, 0)
        self.max_depth = max(max_depth, 0)
        self._on_path: set[int] = set()

    def convert(self, value: object, depth: int) -> object:
        try:
            return self._convert(value, depth)
        except Exception:  # noqa: BLE001 - a hostile object degrades to a marker
            return _unrepresentable(value)  # never a repr: it could show secret values

    def _convert(self, value: object, depth: int) -> object:
        if value is None or isinstance(value, bool | int | float | str):
            return self._scalar(value)
        if isinstance(value, Mapping):
            return self._nested(value, depth, self._mapping)
        if isinstance(value, tuple) and _is_named_tuple(value):
            return self._nested(value, depth, self._named_tuple)
        if isinstance(value, _SEQUENCES):
            return self._nested(value, depth, self._sequence)
        return self._other(value, depth)

    def _scalar(self, value: bool | int | float | str | None) -> object:
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, str):
            return self._text(value)
        return _int(value) if isinstance(value, int) else _float(value)

    def _text(self, value: str) -> str:
        plain = value if type(value) is str else str.__str__(value)  # str subclasses, StrEnum
        return redact_text(plain, self.max_string)

    def _other(self, value: object, depth: int) -> object:
        plain = _plain_value(value)
        if plain is not None:
            return plain
        if isinstance(value, Enum):
            return self.convert(value.value, depth)
        if isinstance(value, _TEXT_LIKE):
            return self._text(str(value))
        record = _fields_of(value)
        if record is None:
            return _unrepresentable(value)  # its repr could show what its fields would hide
        return self._nested(value, depth, lambda _value, inner: self._mapping(record, inner))

    def _nested(self, value: Any, depth: int, convert: Callable[[Any, int], object]) -> object:
        if depth >= self.max_depth:
            return MAX_DEPTH
        marker = id(value)
        if marker in self._on_path:
            return CYCLE
        self._on_path.add(marker)
        try:
            return convert(value, depth + 1)
        finally:
            self._on_path.discard(marker)

    def _sequence(self, value: Iterable[object], depth: int) -> list[object]:
        key = _secret_pair_key(value) if type(value) is tuple else None
        if key is not None:
            return [self._text(key), REDACTED]
        items = [self.convert(item, depth) for item in islice(value, self.max_items)]
        extra = len(value) - self.max_items  # type: ignore[arg-type]  # _SEQUENCES are sized
        if extra > 0:
            items.append(f"…[{extra} more items]")
        return items

    def _named_tuple(self, value: tuple[Any, ...], depth: int) -> dict[str, object]:
        return self._mapping(dict(zip(type(value)._fields, value, strict=False)), depth)  # type: ignore[attr-defined]

    def _mapping(self, value: Mapping[Any, Any], depth: int) -> dict[str, object]:
        result: dict[str, object] = {}
        for key, item in islice(value.items(), self.max_items):
            name, secret = self._key(key)
            result[name] = REDACTED if secret else self.convert(item, depth)
        extra = len(value) - self.max_items
        if extra > 0:
            result["…"] = f"[{extra} more items]"
        return result

    def _key(self, key: object) -> tuple[str, bool]:
        """The JSON key for ``key`` and whether its value must be redacted."""
        plain = key if type(key) is str else str.__str__(key) if isinstance(key, str) else None
        return _key_name(_key_text(key) if plain is None else plain, self.max_string)


def sanitize(
    value: object, *, max_string: int = 2000, max_items: int = 100, max_depth: int = 8
) -> object:
    """Return a JSON-ready copy of ``value`` that is safe to send to a client.

    Keys that look secret (see :func:`looks_secret`), and the second item of a pair whose
    first does, get ``"[REDACTED]"``; every string goes through :func:`redact_text`, so a
    credential-shaped value is redacted under any key. Records go out field by field with
    the same rules: pydantic models, dataclasses, attrs classes, named tuples, and any
    object's public attributes (an ORM object's loaded columns); enums as their value;
    UUIDs, decimals, paths and IP addresses as text; anything else as its type name
    (``"<unrepresentable Lock>"``), never its ``repr()``. Strings are cut to
    ``max_string`` characters and sequences (and mappings) to ``max_items`` items, each with
    a marker saying how much was cut; containers nested ``max_depth`` levels deep become
    ``"[MAX DEPTH]"``, cycles ``"[CYCLE]"``; bytes become ``"<N bytes>"``; dates their ISO
    form. Never raises.
    """
    try:
        if type(value) in _SCALARS:  # the hot path: most event fields are short strings
            return _exact_scalar(value, max_string)
        if type(value) is dict and 0 < max_depth and len(value) <= max_items:
            flat = _flat_dict(value, max_string)
            if flat is not None:
                return flat
        return _Sanitizer(max_string, max_items, max_depth).convert(value, 0)
    except Exception:  # noqa: BLE001 - e.g. a bad limit; sanitising must never raise
        return UNSANITISABLE
