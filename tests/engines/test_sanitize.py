"""sanitize and redact_text: secrets redacted by key and by value, records field by field,
and nothing sent as a repr()."""

from __future__ import annotations

import collections
import dataclasses
import enum
import json
import math
import string
import threading
from datetime import timedelta
from decimal import Decimal
from pathlib import PurePosixPath
from types import MappingProxyType
from typing import Any, NamedTuple

import attrs
import pytest
from enginescope.engines import redact_text, sanitize
from enginescope.engines._redact import _KEY_CUES
from enginescope.engines.sanitize import (
    REDACTED,
    SECRET_KEY_PARTS,
    SECRET_KEY_WORDS,
    looks_secret,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, SecretStr

# Credential-shaped values, split so that no complete one sits in this file's source.
OPENAI_KEY = "sk-" + "proj-" + "a1B2c3D4e5F6g7H8i9J0kLmN"
ANTHROPIC_KEY = "sk-" + "ant-api03-" + "Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2"
STRIPE_KEY = "sk_" + "live_" + "51HaBcDeFgHiJkLmNoPq"
GITHUB_TOKEN = "ghp" + "_" + "aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"
GITHUB_PAT = "github" + "_pat_" + "11ABCDEFG0123456789_abcdefghijkl"
SLACK_TOKEN = "xox" + "b-1234567890-0987654321-AbCdEfGhIjKl"
AWS_KEY = "AKIA" + "IOSFODNN7EXAMPLE"
GOOGLE_KEY = "AIza" + "SyA-1234567890abcdefghijklmnopqrstu"
GITLAB_TOKEN = "glpat" + "-" + "abcdefghij0123456789"
JWT = (
    "eyJ" + "hbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJ" + "zdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
API_KEYS = [
    OPENAI_KEY,
    ANTHROPIC_KEY,
    STRIPE_KEY,
    GITHUB_TOKEN,
    GITHUB_PAT,
    SLACK_TOKEN,
    AWS_KEY,
    GOOGLE_KEY,
    GITLAB_TOKEN,
    JWT,
]
BEARER = "Bearer " + "0a1b2c3d4e5f6a7b8c9d"
PRIVATE_KEY_BLOCK = (
    "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----"
)
PASSWORD = "s3cr3t-Pa55"  # noqa: S105 - a test credential


class Creds(NamedTuple):
    user: str
    password: str


LegacyCreds = collections.namedtuple("LegacyCreds", ["user", "api_key"])


@attrs.define
class AttrsLogin:
    user: str
    client_secret: str


@attrs.frozen(slots=True)
class AttrsPoint:
    x: int
    y: int


class Colour(enum.Enum):
    RED = "red"


class InstanceState:
    """Stands in for SQLAlchemy's ``_sa_instance_state``: holds the session and more."""

    def __repr__(self) -> str:
        raise AssertionError("the instance state must not be looked at")


class User:
    """An ORM-style model: columns as instance attributes, private state beside them."""

    def __init__(self, user_id: int, email: str, hashed_password: str) -> None:
        self._sa_instance_state = InstanceState()
        self.id = user_id
        self.email = email
        self.hashed_password = hashed_password
        self.orders: list[Order] = []

    def __repr__(self) -> str:
        return f"User(id={self.id}, hashed_password={self.hashed_password!r})"


class Order:
    def __init__(self, owner: User, total: Decimal) -> None:
        self._sa_instance_state = InstanceState()
        self.owner = owner
        self.total = total


class Opaque:
    """No fields at all, and a repr that would leak."""

    __slots__ = ("_token",)

    def __init__(self) -> None:
        self._token = "hunter2"  # noqa: S105 - a test credential

    def __repr__(self) -> str:
        return f"Opaque(token={self._token})"


class TestNamedTuples:
    def test_fields_keep_their_names_and_secret_fields_are_redacted(self) -> None:
        """A NamedTuple goes out as a mapping of its fields, with key redaction."""
        assert {"user": "bob", "password": REDACTED} == sanitize(Creds("bob", "hunter2"))

    def test_collections_namedtuple_too(self) -> None:
        """A collections.namedtuple is treated the same way."""
        assert {"user": "bob", "api_key": REDACTED} == sanitize(LegacyCreds("bob", "k-123"))

    def test_nested_named_tuples(self) -> None:
        """Named tuples inside containers are walked by field as well."""
        value = {"logins": [Creds("ann", "a"), Creds("bob", "b")]}

        expected = {
            "logins": [{"user": "ann", "password": REDACTED}, {"user": "bob", "password": REDACTED}]
        }
        assert expected == sanitize(value)

    def test_plain_tuples_stay_lists(self) -> None:
        """Only named tuples become mappings."""
        assert [1, "a"] == sanitize((1, "a"))


SECRET_KEYS = [
    "passphrase",
    "PassPhrase",
    "pwd",
    "db_pwd",
    "oldPwd",
    "passcode",
    "session_id",
    "sessionId",
    "SESSION-ID",
    "PHPSESSID",
    "connect.sid",
    "x-auth",
    "X-Auth-User",
    "x_auth_key",
    "bearer",
    "BearerToken",
    "jwt",
    "id_jwt",
    "signature",
    "X-Hub-Signature-256",
    "dsn",
    "DSN",
    "SENTRY_DSN",
    "sentryDsn",
    "database.dsn",
    "cookie",
    "Set-Cookie",
    "private_key",
    "privateKey",
    "client_secret",
    "ClientSecret",
    "auth",
    "otp",
    "otp_code",
]
# the same names, spelled to dodge a naive check
DISGUISED_KEYS = [
    "\uff30\uff21\uff33\uff33\uff37\uff2f\uff32\uff24",  # fullwidth PASSWORD
    "pass\u200bword",  # zero-width space inside
    "pass\u00adword",  # soft hyphen inside
    "\ufeffapi_key",  # byte order mark in front
    "p\u200dwd",  # zero-width joiner inside a short word
    "api\u2060key",  # word joiner
    "Pass Word",
    "CLIENT__SECRET",
    "\u24c9\u24de\u24da\u24d4\u24dd",  # circled Token
]
NOT_SECRET_KEYS = [
    "max_tokens",
    "maxTokens",
    "max_completion_tokens",
    "total_tokens",
    "author",
    "authors",
    "oauth_provider",
    "kidsNames",
    "monkey",
    "keyboard",
    "inside",
    "side",
    "description",
    "passenger_count",
    "user",
    "email",
]


class TestSecretKeyNames:
    @pytest.mark.parametrize("key", SECRET_KEYS)
    def test_common_secret_names_are_redacted(self, key: str) -> None:
        """Each common secret key name has its value replaced."""
        assert {key: REDACTED, "visible": "ok"} == sanitize({key: "hunter2", "visible": "ok"})

    @pytest.mark.parametrize("key", DISGUISED_KEYS)
    def test_keys_are_compared_normalised(self, key: str) -> None:
        """Case, separators, NFKC forms and invisible characters do not hide a secret key."""
        assert looks_secret(key)
        assert REDACTED == sanitize({key: "hunter2"})[key]  # type: ignore[index]

    @pytest.mark.parametrize("key", NOT_SECRET_KEYS)
    def test_harmless_names_keep_their_values(self, key: str) -> None:
        """Token counts and words that merely contain a short secret word are kept."""
        assert {key: 256} == sanitize({key: 256})

    def test_a_secret_pair_in_a_tuple_is_redacted(self) -> None:
        """A header pair whose name looks secret loses its value, whatever the value is."""
        headers = [("Authorization", "raw-token-value"), ("Accept", "text/html")]

        assert [["Authorization", REDACTED], ["Accept", "text/html"]] == sanitize(headers)


INNOCENT_TEXTS = [
    "Reading your message.",
    "You said: hello there, how are you?",
    "the bearer of bad news",
    "Basic information about basic usage",
    "The author wrote: a passage about keys",
    "max_tokens=256 total_tokens: 100",
    "see https://example.com/path?q=1 and http://host:8080/x?email=a@b.com",
    "task-0123456789abcdefghijklmnop",
    "risk-0123456789abcdefghijklmnop",
    "user@example.com wrote at 12:30",
    "a=1, b=2, monkey=banana",
    "A well-known fact",
    "eyJ alone is not a token",
    "",
]


class TestRedactionByValue:
    @pytest.mark.parametrize("secret", API_KEYS)
    def test_api_key_shapes_are_redacted_in_free_text(self, secret: str) -> None:
        """Well-known API key shapes and JWTs are replaced wherever they sit in a text."""
        assert f"use {REDACTED} please" == redact_text(f"use {secret} please")

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (BEARER, f"Bearer {REDACTED}"),
            ("bearer abcdefghijklmnopqrstuvwxyz", f"bearer {REDACTED}"),
            ("BASIC dXNlcjpwYXNzd29yZA==", f"BASIC {REDACTED}"),
            (f"Authorization: {BEARER}", f"Authorization: {REDACTED}"),
            (f"sent header {BEARER} upstream", f"sent header Bearer {REDACTED} upstream"),
            (
                f"could not connect to postgres://app:{PASSWORD}@db:5432/prod",
                f"could not connect to postgres://app:{REDACTED}@db:5432/prod",
            ),
            (f"redis://:{PASSWORD}@localhost:6379/0", f"redis://:{REDACTED}@localhost:6379/0"),
            (f"amqp://guest:p@ss{PASSWORD}@rabbit/", f"amqp://guest:{REDACTED}@rabbit/"),
            (
                f"host=db user=app password={PASSWORD} dbname=prod",
                f"host=db user=app password={REDACTED} dbname=prod",
            ),
            (f"PASSWORD = {PASSWORD}", f"PASSWORD = {REDACTED}"),
            (
                f"{{'password': '{PASSWORD}', 'user': 'bob'}}",
                f"{{'password': '{REDACTED}', 'user': 'bob'}}",
            ),
            (f'{{"api_key": "a\\"{PASSWORD}", "x": 1}}', f'{{"api_key": "{REDACTED}", "x": 1}}'),
            (f"config: token={PASSWORD}", f"config: token={REDACTED}"),
            (f"DSN=postgres://u:{PASSWORD}@h/d", f"DSN={REDACTED}"),
            (f"keyfile={OPENAI_KEY}", f"keyfile={REDACTED}"),
            (
                PRIVATE_KEY_BLOCK + " ok",
                f"{REDACTED} ok",
            ),
            ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE", REDACTED),
            (f'password: "{PASSWORD} and the rest', f'password: "{REDACTED}'),
            (f"a:password={PASSWORD}", f"a:password={REDACTED}"),
            (f"x=y;pwd={PASSWORD}", f"x=y;pwd={REDACTED}"),
        ],
    )
    def test_credentials_in_free_text(self, text: str, expected: str) -> None:
        """Bearer and basic credentials, URL passwords, secret assignments and private key
        blocks are replaced; the text around them stays."""
        assert expected == redact_text(text)

    @pytest.mark.parametrize("text", INNOCENT_TEXTS)
    def test_innocent_texts_are_unchanged(self, text: str) -> None:
        """Texts without credentials come back as they were."""
        assert text == redact_text(text)

    def test_values_under_innocent_keys_are_redacted(self) -> None:
        """A credential-shaped value is redacted whatever key it sits under."""
        value = {
            "header": BEARER,
            "note": f"key is {OPENAI_KEY}",
            "url": f"postgres://user:{PASSWORD}@host/db",
            "items": [JWT, "plain"],
        }

        expected = {
            "header": f"Bearer {REDACTED}",
            "note": f"key is {REDACTED}",
            "url": f"postgres://user:{REDACTED}@host/db",
            "items": [REDACTED, "plain"],
        }
        assert expected == sanitize(value)

    def test_header_tuples_are_redacted(self) -> None:
        """[("Authorization", "Bearer ...")] goes out without the token."""
        assert [["Authorization", REDACTED]] == sanitize([("Authorization", BEARER)])

    def test_a_plain_string_is_redacted(self) -> None:
        """The fast path for a bare string redacts as well."""
        assert f"token {REDACTED}" == sanitize(f"token {GITHUB_TOKEN}")

    def test_keys_that_hold_credentials_are_redacted(self) -> None:
        """A mapping keyed by a credential does not send the credential as a key."""
        assert {f"{REDACTED}": "user-1"} == sanitize({OPENAI_KEY: "user-1"})

    def test_a_credential_across_the_truncation_point_is_redacted_whole(self) -> None:
        """Redaction happens before truncation: a key cut in half cannot slip through."""
        text = "x" * 95 + " " + JWT

        result = redact_text(text, 100)

        assert result.startswith("x" * 95 + " [RED")
        assert "eyJ" not in result
        assert result.endswith(f"[truncated {len(REDACTED) - 4} chars]")

    def test_a_long_text_keeps_its_truncation_marker(self) -> None:
        """Past the scanned margin the marker still counts every character cut."""
        text = f"{OPENAI_KEY} " + "y" * 100_000

        result = redact_text(text, 20)

        assert f"{REDACTED} yyyyyyyyy…[truncated {100_000 - 9} chars]" == result

    def test_without_a_limit_nothing_is_cut(self) -> None:
        """redact_text(text) redacts but keeps the whole text."""
        text = "z" * 5000 + f" {AWS_KEY}"

        assert "z" * 5000 + f" {REDACTED}" == redact_text(text)

    def test_lone_surrogates_become_valid_text(self) -> None:
        """The result can always be sent as UTF-8."""
        assert "bad ? text" == redact_text("bad \ud800 text")

    @settings(max_examples=300, deadline=None)
    @given(
        before=st.text(max_size=40),
        secret=st.sampled_from(
            [*API_KEYS, BEARER, f"postgres://app:{PASSWORD}@db/x", f"password={PASSWORD}"]
        ),
        after=st.text(max_size=40),
    )
    def test_property_an_embedded_credential_never_survives(
        self, before: str, secret: str, after: str
    ) -> None:
        """A credential between spaces in any text is gone from the result."""
        result = redact_text(f"{before} {secret} {after}")

        assert secret[-12:] not in result

    @settings(max_examples=300, deadline=None)
    @given(st.text(alphabet=string.ascii_lowercase + " .,!?'\n", max_size=300))
    def test_property_prose_without_cues_is_unchanged(self, text: str) -> None:
        """Lower-case prose without separators, bearer or basic is never altered."""
        if "earer" in text or "asic" in text:
            return
        assert text == redact_text(text)


SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30), st.just(BEARER)
)
KEYS = st.one_of(st.text(max_size=12), st.sampled_from([*SECRET_KEY_PARTS, "max_tokens", "q"]))


class TestFlatDicts:
    @settings(max_examples=300, deadline=None)
    @given(value=st.dictionaries(KEYS, SCALARS, max_size=6), max_string=st.integers(-2, 12))
    def test_property_a_flat_dict_is_sanitised_as_any_mapping(
        self, value: dict[str, Any], max_string: int
    ) -> None:
        """A dict of strings to scalars (taken without a walk) comes out exactly as the same
        items behind a read-only mapping (walked)."""
        expected = sanitize(MappingProxyType(value), max_string=max_string, max_items=4)

        assert expected == sanitize(value, max_string=max_string, max_items=4)

    def test_depth_zero_still_stops_a_flat_dict(self) -> None:
        """max_depth=0 makes even a flat dict the depth marker."""
        assert "[MAX DEPTH]" == sanitize({"a": 1}, max_depth=0)


class TestCueList:
    def test_every_secret_key_name_has_a_free_text_cue(self) -> None:
        """Free text is only searched for key=value pairs when it holds a cue; every secret
        key part and word contains one, so none is skipped."""
        names = [*SECRET_KEY_PARTS, *SECRET_KEY_WORDS]
        assert [] == [name for name in names if not any(cue in name for cue in _KEY_CUES)]


class TestRecords:
    def test_an_orm_object_goes_out_by_its_public_columns(self) -> None:
        """An ORM-style User sends its columns, hashed_password redacted, and neither its
        private state nor its repr."""
        user = User(7, "ann@example.com", "$2b$12$abcdefghijklmnopqrstuv")

        assert {
            "id": 7,
            "email": "ann@example.com",
            "hashed_password": REDACTED,
            "orders": [],
        } == sanitize(user)

    def test_relationships_are_walked_and_back_references_cut(self) -> None:
        """Related objects are walked too; a back-reference to an object on the path is
        a cycle marker."""
        user = User(7, "ann@example.com", "hash")
        user.orders.append(Order(user, Decimal("9.50")))

        result = sanitize(user)

        assert isinstance(result, dict)
        assert [{"owner": "[CYCLE]", "total": "9.50"}] == result["orders"]

    def test_attrs_instances_go_out_field_by_field(self) -> None:
        """attrs classes (slotted or not) are walked by field, with key redaction."""
        assert {"user": "ann", "client_secret": REDACTED} == sanitize(AttrsLogin("ann", "s"))
        assert {"x": 1, "y": 2} == sanitize(AttrsPoint(1, 2))

    def test_pydantic_secret_types_are_redacted(self) -> None:
        """A SecretStr goes out as the redaction marker, under any key."""

        class Settings(BaseModel):
            name: str
            dsn_value: SecretStr

        assert {"name": "app", "dsn_value": REDACTED} == sanitize(
            Settings(name="app", dsn_value=SecretStr("x"))
        )

    def test_dataclass_fields_are_redacted_by_value_too(self) -> None:
        """A credential inside a dataclass field under an innocent name is redacted."""

        @dataclasses.dataclass
        class Connection:
            url: str

        assert {"url": f"redis://:{REDACTED}@cache:6379"} == sanitize(
            Connection(f"redis://:{PASSWORD}@cache:6379")
        )

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (Opaque(), "<unrepresentable Opaque>"),
            (threading.Lock(), "<unrepresentable lock>"),
            (len, "<unrepresentable builtin_function_or_method>"),
            (lambda: None, "<unrepresentable function>"),
            (json, "<unrepresentable module>"),
            (ValueError(f"password={PASSWORD}"), "<unrepresentable ValueError>"),
            (object(), "<unrepresentable object>"),
            (iter([1]), "<unrepresentable list_iterator>"),
            (User, "<unrepresentable type>"),
        ],
        ids=lambda value: type(value).__name__,
    )
    def test_objects_without_fields_become_their_type_name(
        self, value: object, expected: str
    ) -> None:
        """Anything without fields goes out as its type name, never as its repr()."""
        assert expected == sanitize(value)

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (Colour.RED, "red"),
            (Decimal("1.10"), "1.10"),
            (PurePosixPath("/srv/data"), "/srv/data"),
            (timedelta(minutes=1, milliseconds=5), 60.005),
            (2 + 1j, "(2+1j)"),
            (
                {Colour.RED: 1, (1, "a"): 2, Opaque(): 3},
                {"red": 1, "(1, 'a')": 2, "<unrepresentable Opaque>": 3},
            ),
        ],
        ids=repr,
    )
    def test_value_types_go_out_as_their_value(self, value: object, expected: object) -> None:
        """Enums, decimals, paths, durations and complex numbers are sent as values; keys
        that are objects are their type name."""
        assert expected == sanitize(value)

    def test_a_repr_is_never_called(self) -> None:
        """Sanitising an object with fields or without never calls its __repr__."""

        class Watched:
            def __init__(self) -> None:
                self.visible = 1

            def __repr__(self) -> str:
                raise AssertionError("repr was called")

        assert [{"visible": 1}, {"a": "<unrepresentable Opaque>"}] == sanitize(
            [Watched(), {"a": Opaque()}]
        )

    def test_nan_fields_stay_json_ready(self) -> None:
        """Fields go through the same conversion as any value."""
        assert {"x": "nan", "y": 1} == sanitize(AttrsPoint(math.nan, 1))  # type: ignore[arg-type]


def test_everything_above_is_strict_json() -> None:
    """A mixed value of every kind above serialises as strict JSON."""
    user = User(1, "a@b.c", "h")
    user.orders.append(Order(user, Decimal(1)))
    value: Any = [user, Creds("a", "b"), AttrsLogin("a", "b"), Opaque(), Colour.RED, BEARER]

    json.dumps(sanitize(value), allow_nan=False)
