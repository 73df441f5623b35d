"""One identifier rule at every door: the context, the emitter, the bridge, the factory and
user_scope refuse the same invisible, deceptive and placeholder ids, naming the field, and
nothing is held for a refused id."""

from __future__ import annotations

import string

import hypothesis.strategies as st
import pytest
from enginescope.containers import user_scope
from enginescope.engines import (
    AgentWebSocketBridge,
    ExecutionEngineFactory,
    InvalidContextError,
    UserExecutionContext,
    UserWebSocketEmitter,
)
from enginescope.engines.testing import FakeSocket, RecordingBridge
from enginescope.providers import get_current_scope
from hypothesis import given, settings

from tests.reliability.test_bad_input import INVISIBLE, fullwidth_placeholder

SAFE = st.text(alphabet=string.ascii_letters + string.digits + "-_.:@", min_size=1, max_size=8)
deceptive = st.one_of(
    st.builds(lambda a, c, b: a + c + b, SAFE, st.sampled_from(INVISIBLE), SAFE),
    st.builds(lambda a, c: a + c, SAFE, st.sampled_from(INVISIBLE)),
    st.builds(lambda c, b: c + b, st.sampled_from(INVISIBLE), SAFE),
    fullwidth_placeholder,
    st.sampled_from(["null", "None", "undefined", "\u200b", "eve\ud800", "\ufeffeve"]),
)
VALID = {"user_id": "user-ok", "thread_id": "thread-ok", "run_id": "run-ok"}


class TestOneRuleAtEveryDoor:
    @settings(max_examples=200, deadline=None)
    @given(value=deceptive)
    def test_the_context_refuses_it(self, value: str) -> None:
        """UserExecutionContext refuses the id, naming the field."""
        with pytest.raises(InvalidContextError) as caught:
            UserExecutionContext(**{**VALID, "user_id": value})
        assert "user_id" == caught.value.field

    @settings(max_examples=200, deadline=None)
    @given(value=deceptive, field=st.sampled_from(["user_id", "thread_id", "run_id"]))
    def test_the_emitter_refuses_it(self, value: str, field: str) -> None:
        """UserWebSocketEmitter refuses the id as the context does, naming the field."""
        ids = {**VALID, field: value}
        with pytest.raises(InvalidContextError) as caught:
            UserWebSocketEmitter(ids["user_id"], ids["thread_id"], ids["run_id"], RecordingBridge())
        assert field == caught.value.field

    @settings(max_examples=200, deadline=None)
    @given(value=deceptive)
    async def test_the_bridge_refuses_it_and_holds_no_connection(self, value: str) -> None:
        """register_connection refuses the id, naming user_id, and holds nothing."""
        bridge = AgentWebSocketBridge()
        with pytest.raises(InvalidContextError) as caught:
            bridge.register_connection(value, FakeSocket())
        assert "user_id" == caught.value.field
        assert 0 == bridge.connection_count()
        await bridge.aclose()

    @settings(max_examples=100, deadline=None)
    @given(value=deceptive)
    async def test_the_factory_refuses_it_and_takes_no_slot(self, value: str) -> None:
        """create_for_user(mapping) refuses the id and takes no slot."""
        factory = ExecutionEngineFactory(RecordingBridge())
        with pytest.raises(InvalidContextError) as caught:
            await factory.create_for_user({**VALID, "user_id": value})  # type: ignore[arg-type]
        assert "user_id" == caught.value.field
        assert 0 == factory.slot_ledger.total()  # type: ignore[attr-defined]
        await factory.shutdown()

    @settings(max_examples=100, deadline=None)
    @given(value=deceptive)
    def test_user_scope_refuses_it_before_entering_a_scope(self, value: str) -> None:
        """user_scope(mapping) refuses the id before any scope is entered."""
        with pytest.raises(InvalidContextError) as caught:
            user_scope({**VALID, "user_id": value})
        assert "user_id" == caught.value.field
        assert get_current_scope() is None
