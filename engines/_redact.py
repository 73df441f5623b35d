"""What counts as a secret (not API; :mod:`.sanitize` is the public face).

Two rules. By key: a mapping key, a field name or the first item of a pair names a secret
when its normalised form (NFKC, case-folded, invisible characters dropped, camelCase and
separators split into words) contains a secret word. By value: text that holds a
credential-shaped value (a bearer token, a well-known API key, a JWT, the password of a
URL, ``password=...`` in a log line or a DSN, a private key block) has that value replaced.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Final

__all__ = [
    "REDACTED",
    "SECRET_KEY_PARTS",
    "SECRET_KEY_WORDS",
    "TOKEN_COUNT_KEYS",
    "looks_secret",
    "redact_credentials",
]

REDACTED: Final = "[REDACTED]"
# Found anywhere in the normalised key ("dbPassword", "X-Api-Key", "PHPSESSID").
SECRET_KEY_PARTS: Final = (
    "password",
    "passwd",
    "passphrase",
    "passcode",
    "pwd",
    "secret",
    "token",
    "apikey",
    "authorization",
    "credential",
    "privatekey",
    "cookie",
    "sessionkey",
    "sessionid",
    "sessid",
    "bearer",
    "jwt",
    "signature",
    "xauth",
)
# Matched as whole words only: inside other words they are harmless ("author", "kidsname").
SECRET_KEY_WORDS: Final = frozenset({"auth", "dsn", "otp", "sid"})
# Token *counts* that LLM tools pass around are not secrets; exact (normalised) names only.
TOKEN_COUNT_KEYS: Final = frozenset(
    {
        "maxtokens",
        "maxoutputtokens",
        "maxnewtokens",
        "maxcompletiontokens",
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
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_CACHED_KEY_LENGTH = 64


def _visible(text: str) -> str:
    """``text`` in NFKC form without format characters (zero-width, bidi, BOM...)."""
    text = unicodedata.normalize("NFKC", text)
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


def _words(key: str) -> list[str]:
    text = key if key.isascii() else _visible(key)
    return [word for word in _NOT_ALNUM.split(_CAMEL_BOUNDARY.sub(" ", text).casefold()) if word]


def _names_secret(joined: str) -> bool:
    return joined not in TOKEN_COUNT_KEYS and any(part in joined for part in SECRET_KEY_PARTS)


def _is_secret_key(key: str) -> bool:
    words = _words(key)
    if _names_secret("".join(words)) or not SECRET_KEY_WORDS.isdisjoint(words):
        return True
    return _names_secret(_NOT_ALNUM.sub("", key.lower()))  # ASCII letters only, as typed


_is_secret_key_cached = functools.lru_cache(maxsize=4096)(_is_secret_key)


def looks_secret(key: str) -> bool:
    """Whether a key names a secret (``password``, ``X-Api-Key``, ``authToken``, ``DSN``...)."""
    if len(key) > _CACHED_KEY_LENGTH:
        return _is_secret_key(key)
    return _is_secret_key_cached(key)


# -- by value --------------------------------------------------------------------------------
# Each shape is looked for only when the text holds its literal cue, tested with ``in``
# (single characters first: those are a memchr), so a text without cues (most texts)
# costs a handful of substring tests and no regex at all.

_TOKEN = r"[A-Za-z0-9._~+/\-]"  # noqa: S105 - a character class, not a password
# what follows "key:" or "key=": a scheme and its credentials, a quoted string (to the end
# of the text if it is not closed), or a word
_VALUE = re.compile(
    rf"\s*(?P<value>(?i:bearer|basic|token)[ \t]+{_TOKEN}+=*"
    r"|\"(?:[^\"\\]|\\.)*\"?|'(?:[^'\\]|\\.)*'?|[^\s\"',;&}\]]+)"
)
# an authorization scheme and its credentials (with a digit in them, or 20 characters long)
_SCHEME = re.compile(rf"\b((?i:bearer|basic)\s+)(?={_TOKEN}*[0-9]|{_TOKEN}{{20}}){_TOKEN}{{8,}}=*")
# the password of a URL: scheme://user:password@host
_URL_PASSWORD = re.compile(r"\b([A-Za-z][A-Za-z0-9+.\-]{1,30}://[^\s/:@?#]*:)[^\s/]+(?=@)")
# a private key block, to its end or to the end of the text
_PRIVATE_KEY = re.compile(
    r"-----BEGIN[A-Z ]{0,40}PRIVATE KEY-----"
    r"(?:[\s\S]*?-----END[A-Z ]{0,40}PRIVATE KEY-----|[\s\S]*)"
)
# well-known API key shapes and JWTs, not inside a longer word
_API_KEY = re.compile(
    r"(?<![A-Za-z0-9_\-])(?:"
    r"sk-[A-Za-z0-9_\-]{20,}|(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"
    r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{20,}"
    r"|xox[abeoprs]-[A-Za-z0-9\-]{10,}|xapp-[A-Za-z0-9\-]{10,}"
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}|AIza[0-9A-Za-z_\-]{30,}"
    r"|glpat-[A-Za-z0-9_\-]{20,}|hf_[A-Za-z0-9]{30,}|npm_[A-Za-z0-9]{30,}"
    r"|eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*)"
)
_SHORTEST = 8  # "pwd=abcd": nothing shorter is worth a look
_KEY_WINDOW = 66
_KEY_PUNCTUATION = "\"'`{[(<,;"


def _has_api_key_cue(text: str) -> bool:
    return (
        ("-" in text and ("sk-" in text or "xox" in text or "xapp-" in text or "glpat-" in text))
        or ("_" in text and ("sk_" in text or "rk_" in text or "gh" in text or "hf_" in text))
        or ("_" in text and "npm_" in text)
        or ("J" in text and "eyJ" in text)
        or ("A" in text and ("AKIA" in text or "ASIA" in text or "AIza" in text))
    )


def _has_scheme_cue(text: str) -> bool:
    return (
        "earer" in text
        or "asic" in text
        or ("E" in text and "EARER" in text)
        or ("A" in text and "ASIC" in text)
    )


# Every secret key name, as written, holds one of these (ASCII texts are checked first).
_KEY_CUES = (
    "pass",
    "pwd",
    "secret",
    "token",
    "key",
    "auth",
    "cred",
    "cookie",
    "sess",
    "sid",
    "bearer",
    "jwt",
    "signature",
    "dsn",
    "otp",
)
_KEY_CUE = re.compile("|".join(map(re.escape, _KEY_CUES)))


def _may_name_a_secret(text: str) -> bool:
    if not text.isascii():
        return True  # the key rule normalises first; let it look at every key
    return _KEY_CUE.search(text.lower()) is not None


def _separators(text: str) -> list[int]:
    found = []
    for separator in (":", "="):
        index = text.find(separator)
        while index != -1:
            found.append(index)
            index = text.find(separator, index + 1)
    found.sort()
    return found


def _key_before(text: str, index: int) -> str:
    """The word just before the separator at ``index``: ``password`` in ``{"password": ``."""
    words = text[max(0, index - _KEY_WINDOW) : index].rsplit(None, 1)
    if not words:
        return ""
    word = words[-1].rpartition(":")[2].rpartition("=")[2]
    return word.strip(_KEY_PUNCTUATION)


def _redact_assignments(text: str) -> str:
    """``key=value``, ``key: value``, ``"key": "value"``: the value goes when the key is
    secret by the key rule (log lines, libpq DSNs, JSON and reprs in error messages)."""
    pieces: list[str] = []
    done = 0
    for index in _separators(text):
        if index < done:
            continue
        key = _key_before(text, index)
        if not key or not looks_secret(key):
            continue
        value = _VALUE.match(text, index + 1)
        if value is None:
            continue
        start, end = value.span("value")
        opened = text[start] in "\"'"
        closed = opened and end - start > 1 and text[end - 1] == text[start]
        pieces += (text[done : start + opened], REDACTED)
        done = end - closed
    return "".join((*pieces, text[done:])) if pieces else text


def _keep_prefix(match: re.Match[str]) -> str:
    return f"{match[1]}{REDACTED}"


def redact_credentials(text: str) -> str:
    """``text`` with every credential-shaped value replaced by ``"[REDACTED]"``."""
    if len(text) < _SHORTEST:
        return text
    if text.isalnum():  # a name or a word: of all the shapes only AKIA... fits
        return _API_KEY.sub(REDACTED, text) if "A" in text and _has_api_key_cue(text) else text
    if "-" in text and "-----BEGIN" in text:
        text = _PRIVATE_KEY.sub(REDACTED, text)
    if ":" in text or "=" in text:
        if _may_name_a_secret(text):
            text = _redact_assignments(text)
        if "://" in text:
            text = _URL_PASSWORD.sub(_keep_prefix, text)
    if _has_scheme_cue(text):
        text = _SCHEME.sub(_keep_prefix, text)
    if _has_api_key_cue(text):
        text = _API_KEY.sub(REDACTED, text)
    return text
