"""The chat example's login tokens and settings."""

from __future__ import annotations

import jwt
import pytest
from pydantic import ValidationError

from examples.chat.auth import (
    InvalidNameError,
    InvalidTokenError,
    TokenSigner,
    clean_name,
    new_user_id,
)
from examples.chat.settings import ChatSettings

KEY = "k" * 64  # long enough for HS512 too, so the algorithm is the only difference


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class TestTokens:
    def test_a_token_round_trips_to_its_claims(self) -> None:
        """verify() returns who the token was issued for, and when it expires."""
        clock = Clock()
        signer = TokenSigner(KEY, 60, clock=clock)
        claims = signer.verify(signer.issue("ann-1", "Ann"))
        assert ("ann-1", "Ann", 1_000_060) == (claims.user_id, claims.name, claims.expires_at)

    def test_a_token_expires_after_its_ttl(self) -> None:
        """At the expiry second the token is refused as expired."""
        clock = Clock()
        signer = TokenSigner(KEY, 60, clock=clock)
        token = signer.issue("ann-1", "Ann")
        clock.now += 60
        with pytest.raises(InvalidTokenError) as refused:
            signer.verify(token)
        assert "expired" == refused.value.reason

    @pytest.mark.parametrize(
        ("mangle", "reason"),
        [
            (lambda t: None, "missing"),
            (lambda t: "", "missing"),
            (lambda t: t + ".x", "malformed"),
            (lambda t: "v2" + t[2:], "malformed"),
            (lambda t: t[:-3] + "abc", "bad signature"),
            (lambda t: t.replace(".", ".e", 1), "bad signature"),
            (lambda t: t + "é", "malformed"),
            (lambda t: "v1.a.b" + "c" * 2000, "malformed"),
        ],
    )
    def test_a_mangled_token_is_refused(self, mangle: object, reason: str) -> None:
        """Missing, malformed or re-signed tokens are refused with their reason."""
        signer = TokenSigner(KEY, 60)
        with pytest.raises(InvalidTokenError) as refused:
            signer.verify(mangle(signer.issue("ann-1", "Ann")))  # type: ignore[operator]
        assert reason == refused.value.reason

    def test_a_token_is_a_standard_hs256_jwt(self) -> None:
        """Any JWT library reads the token with the secret and HS256, and only with them."""
        token = TokenSigner(KEY, 60, clock=Clock()).issue("ann-1", "Ann")
        claims = jwt.decode(token, KEY, algorithms=["HS256"], options={"verify_exp": False})
        assert {"sub": "ann-1", "name": "Ann", "iat": 1_000_000, "exp": 1_000_060} == claims
        assert "HS256" == jwt.get_unverified_header(token)["alg"]

    @pytest.mark.parametrize(
        ("claims", "algorithm", "key"),
        [
            ({"sub": "ann-1", "name": "Ann", "iat": 1, "exp": 2**40}, "HS512", KEY),
            ({"sub": "ann-1", "name": "Ann", "iat": 1, "exp": 2**40}, "none", None),
            ({"sub": "ann-1", "name": "Ann", "iat": 1}, "HS256", KEY),
            ({"sub": 42, "name": "Ann", "iat": 1, "exp": 2**40}, "HS256", KEY),
            ({"sub": "ann-1", "name": "Ann", "iat": 1, "exp": "never"}, "HS256", KEY),
        ],
        ids=["other-algorithm", "alg-none", "no-exp", "sub-not-a-string", "exp-not-a-number"],
    )
    def test_a_jwt_we_did_not_issue_is_refused(
        self, claims: dict[str, object], algorithm: str, key: str | None
    ) -> None:
        """Another algorithm (even with our key), an unsigned token, a missing or mistyped
        claim: refused, whatever the JWT says about itself."""
        forged = jwt.encode(claims, key, algorithm=algorithm)
        with pytest.raises(InvalidTokenError) as refused:
            TokenSigner(KEY, 60).verify(forged)
        assert refused.value.reason in {"bad signature", "malformed"}

    @pytest.mark.parametrize("keep", [0.5, 0.9], ids=["half", "all-but-a-bit"])
    def test_a_truncated_token_is_refused(self, keep: float) -> None:
        """A token cut short anywhere is refused."""
        token = TokenSigner(KEY, 60).issue("ann-1", "Ann")
        with pytest.raises(InvalidTokenError):
            TokenSigner(KEY, 60).verify(token[: int(len(token) * keep)])

    def test_a_replayed_token_stops_working_at_its_expiry(self) -> None:
        """The same genuine token, accepted once, is refused when presented after expiry."""
        clock = Clock()
        signer = TokenSigner(KEY, 60, clock=clock)
        token = signer.issue("ann-1", "Ann")
        assert "ann-1" == signer.verify(token).user_id
        clock.now += 3600
        with pytest.raises(InvalidTokenError, match="expired"):
            signer.verify(token)

    def test_another_secret_cannot_sign_for_us(self) -> None:
        """A token signed with a different secret has a bad signature."""
        forged = TokenSigner("x" * 32, 60).issue("ann-1", "Ann")
        with pytest.raises(InvalidTokenError, match="bad signature"):
            TokenSigner(KEY, 60).verify(forged)


class TestNames:
    def test_user_ids_are_fresh_for_the_same_name(self) -> None:
        """Two logins as 'Ann' are two users, both slugged from the name."""
        first, second = new_user_id("Ann Lee"), new_user_id("Ann Lee")
        assert first != second
        assert first.startswith("ann-lee-")

    @pytest.mark.parametrize("name", ["", "   ", "a" * 41, "bad\x00name"])
    def test_bad_names_are_refused(self, name: str) -> None:
        """Empty, overlong or control-character names raise InvalidNameError."""
        with pytest.raises(InvalidNameError):
            clean_name(name)


class TestSettings:
    def test_a_short_secret_is_refused(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """CHAT_SECRET shorter than 32 characters fails at startup."""
        monkeypatch.setenv("CHAT_SECRET", "short")
        with pytest.raises(ValidationError, match="at least 32"):
            ChatSettings()

    def test_without_a_secret_each_process_makes_one_up(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Two settings objects without CHAT_SECRET get different random secrets."""
        monkeypatch.delenv("CHAT_SECRET", raising=False)
        assert ChatSettings().secret != ChatSettings().secret
