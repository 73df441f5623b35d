"""Bad input: hypothesis-generated malformed contexts are refused with an
InvalidContextError naming the field, by the model, the factory and user_scope, and no
slot is ever taken for one."""

from __future__ import annotations

import asyncio
import string
import threading
from typing import Any

import hypothesis.strategies as st
import pytest
from enginescope.containers import user_scope
from enginescope.engines import (
    ExecutionEngineFactory,
    InvalidContextError,
    UserExecutionContext,
)
from enginescope.engines.context import MAX_ID_LENGTH, PLACEHOLDER_IDS, RESERVED_METADATA_KEYS
from enginescope.engines.testing import RecordingBridge
from enginescope.providers import get_current_scope
from hypothesis import given, settings

from tests.reliability.invariants import check_factory

REQUIRED = ("user_id", "thread_id", "run_id")
ID_FIELDS = (*REQUIRED, "request_id", "websocket_client_id")
CONTROL = [chr(c) for c in (*range(32), *range(127, 160))]
SAFE = st.text(alphabet=string.ascii_letters + string.digits + "-_.:@", min_size=1, max_size=8)

wrong_types = st.one_of(
    st.integers(),
    st.floats(allow_nan=True),
    st.binary(min_size=1, max_size=8),
    st.booleans(),
    st.lists(SAFE, max_size=2),
    st.dictionaries(SAFE, SAFE, max_size=2),
)
blank = st.text(alphabet=" \t\n\r\x0b\x0c\u00a0\u2003", max_size=6)
with_control = st.builds(lambda a, c, b: a + c + b, SAFE, st.sampled_from(CONTROL), SAFE)
oversize = st.text(alphabet=string.ascii_letters, min_size=MAX_ID_LENGTH + 1, max_size=700)
padded = st.builds(lambda pad, core: pad + core, st.sampled_from([" ", "  "]), SAFE) | st.builds(
    lambda core, pad: core + pad, SAFE, st.sampled_from([" ", "\u00a0"])
)
placeholder = st.builds(
    lambda word, flips: "".join(
        ch.upper() if flip else ch for ch, flip in zip(word, flips + [False] * 20, strict=False)
    ),
    st.sampled_from(sorted(PLACEHOLDER_IDS)),
    st.lists(st.booleans(), max_size=20),
)
INVISIBLE = [
    "\u200b",  # zero-width space
    "\u200d",  # zero-width joiner
    "\u2060",  # word joiner
    "\u00ad",  # soft hyphen
    "\u202a",  # left-to-right embedding
    "\u202e",  # right-to-left override
    "\u2066",  # left-to-right isolate
    "\u2069",  # pop directional isolate
    "\ufeff",  # byte order mark
    "\ud800",  # lone surrogate
    "\udfff",  # lone surrogate
    "\ue000",  # private use
    "\U0010fffd",  # supplementary private use
    "\u0378",  # unassigned
    "\U000e0001",  # language tag
    "\u3164",  # Hangul filler: a letter that prints blank
]
with_invisible = st.builds(
    lambda a, c, b: a + c + b, SAFE | st.just(""), st.sampled_from(INVISIBLE), SAFE | st.just("")
)
fullwidth_placeholder = st.sampled_from(sorted(PLACEHOLDER_IDS)).map(
    lambda word: "".join(chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in word)
)
bad_id = st.one_of(
    wrong_types,
    blank,
    with_control,
    oversize,
    padded,
    placeholder,
    with_invisible,
    fullwidth_placeholder,
)


def _lock() -> object:
    return threading.Lock()


def _generator() -> object:
    return (n for n in range(3))


def _nested(levels: int) -> object:
    value: object = "leaf"
    for _ in range(levels):
        value = {"k": value}
    return value


uncopyable_or_unserialisable = st.sampled_from(
    [
        object,
        set,
        _lock,
        _generator,
        lambda: float("nan"),
        lambda: float("inf"),
        lambda: b"bytes",
        lambda: 1 + 2j,
        lambda: print,
    ]
).map(lambda make: make())
bad_metadata = st.one_of(
    st.builds(
        lambda key, value, rest: {**rest, key: value},
        st.sampled_from(sorted(RESERVED_METADATA_KEYS)),
        SAFE,
        st.dictionaries(SAFE, SAFE, max_size=2),
    ),
    st.builds(lambda key, value: {key: value}, SAFE, uncopyable_or_unserialisable),
    st.builds(lambda key, value: {"nested": {key: [value]}}, SAFE, uncopyable_or_unserialisable),
    st.builds(lambda key: {key: "x"}, st.integers() | st.tuples(st.integers())),
    st.builds(lambda size: {"blob": "x" * size}, st.integers(65_536, 200_000)),
    st.builds(lambda count: {"items": list(range(count))}, st.integers(40_000, 60_000)),
    st.builds(_nested, st.integers(33, 200)),
    st.one_of(st.lists(SAFE, max_size=2), SAFE, st.integers()),
)


def valid_fields() -> dict[str, Any]:
    return {"user_id": "user-ok", "thread_id": "thread-ok", "run_id": "run-ok"}


@st.composite
def malformed(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """``(field that is wrong, the context mapping)``; every other field is valid."""
    fields = valid_fields()
    kind = draw(st.sampled_from(["id", "required-none", "missing", "metadata", "extra"]))
    if kind == "id":
        field = draw(st.sampled_from(ID_FIELDS))
        fields[field] = draw(bad_id)
    elif kind == "required-none":
        field = draw(st.sampled_from(REQUIRED))
        fields[field] = None
    elif kind == "missing":
        field = draw(st.sampled_from(REQUIRED))
        del fields[field]
    elif kind == "metadata":
        field = "metadata"
        fields[field] = draw(bad_metadata)
    else:
        field = draw(SAFE.filter(lambda name: name not in UserExecutionContext.model_fields))
        fields[field] = draw(SAFE)
    return field, fields


def _factory() -> ExecutionEngineFactory:
    return ExecutionEngineFactory(RecordingBridge())


class TestMalformedContexts:
    @settings(max_examples=300, deadline=None)
    @given(case=malformed())
    def test_the_model_names_the_bad_field(self, case: tuple[str, dict[str, Any]]) -> None:
        """Building a context from a malformed mapping raises InvalidContextError (a
        ValueError) whose field is the bad one."""
        field, fields = case
        with pytest.raises(InvalidContextError) as error:
            UserExecutionContext(**fields)
        assert field == error.value.field
        assert isinstance(error.value, ValueError)
        assert repr(field) in str(error.value)

    @settings(max_examples=150, deadline=None)
    @given(case=malformed())
    def test_the_factory_refuses_it_and_takes_no_slot(
        self, case: tuple[str, dict[str, Any]]
    ) -> None:
        """create_for_user(mapping) raises InvalidContextError naming the field, counts a
        creation error, and holds no slot and no engine."""
        field, fields = case

        async def attempt() -> None:
            factory = _factory()
            with pytest.raises(InvalidContextError) as error:
                await factory.create_for_user(fields)  # type: ignore[arg-type]
            assert field == error.value.field
            metrics = factory.get_factory_metrics()
            assert (1, 0, 0) == (
                metrics["creation_errors"],
                metrics["total_engines_created"],
                factory.slot_ledger.total(),  # type: ignore[attr-defined]
            )
            check_factory(factory)
            await factory.shutdown()

        asyncio.run(attempt())

    @settings(max_examples=150, deadline=None)
    @given(case=malformed())
    def test_user_scope_refuses_it_before_entering_a_scope(
        self, case: tuple[str, dict[str, Any]]
    ) -> None:
        """user_scope(mapping) raises InvalidContextError naming the field before any scope
        is entered."""
        field, fields = case
        with pytest.raises(InvalidContextError) as error:
            user_scope(fields)
        assert field == error.value.field
        assert get_current_scope() is None

    @pytest.mark.parametrize("value", [None, "u-1", 42, ["u-1"], object()])
    async def test_a_non_context_is_refused_as_a_whole(self, value: object) -> None:
        """Anything but a context or a mapping is refused with field 'context'."""
        factory = _factory()
        with pytest.raises(InvalidContextError) as error:
            await factory.create_for_user(value)  # type: ignore[arg-type]
        assert "context" == error.value.field
        assert 0 == factory.slot_ledger.total()  # type: ignore[attr-defined]
        await factory.shutdown()
