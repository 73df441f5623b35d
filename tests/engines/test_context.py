"""UserExecutionContext and validate_user_context."""

from __future__ import annotations

import json
import os
import unicodedata
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from enginescope.engines import (
    EngineScopeError,
    InvalidContextError,
    InvalidSettingError,
    UserExecutionContext,
    validate_user_context,
)
from enginescope.engines.context import (
    DEFAULT_MAX_METADATA_BYTES,
    DEFAULT_MAX_METADATA_DEPTH,
    MAX_ID_LENGTH,
    PLACEHOLDER_IDS,
    MetadataLimits,
    check_identifier,
    metadata_limits,
    set_metadata_limits,
)
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

VALID = {"user_id": "user-42", "thread_id": "thread-7", "run_id": "run-1"}


def with_(**changes: Any) -> dict[str, Any]:
    return {**VALID, **changes}


class TestValidContext:
    def test_required_fields_are_kept(self) -> None:
        """The three ids given are the ids stored."""
        ctx = UserExecutionContext(**VALID)
        assert (ctx.user_id, ctx.thread_id, ctx.run_id) == ("user-42", "thread-7", "run-1")

    def test_defaults(self) -> None:
        """request_id is a fresh uuid4 hex, created_at is UTC now, metadata is empty."""
        before = datetime.now(UTC)
        first, second = UserExecutionContext(**VALID), UserExecutionContext(**VALID)
        assert len(first.request_id) == 32
        assert set(first.request_id) <= set("0123456789abcdef")
        assert first.request_id != second.request_id
        ids = [UserExecutionContext(**VALID).request_id for _ in range(200)]  # several blocks
        parsed = [uuid.UUID(hex=request_id) for request_id in ids]
        assert ids == [request.hex for request in parsed]
        assert {(4, uuid.RFC_4122)} == {(request.version, request.variant) for request in parsed}
        assert first.created_at.tzinfo == UTC
        assert before <= first.created_at <= datetime.now(UTC)
        assert dict(first.metadata) == {}
        assert first.websocket_client_id is None

    def test_is_frozen(self) -> None:
        """Fields cannot be reassigned after construction."""
        ctx = UserExecutionContext(**VALID)
        with pytest.raises(ValidationError):
            ctx.user_id = "someone-else"  # type: ignore[misc]

    def test_metadata_is_deep_copied_and_read_only(self) -> None:
        """Changing the caller's mapping later does not change the context's metadata."""
        source: dict[str, Any] = {"tags": ["a"], "nested": {"k": 1}}
        ctx = UserExecutionContext(**VALID, metadata=source)
        source["tags"].append("b")
        source["nested"]["k"] = 2
        assert dict(ctx.metadata) == {"tags": ["a"], "nested": {"k": 1}}
        with pytest.raises(TypeError):
            ctx.metadata["new"] = 1  # type: ignore[index]

    def test_default_metadata_is_empty_and_read_only(self) -> None:
        """The empty metadata of a context built without any is read-only; the next is empty."""
        first = UserExecutionContext(**VALID)
        with pytest.raises(TypeError):
            first.metadata["new"] = 1  # type: ignore[index]
        assert {} == dict(UserExecutionContext(**VALID).metadata)

    def test_created_at_is_converted_to_utc(self) -> None:
        """An aware timestamp in another zone is stored in UTC."""
        local = datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
        ctx = UserExecutionContext(**VALID, created_at=local)
        assert datetime(2026, 1, 1, 10, tzinfo=UTC) == ctx.created_at

    def test_equal_contexts_hash_alike(self) -> None:
        """Two contexts with the same fields are equal and hash equal."""
        first = UserExecutionContext(**VALID, request_id="req-1")
        second = first.model_copy()
        assert first == second
        assert hash(first) == hash(second)

    def test_dump_is_json_ready(self) -> None:
        """model_dump(mode='json') gives plain types, metadata included."""
        ctx = UserExecutionContext(**VALID, metadata={"a": 1})
        dumped = ctx.model_dump(mode="json")
        assert dumped["metadata"] == {"a": 1}
        assert dumped["user_id"] == "user-42"

    def test_repr_names_the_user(self) -> None:
        """The repr says whose context it is."""
        assert "user_id='user-42'" in repr(UserExecutionContext(**VALID))


class TestRequestIds:
    def test_threads_never_get_the_same_id(self) -> None:
        """Contexts built at once in many threads all get different request ids."""

        def build(count: int) -> list[str]:
            return [UserExecutionContext(**VALID).request_id for _ in range(count)]

        with ThreadPoolExecutor(max_workers=8) as pool:
            ids = [rid for batch in pool.map(build, [500] * 8) for rid in batch]

        assert 4000 == len(set(ids))

    @pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
    @pytest.mark.filterwarnings("ignore:.*fork:DeprecationWarning")
    def test_a_forked_child_never_repeats_its_parents_ids(self) -> None:
        """After a fork, the child's request ids are not those the parent hands out next."""
        UserExecutionContext(**VALID)  # the parent now holds ids read ahead
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            try:
                os.write(write, UserExecutionContext(**VALID).request_id.encode())
            finally:
                os._exit(0)
        os.close(write)
        os.waitpid(pid, 0)
        with os.fdopen(read) as pipe:
            child_id = pipe.read()

        parent_ids = {UserExecutionContext(**VALID).request_id for _ in range(64)}
        assert 32 == len(child_id)
        assert child_id not in parent_ids


INVALID = [
    pytest.param(with_(user_id=42), "user_id", "must be a string", id="int-user"),
    pytest.param(with_(thread_id=None), "thread_id", "must be a string", id="none-thread"),
    pytest.param(with_(run_id=b"r"), "run_id", "must be a string", id="bytes-run"),
    pytest.param(with_(user_id=""), "user_id", "empty or blank", id="empty"),
    pytest.param(with_(user_id="   "), "user_id", "empty or blank", id="blank"),
    pytest.param(with_(thread_id=" t"), "thread_id", "whitespace", id="padded"),
    pytest.param(with_(run_id="r\x00"), "run_id", "control characters", id="nul"),
    pytest.param(with_(user_id="u\nx"), "user_id", "control characters", id="newline"),
    pytest.param(with_(user_id="u\x9f"), "user_id", "control characters", id="c1"),
    pytest.param(with_(user_id="x" * 257), "user_id", "at most 256", id="too-long"),
    pytest.param(with_(user_id="None"), "user_id", "placeholder", id="none-word"),
    pytest.param(with_(thread_id="NULL"), "thread_id", "placeholder", id="null-word"),
    pytest.param(with_(run_id="undefined"), "run_id", "placeholder", id="undefined"),
    pytest.param(with_(run_id="Placeholder"), "run_id", "placeholder", id="placeholder"),
    pytest.param(with_(user_id="registry"), "user_id", "placeholder", id="registry"),
    pytest.param(with_(request_id=""), "request_id", "empty", id="request-id"),
    pytest.param(with_(websocket_client_id=7), "websocket_client_id", "string", id="ws-id"),
    pytest.param(with_(metadata={"user_id": "x"}), "metadata", "reserved", id="reserved"),
    pytest.param(with_(metadata={"run_id": "x"}), "metadata", "reserved", id="reserved-run"),
    pytest.param(with_(metadata={1: "x"}), "metadata", "keys must be strings", id="int-key"),
    pytest.param(with_(metadata={"f": object()}), "metadata", "JSON", id="not-json"),
    pytest.param(with_(metadata={"f": float("nan")}), "metadata", "JSON", id="nan"),
    pytest.param(with_(metadata=["a"]), "metadata", "mapping", id="list-metadata"),
    pytest.param(with_(created_at=datetime(2026, 1, 1)), "created_at", "timezone", id="naive"),
    pytest.param(with_(extra="x"), "extra", "not a field", id="unknown-field"),
    pytest.param({"user_id": "u", "thread_id": "t"}, "run_id", "required", id="missing"),
]


class TestInvalidContext:
    @pytest.mark.parametrize(("fields", "field", "reason"), INVALID)
    def test_constructor_names_the_field(
        self, fields: dict[str, Any], field: str, reason: str
    ) -> None:
        """Each kind of bad input raises InvalidContextError naming the field and the reason."""
        with pytest.raises(InvalidContextError) as caught:
            UserExecutionContext(**fields)
        assert field == caught.value.field
        assert reason in str(caught.value)

    @pytest.mark.parametrize(("fields", "field", "reason"), INVALID)
    def test_validator_names_the_field(
        self, fields: dict[str, Any], field: str, reason: str
    ) -> None:
        """validate_user_context on a mapping raises the same error as the constructor."""
        with pytest.raises(InvalidContextError) as caught:
            validate_user_context(fields)
        assert field == caught.value.field

    def test_error_is_a_value_error_and_an_engine_scope_error(self) -> None:
        """Callers catching ValueError or EngineScopeError both catch it."""
        with pytest.raises(InvalidContextError) as caught:
            UserExecutionContext(**with_(user_id=""))
        assert isinstance(caught.value, ValueError)
        assert isinstance(caught.value, EngineScopeError)

    def test_model_validate_raises_invalid_context_error(self) -> None:
        """model_validate gives the same named error, not a bare ValidationError."""
        with pytest.raises(InvalidContextError) as caught:
            UserExecutionContext.model_validate(with_(thread_id="null"))
        assert caught.value.field == "thread_id"

    def test_model_validate_json_raises_invalid_context_error(self) -> None:
        """model_validate_json names the bad field too, and builds a context from good JSON."""
        good = UserExecutionContext.model_validate_json(json.dumps(VALID))
        with pytest.raises(InvalidContextError) as caught:
            UserExecutionContext.model_validate_json(json.dumps(with_(thread_id="null")))
        with pytest.raises(InvalidContextError) as broken:
            UserExecutionContext.model_validate_json("{not json")
        assert ("user-42", "thread_id") == (good.user_id, caught.value.field)
        assert isinstance(broken.value, ValueError)

    def test_longest_allowed_id_is_accepted(self) -> None:
        """An id of exactly the maximum length is valid."""
        assert len(UserExecutionContext(**with_(user_id="u" * 256)).user_id) == MAX_ID_LENGTH


class TestValidateUserContext:
    def test_returns_the_same_context(self) -> None:
        """A valid context is returned as is, not copied."""
        ctx = UserExecutionContext(**VALID)
        assert ctx is validate_user_context(ctx)

    def test_builds_from_a_mapping(self) -> None:
        """A mapping of valid fields becomes a context."""
        ctx = validate_user_context(VALID)
        assert isinstance(ctx, UserExecutionContext)
        assert ctx.user_id == "user-42"

    @pytest.mark.parametrize("value", [None, "user-42", 42, ["user-42"], object()])
    def test_anything_else_is_refused(self, value: object) -> None:
        """Objects that are neither a context nor a mapping are refused by name."""
        with pytest.raises(InvalidContextError) as caught:
            validate_user_context(value)
        assert caught.value.field == "context"
        assert type(value).__name__ in str(caught.value)


_ID_FIELDS = ("user_id", "thread_id", "run_id")


class TestValidationProperties:
    @given(field=st.sampled_from(_ID_FIELDS), value=st.text(max_size=300))
    def test_any_text_is_accepted_or_refused_by_name(self, field: str, value: str) -> None:
        """For any string, construction either keeps it exactly or names the field."""
        try:
            ctx = UserExecutionContext(**with_(**{field: value}))
        except InvalidContextError as exc:
            assert field == exc.field  # noqa: PT017 - a property: either outcome is checked
        else:
            assert value == getattr(ctx, field)
            assert value.strip() == value
            assert 0 < len(value) <= MAX_ID_LENGTH
            assert value.lower() not in PLACEHOLDER_IDS
            assert value.isprintable()
            assert unicodedata.normalize("NFKC", value).casefold() not in PLACEHOLDER_IDS

    @given(
        field=st.sampled_from(_ID_FIELDS),
        value=st.one_of(
            st.integers(),
            st.floats(),
            st.none(),
            st.lists(st.text()),
            st.sampled_from(sorted(PLACEHOLDER_IDS)).map(str.upper),
            st.text(min_size=257, max_size=400),
            st.text(alphabet=st.characters(max_codepoint=31), min_size=1),
        ),
    )
    def test_generated_bad_ids_are_refused(self, field: str, value: object) -> None:
        """Wrong types, placeholders, oversize and control-character ids are all refused."""
        with pytest.raises(InvalidContextError) as caught:
            UserExecutionContext(**with_(**{field: value}))
        assert field == caught.value.field


INVISIBLE_OR_DECEPTIVE = [
    pytest.param("\u200b", id="zero-width-space-alone"),
    pytest.param("eve\u200b", id="zero-width-space"),
    pytest.param("e\u200cve", id="zero-width-non-joiner"),
    pytest.param("e\u200dve", id="zero-width-joiner"),
    pytest.param("e\u2060ve", id="word-joiner"),
    pytest.param("eve\u202e", id="right-to-left-override"),
    pytest.param("\u202aeve", id="left-to-right-embedding"),
    pytest.param("eve\u2066", id="left-to-right-isolate"),
    pytest.param("eve\u2069", id="pop-directional-isolate"),
    pytest.param("eve\u200f", id="right-to-left-mark"),
    pytest.param("\ufeffeve", id="byte-order-mark"),
    pytest.param("eve\ud800", id="lone-surrogate"),
    pytest.param("e\u00adve", id="soft-hyphen"),
    pytest.param("eve\U000e0041", id="tag-character"),
    pytest.param("eve\ue000", id="private-use"),
    pytest.param("eve\U000f0000", id="supplementary-private-use"),
    pytest.param("eve\u0378", id="unassigned"),
    pytest.param("e\u00a0ve", id="no-break-space-inside"),
    pytest.param("e\u2028ve", id="line-separator"),
    pytest.param("eve\u3164", id="hangul-filler"),
]


class TestInvisibleIdentifiers:
    @pytest.mark.parametrize("value", INVISIBLE_OR_DECEPTIVE)
    @pytest.mark.parametrize("field", [*_ID_FIELDS, "request_id", "websocket_client_id"])
    def test_is_refused_naming_the_field_and_the_code_point(self, field: str, value: str) -> None:
        """An id with a character that does not print as itself is refused; the error
        names the field and the code point, never the raw character."""
        with pytest.raises(InvalidContextError) as caught:
            UserExecutionContext(**with_(**{field: value}))

        bad = next(ch for ch in value if not ch.isprintable() or ch == "\u3164")
        assert field == caught.value.field
        assert f"U+{ord(bad):04X}" in str(caught.value)
        assert bad not in str(caught.value)

    @pytest.mark.parametrize(
        "value", ["user-42", "José-Ñandú", "ユーザー", "a b", "ü", "e\u0301ve", "user@example.com"]
    )
    def test_printable_ids_in_any_script_are_accepted(self, value: str) -> None:
        """Letters of any script, combining marks and inner ASCII spaces are fine."""
        assert value == check_identifier(value)


class TestPlaceholderSpellings:
    @pytest.mark.parametrize(
        "value",
        [
            "\uff4e\uff55\uff4c\uff4c",  # fullwidth "null"
            "\uff2e\uff35\uff2c\uff2c",  # fullwidth "NULL"
            "\uff55\uff4e\uff44\uff45\uff46\uff49\uff4e\uff45\uff44",  # fullwidth
            "\u24dd\u24de\u24dd\u24d4",  # circled "none"
            "NUL\u217c",  # ROMAN NUMERAL FIFTY (NFKC: "l")
            "\u1d3a\u1d41\u1d38\u1d38",  # modifier letters NULL
        ],
    )
    def test_compatibility_forms_of_placeholders_are_refused(self, value: str) -> None:
        """Placeholders are compared after NFKC normalisation and case folding."""
        with pytest.raises(InvalidContextError) as caught:
            UserExecutionContext(**with_(user_id=value))

        assert "user_id" == caught.value.field
        assert "placeholder" in str(caught.value)


ALL_ID_FIELDS = (*_ID_FIELDS, "request_id", "websocket_client_id")
any_id = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.characters(max_codepoint=127), max_size=300),
    st.text(alphabet="abNUL/ \n", max_size=12),
    st.sampled_from(sorted(PLACEHOLDER_IDS)).map(str.upper),
    st.integers(),
    st.binary(max_size=4),
)


def reason_for(value: object) -> str | None:
    """What check_identifier says of ``value``: ``None`` when it accepts it."""
    try:
        check_identifier(value)
    except ValueError as exc:
        return str(exc)
    return None


class TestOneIdentifierRule:
    @given(field=st.sampled_from(ALL_ID_FIELDS), value=any_id)
    def test_the_model_accepts_what_check_identifier_accepts(
        self, field: str, value: object
    ) -> None:
        """Every id field keeps what check_identifier accepts and refuses the rest with
        check_identifier's reason, naming the field."""
        expected = reason_for(value)
        try:
            ctx = UserExecutionContext(**with_(**{field: value}))
        except InvalidContextError as exc:
            assert (field, expected) == (exc.field, exc.reason)  # noqa: PT017 - both outcomes checked
        else:
            assert (None, value) == (expected, getattr(ctx, field))

    @pytest.mark.parametrize(
        ("value", "reason"),
        [
            pytest.param("user-42\n", "control characters (U+000A at index 7)", id="final-newline"),
            pytest.param("n/a", "placeholder value ('n/a')", id="n/a"),
            pytest.param("N/A", "placeholder value ('N/A')", id="N/A"),
            pytest.param("Changeme", "placeholder value ('Changeme')", id="letters-only"),
            pytest.param("u" * 257, "at most 256 characters, got 257", id="letters-too-long"),
            pytest.param("7" * 257, "at most 256 characters, got 257", id="digits-too-long"),
            pytest.param("r-1 ", "leading or trailing whitespace", id="trailing-space"),
        ],
    )
    def test_edge_cases_get_check_identifiers_reason(self, value: str, reason: str) -> None:
        """Ids at the edges of the quick ASCII check get the reason check_identifier gives."""
        with pytest.raises(InvalidContextError) as caught:
            UserExecutionContext(**with_(run_id=value))

        assert "run_id" == caught.value.field
        assert reason in caught.value.reason

    @pytest.mark.parametrize("value", ["alice", "a/b", "7" * 256, "x" * 256, "n a", "~"])
    def test_ids_off_the_quick_path_are_accepted(self, value: str) -> None:
        """Letters-only ids, slashes, inner spaces, one character, the longest ids: all kept."""
        assert value == UserExecutionContext(**with_(run_id=value)).run_id


@pytest.fixture
def restore_limits() -> Iterator[None]:
    before = metadata_limits()
    yield
    set_metadata_limits(max_bytes=before.max_bytes, max_depth=before.max_depth)


def nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"k": value}
    return value


class ReadProbe(list[int]):
    """A metadata value that records whether it was read (to be copied)."""

    reads = 0

    def __iter__(self) -> Iterator[int]:
        ReadProbe.reads += 1
        return super().__iter__()


class TestMetadataLimits:
    def test_defaults(self) -> None:
        """64 KiB of JSON and 32 levels, unless changed."""
        assert MetadataLimits(64 * 1024, 32) == metadata_limits()
        assert (65536, 32) == (DEFAULT_MAX_METADATA_BYTES, DEFAULT_MAX_METADATA_DEPTH)

    def test_metadata_at_the_limits_is_accepted(self) -> None:
        """Metadata of exactly the maximum size, nested to the maximum depth, is kept."""
        overhead = len('{"blob":""}')
        blob = {"blob": "x" * (DEFAULT_MAX_METADATA_BYTES - overhead)}

        assert blob == dict(UserExecutionContext(**VALID, metadata=blob).metadata)
        deep = nested(DEFAULT_MAX_METADATA_DEPTH)
        assert deep == dict(UserExecutionContext(**VALID, metadata=deep).metadata)

    @pytest.mark.parametrize(
        "metadata",
        [
            pytest.param({"blob": "x" * (DEFAULT_MAX_METADATA_BYTES - 10)}, id="one-string"),
            pytest.param({"items": ["ab"] * 20_000}, id="many-items"),
            pytest.param({f"k{i}": i for i in range(10_000)}, id="many-keys"),
            pytest.param({"é": "é" * 30_000}, id="escaped-unicode"),
        ],
    )
    def test_oversize_metadata_is_refused_naming_the_limit(self, metadata: dict[str, Any]) -> None:
        """Metadata over 64 KiB as JSON raises InvalidContextError naming metadata and the
        limit, and says how to raise it."""
        with pytest.raises(InvalidContextError) as caught:
            UserExecutionContext(**VALID, metadata=metadata)

        assert "metadata" == caught.value.field
        assert "at most 65536 bytes" in str(caught.value)
        assert "set_metadata_limits" in str(caught.value)

    def test_fifty_megabytes_are_refused_before_being_copied(self) -> None:
        """50 MB of metadata is refused as soon as the limit is passed: what follows is
        never read, so nothing is copied."""
        ReadProbe.reads = 0
        metadata = {"blob": "x" * 50_000_000, "probe": ReadProbe([1])}

        with pytest.raises(InvalidContextError) as caught:
            UserExecutionContext(**VALID, metadata=metadata)

        assert "metadata" == caught.value.field
        assert 0 == ReadProbe.reads
        ctx = UserExecutionContext(**VALID, metadata={"probe": ReadProbe([1])})
        assert [1] == ctx.metadata["probe"]
        assert 1 <= ReadProbe.reads

    def test_too_deep_metadata_is_refused(self) -> None:
        """Metadata nested deeper than 32 levels is refused, naming the depth."""
        with pytest.raises(InvalidContextError) as caught:
            UserExecutionContext(**VALID, metadata=nested(DEFAULT_MAX_METADATA_DEPTH + 1))

        assert "metadata" == caught.value.field
        assert "at most 32 levels" in str(caught.value)

    def test_very_deep_metadata_is_refused_without_a_recursion_error(self) -> None:
        """Metadata nested 100,000 levels deep is refused by its depth."""
        value: list[Any] = []
        for _ in range(100_000):
            value = [value]

        with pytest.raises(InvalidContextError) as caught:
            UserExecutionContext(**VALID, metadata={"deep": value})

        assert "at most 32 levels" in str(caught.value)

    def test_metadata_that_contains_itself_is_refused(self) -> None:
        """A cycle is refused as such."""
        loop: dict[str, Any] = {}
        loop["self"] = loop

        with pytest.raises(InvalidContextError) as caught:
            UserExecutionContext(**VALID, metadata={"loop": loop})

        assert "must not contain itself" in str(caught.value)

    def test_shared_but_acyclic_metadata_is_accepted(self) -> None:
        """The same list twice is not a cycle."""
        shared = [1, 2]

        ctx = UserExecutionContext(**VALID, metadata={"a": shared, "b": shared})

        assert {"a": [1, 2], "b": [1, 2]} == dict(ctx.metadata)

    @pytest.mark.usefixtures("restore_limits")
    def test_limits_can_be_changed(self) -> None:
        """set_metadata_limits changes the limits of contexts built afterwards and returns
        the previous ones."""
        previous = set_metadata_limits(max_bytes=20, max_depth=2)

        assert MetadataLimits(65536, 32) == previous
        assert MetadataLimits(20, 2) == metadata_limits()
        UserExecutionContext(**VALID, metadata={"a": {"b": 1}})
        with pytest.raises(InvalidContextError, match="at most 2 levels"):
            UserExecutionContext(**VALID, metadata={"a": {"b": {"c": 1}}})
        with pytest.raises(InvalidContextError, match="at most 20 bytes"):
            UserExecutionContext(**VALID, metadata={"a": "x" * 20})

    @pytest.mark.usefixtures("restore_limits")
    def test_none_keeps_a_limit(self) -> None:
        """Passing only one limit leaves the other unchanged."""
        set_metadata_limits(max_depth=4)

        assert MetadataLimits(DEFAULT_MAX_METADATA_BYTES, 4) == metadata_limits()

    @pytest.mark.parametrize("value", [0, -1, 1.5, "64", True])
    @pytest.mark.usefixtures("restore_limits")
    def test_bad_limits_are_refused_by_name(self, value: object) -> None:
        """A limit that is not a positive integer raises InvalidSettingError naming it."""
        with pytest.raises(InvalidSettingError) as caught:
            set_metadata_limits(max_bytes=value)  # type: ignore[arg-type]

        assert "max_bytes" == caught.value.field
        assert MetadataLimits(65536, 32) == metadata_limits()
