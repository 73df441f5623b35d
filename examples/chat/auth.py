"""Login tokens: JWTs signed with HS256 (PyJWT), expiring, the only source of a user's id.

A token carries ``sub`` (the user id), ``name``, ``iat`` and ``exp``. PyJWT checks the
signature with the server's secret and accepts HS256 only (so ``alg: none`` or another
algorithm is refused), and that every claim is there; the expiry is compared with this
signer's clock, so tests can move time.
"""

from __future__ import annotations

import re
import secrets
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

import jwt

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
ALGORITHM = "HS256"
_REQUIRED = ("sub", "name", "iat", "exp")
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


class TokenSigner:
    """Issues and verifies login tokens with one secret and one lifetime."""

    def __init__(
        self, secret: str, ttl_seconds: int, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._key = secret
        self.ttl_seconds = ttl_seconds
        self._clock = clock

    def __repr__(self) -> str:
        return f"<TokenSigner algorithm={ALGORITHM} ttl_seconds={self.ttl_seconds}>"

    def issue(self, user_id: str, name: str, *, issued_at: float | None = None) -> str:
        """A token for ``user_id`` valid for ``ttl_seconds`` from ``issued_at`` (now)."""
        now = int(self._clock() if issued_at is None else issued_at)
        claims = {"sub": user_id, "name": name, "iat": now, "exp": now + self.ttl_seconds}
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)

    def verify(self, token: object) -> TokenClaims:
        """The claims of a genuine, unexpired token; :class:`InvalidTokenError` otherwise."""
        claims = _claims(self._decoded(token))
        if claims.expires_at <= self._clock():
            raise InvalidTokenError("expired")
        return claims

    def _decoded(self, token: object) -> dict[str, object]:
        if not isinstance(token, str) or not token:
            raise InvalidTokenError("missing")
        if len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            raise InvalidTokenError("malformed")
        try:
            return jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                options={"require": list(_REQUIRED), "verify_exp": False},
            )
        except (jwt.InvalidSignatureError, jwt.InvalidAlgorithmError):
            raise InvalidTokenError("bad signature") from None
        except jwt.InvalidTokenError:
            raise InvalidTokenError("malformed") from None


def _claims(data: dict[str, object]) -> TokenClaims:
    user_id, name, expires_at = data["sub"], data["name"], data["exp"]
    if not isinstance(user_id, str) or not isinstance(name, str) or type(expires_at) is not int:
        raise InvalidTokenError("malformed")
    return TokenClaims(user_id, name, expires_at)
