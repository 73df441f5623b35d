"""Input hygiene for events: JSON-ready, bounded copies with secrets redacted.

:func:`sanitize` is what the emitter applies to every tool parameter, tool result and step;
apps may call it on anything they send to a client themselves.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields, is_dataclass
from datetime import date, time
from itertools import islice
from typing import Any

from pydantic import BaseModel

__all__ = [
    "CYCLE",
    "MAX_DEPTH",
    "REDACTED",
    "SECRET_KEY_PARTS",
    "looks_secret",
    "sanitize",
    "truncate_text",
]

REDACTED = "[REDACTED]"
MAX_DEPTH = "[MAX DEPTH]"
CYCLE = "[CYCLE]"
UNSANITISABLE = "[UNSANITISABLE]"
# Compared against the key lower-cased with everything but [0-9a-z] removed, so
# "API-Key", "api_key" and "apiKey" all become "apikey".
SECRET_KEY_PARTS = (
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "authorization",
    "credential",
    "privatekey",
    "cookie",
    "sessionkey",
)
# Token *counts* that LLM tools pass around are not secrets; exact (normalised) names only.
TOKEN_COUNT_KEYS = frozenset(
    {
        "maxtokens",
        "maxoutputtokens",
        "maxnewtokens",
        "totaltokens",
        "prompttokens",
        "completiontokens",
        "inputtokens",
        "outputtokens",
        "numtokens",
        "tokencount",
    }
)
_NOT_ALNUM = re.compile(r"[^0-9a-z]+")
_MAX_INT_BITS = 1024  # larger ints are not JSON a client can parse (and may not stringify)
_CACHED_KEY_LENGTH = 64
_SEQUENCES = (list, tuple, set, frozenset, deque)


def _normalise_key(key: str) -> str:
    return _NOT_ALNUM.sub("", unicodedata.normalize("NFKC", key).casefold())


def _is_secret_key(key: str) -> bool:
    normal = _normalise_key(key)
    if normal in TOKEN_COUNT_KEYS:
        return False
    return any(part in normal for part in SECRET_KEY_PARTS)


_is_secret_key_cached = functools.lru_cache(maxsize=4096)(_is_secret_key)


def looks_secret(key: str) -> bool:
    """Whether a mapping key names a secret (``password``, ``X-Api-Key``, ``authToken``...)."""
    if len(key) > _CACHED_KEY_LENGTH:
        return _is_secret_key(key)
    return _is_secret_key_cached(key)


def _valid_unicode(text: str) -> str:
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates cannot be sent as UTF-8 text frames
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def truncate_text(text: str, limit: int = 2000) -> str:
    """Return ``text`` cut to ``limit`` characters plus a marker saying how much was cut."""
    if len(text) > limit:
        text = f"{text[: max(limit, 0)]}…[truncated {len(text) - max(limit, 0)} chars]"
    return _valid_unicode(text)


def _safe_repr(value: object, limit: int) -> str:
    try:
        return truncate_text(repr(value), limit)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not break an event
        return _unrepresentable(value)


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


def _is_dataclass_instance(value: object) -> bool:
    return is_dataclass(value) and not isinstance(value, type)


def _scalar_key(key: object) -> str | None:
    """The string JSON would use for a scalar key, or ``None`` for a non-scalar key."""
    if key is None:
        return "null"
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, int | float):
        return str(_float(key) if isinstance(key, float) else _int(key))
    return None


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
        return truncate_text(plain, self.max_string)

    def _other(self, value: object, depth: int) -> object:
        if isinstance(value, bytes | bytearray | memoryview):
            return f"<{value.nbytes if isinstance(value, memoryview) else len(value)} bytes>"
        if isinstance(value, date | time):
            return value.isoformat()
        if isinstance(value, uuid.UUID):
            return str(value)
        if isinstance(value, BaseModel) or _is_dataclass_instance(value):
            return self._nested(value, depth, self._record)  # its repr would show secrets
        return _safe_repr(value, self.max_string)

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
        items = [self.convert(item, depth) for item in islice(value, self.max_items)]
        extra = len(value) - self.max_items  # type: ignore[arg-type]  # _SEQUENCES are sized
        if extra > 0:
            items.append(f"…[{extra} more items]")
        return items

    def _record(self, value: object, depth: int) -> dict[str, object]:
        if isinstance(value, BaseModel):
            return self._mapping(dict(value), depth)
        names = [field.name for field in fields(value)]  # type: ignore[arg-type]
        return self._mapping({name: getattr(value, name) for name in names}, depth)

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
        if isinstance(key, str):
            plain = key if type(key) is str else str.__str__(key)
            name = truncate_text(plain, self.max_string)
            return name, looks_secret(plain) or looks_secret(name)
        name = _scalar_key(key) or _safe_repr(key, self.max_string)
        return name, looks_secret(name)


def sanitize(
    value: object, *, max_string: int = 2000, max_items: int = 100, max_depth: int = 8
) -> object:
    """Return a JSON-ready copy of ``value`` that is safe to send to a client.

    Mapping keys that look secret (see :data:`SECRET_KEY_PARTS`) get ``"[REDACTED]"``;
    strings are cut to ``max_string`` characters and sequences (and mappings) to
    ``max_items`` items, each with a marker saying how much was cut; containers nested
    ``max_depth`` levels deep become ``"[MAX DEPTH]"``, cycles ``"[CYCLE]"``; bytes become
    ``"<N bytes>"``; dates their ISO form; anything else its truncated ``repr()``.
    Never raises.
    """
    try:
        if type(value) is str:  # the hot path: most event fields are short strings
            return truncate_text(value, max_string)
        if value is None or type(value) is bool:  # and plain scalars (a step, a duration)
            return value
        if type(value) is float:
            return _float(value)
        if type(value) is int:
            return _int(value)
        return _Sanitizer(max_string, max_items, max_depth).convert(value, 0)
    except Exception:  # noqa: BLE001 - e.g. a bad limit; sanitising must never raise
        return UNSANITISABLE
