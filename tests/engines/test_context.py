"""UserExecutionContext and validate_user_context."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from enginescope.engines import (
    EngineScopeError,
    InvalidContextError,
    UserExecutionContext,
    validate_user_context,
)
from enginescope.engines.context import MAX_ID_LENGTH, PLACEHOLDER_IDS
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
        assert first.request_id != second.request_id
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
