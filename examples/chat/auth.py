"""Login tokens: HMAC-SHA256-signed, expiring, and the only source of a user's id.

A token is ``v1.<payload>.<signature>``: the payload is base64url JSON
(``sub``, ``name``, ``iat``, ``exp``), the signature is HMAC-SHA256 of ``v1.<payload>``
with the server's secret. The signature is checked (in constant time) before the
payload is even parsed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "MAX_NAME_LENGTH",
    "MAX_TOKEN_LENGTH",
    "InvalidNameError",
    "InvalidTokenError",
    "TokenClaims",
    "TokenSigner",
    "clean_name",
    "new_user_id",
]

MAX_TOKEN_LENGTH = 1024
MAX_NAME_LENGTH = 40
_VERSION = "v1"
_NOT_SLUG = re.compile(r"[^a-z0-9]+")


class InvalidTokenError(ValueError):
    """A token is missing, malformed, forged or expired; ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"Invalid token: {reason}; log in again to get a fresh one.")


class InvalidNameError(ValueError):
    """A login name is empty, too long or has control characters."""


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """Who a valid token speaks for, and until when."""

    user_id: str
    name: str
    expires_at: int


def new_user_id(name: str) -> str:
    """A fresh, server-chosen user id: a slug of ``name`` and a random suffix.

    Two people who type the same name are two users; nobody can pick another's id.
    """
    clean = clean_name(name)
    slug = _NOT_SLUG.sub("-", clean.casefold()).strip("-")[:24] or "user"
    return f"{slug}-{secrets.token_hex(4)}"


def clean_name(name: str) -> str:
    """``name`` stripped; :class:`InvalidNameError` when empty, too long or not printable."""
    clean = unicodedata.normalize("NFKC", name).strip()
    if not clean or len(clean) > MAX_NAME_LENGTH:
        raise InvalidNameError(f"A name has 1 to {MAX_NAME_LENGTH} characters.")
    if not clean.isprintable():
        raise InvalidNameError("A name must not contain control characters.")
    return clean


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidTokenError("malformed") from None


class TokenSigner:
    """Issues and verifies login tokens with one secret and one lifetime."""

    def __init__(
        self, secret: str, ttl_seconds: int, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._key = secret.encode("utf-8")
        self.ttl_seconds = ttl_seconds
        self._clock = clock

    def __repr__(self) -> str:
        return f"<TokenSigner ttl_seconds={self.ttl_seconds}>"

    def issue(self, user_id: str, name: str, *, issued_at: float | None = None) -> str:
        """A token for ``user_id`` valid for ``ttl_seconds`` from ``issued_at`` (now)."""
        now = int(self._clock() if issued_at is None else issued_at)
        claims = {"sub": user_id, "name": name, "iat": now, "exp": now + self.ttl_seconds}
        payload = _b64encode(json.dumps(claims, separators=(",", ":")).encode("utf-8"))
        return f"{_VERSION}.{payload}.{self._sign(payload)}"

    def verify(self, token: object) -> TokenClaims:
        """The claims of a genuine, unexpired token; :class:`InvalidTokenError` otherwise."""
        payload = self._checked_payload(token)
        claims = _parse_claims(payload)
        if claims.expires_at <= self._clock():
            raise InvalidTokenError("expired")
        return claims

    def _sign(self, payload: str) -> str:
        message = f"{_VERSION}.{payload}".encode("ascii")
        return _b64encode(hmac.new(self._key, message, hashlib.sha256).digest())

    def _checked_payload(self, token: object) -> str:
        if not isinstance(token, str) or not token:
            raise InvalidTokenError("missing")
        if len(token) > MAX_TOKEN_LENGTH or not token.isascii() or token.count(".") != 2:
            raise InvalidTokenError("malformed")
        version, payload, signature = token.split(".")
        if version != _VERSION:
            raise InvalidTokenError("malformed")
        if not hmac.compare_digest(signature, self._sign(payload)):
            raise InvalidTokenError("bad signature")
        return payload


def _parse_claims(payload: str) -> TokenClaims:
    try:
        data = json.loads(_b64decode(payload))
        claims = TokenClaims(str(data["sub"]), str(data["name"]), int(data["exp"]))
    except (ValueError, KeyError, TypeError):
        raise InvalidTokenError("malformed") from None
    return claims
