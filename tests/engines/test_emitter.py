"""UserWebSocketEmitter: the event envelope, sanitising, isolation and delivery accounting."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from enginescope.engines.bridge import (
    AgentWebSocketBridge,
    InvalidWebSocketBridgeError,
    WebSocketBridge,
)
from enginescope.engines.emitter import EVENT_TYPES, UserWebSocketEmitter, sanitize
from enginescope.engines.errors import InvalidContextError, InvalidEventSettingError
from enginescope.engines.sanitize import TOKEN_COUNT_KEYS
from enginescope.engines.testing import FakeSocket, RecordingBridge
from enginescope.errors import EngineScopeError
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

USER = "user-42"
ENVELOPE_KEYS = {"type", "user_id", "thread_id", "run_id", "agent_name", "timestamp", "seq", "data"}
SECRET_WORDS = (
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


def make_emitter(
    bridge: WebSocketBridge | None = None, user_id: str = USER, run_id: str = "run-1"
) -> UserWebSocketEmitter:
    return UserWebSocketEmitter(user_id, "thread-1", run_id, bridge or RecordingBridge())


TOKEN_COUNTS = ("max_tokens", "maxOutputTokens", "total_tokens", "prompt_tokens", "token_count")


def is_secret_key(key: str) -> bool:
    """The oracle: a key naming a secret word is secret, unless it is one of the documented
    LLM token counts (the library's exempt names: policy, not detection)."""
    normal = re.sub(r"[^0-9a-z]+", "", key.lower())
    exempt = {re.sub(r"[^0-9a-z]+", "", count.lower()) for count in TOKEN_COUNTS}
    exempt |= TOKEN_COUNT_KEYS
    return normal not in exempt and any(word in normal for word in SECRET_WORDS)


def secret_keys_keep_no_value(value: object) -> bool:
    if isinstance(value, dict):
        return all(
            (not is_secret_key(key) or item == "[REDACTED]") and secret_keys_keep_no_value(item)
            for key, item in value.items()
        )
    if isinstance(value, list):
        return all(secret_keys_keep_no_value(item) for item in value)
    return True


async def emit_the_five(emitter: UserWebSocketEmitter) -> list[int]:
    return [
        await emitter.notify_agent_started("triage", message="hello"),
        await emitter.notify_agent_thinking("triage", "reading the ticket", step=1),
        await emitter.notify_tool_executing("triage", "search", {"query": "refund"}),
        await emitter.notify_tool_completed("triage", "search", ["doc-1"], duration_ms=12.5),
        await emitter.notify_agent_completed("triage", {"answer": 42}, duration_ms=80.0),
    ]


class TestEnvelope:
    """Every event carries the run's identity, a sequence number and typed data."""

    @pytest.mark.asyncio
    async def test_the_five_events_in_order_with_full_envelope(self) -> None:
        """A run's five events arrive in order, numbered 1..5, with a UTC ISO timestamp."""
        bridge = RecordingBridge()
        emitter = make_emitter(bridge)

        reached = await emit_the_five(emitter)

        events = bridge.events_for(USER)
        assert [1, 1, 1, 1, 1] == reached
        assert list(EVENT_TYPES[:5]) == [event["type"] for event in events]
        assert [1, 2, 3, 4, 5] == [event["seq"] for event in events]
        for event in events:
            assert ENVELOPE_KEYS == set(event)
            assert (
                event["user_id"],
                event["thread_id"],
                event["run_id"],
            ) == (USER, "thread-1", "run-1")
            assert "triage" == event["agent_name"]
            assert UTC.utcoffset(None) == datetime.fromisoformat(event["timestamp"]).utcoffset()

    @pytest.mark.asyncio
    async def test_data_of_each_event_type(self) -> None:
        """Each event type carries its documented data fields."""
        bridge = RecordingBridge()
        await emit_the_five(make_emitter(bridge))

        assert [
            {"message": "hello"},
            {"thought": "reading the ticket", "step": 1},
            {"tool_name": "search", "parameters": {"query": "refund"}},
            {"tool_name": "search", "result": ["doc-1"], "duration_ms": 12.5, "error": None},
            {"result": {"answer": 42}, "duration_ms": 80.0},
        ] == [event["data"] for event in bridge.events_for(USER)]

    @pytest.mark.asyncio
    async def test_agent_error_from_an_exception(self) -> None:
        """An exception becomes its message and its class name."""
        bridge = RecordingBridge()
        await make_emitter(bridge).notify_agent_error(
            "triage", ValueError("bad input"), duration_ms=3.0
        )

        [event] = bridge.events_for(USER)
        assert "agent_error" == event["type"]
        assert 1 == event["seq"]
        assert {
            "error": "bad input",
            "error_type": "ValueError",
            "duration_ms": 3.0,
        } == event["data"]

    @pytest.mark.parametrize(
        ("error", "expected"),
        [
            ("it broke", {"error": "it broke", "error_type": None, "duration_ms": None}),
            (
                TimeoutError(),
                {"error": "TimeoutError", "error_type": "TimeoutError", "duration_ms": None},
            ),
        ],
    )
    @pytest.mark.asyncio
    async def test_agent_error_from_a_string_or_an_empty_exception(
        self, error: BaseException | str, expected: dict[str, Any]
    ) -> None:
        """A string is the message as is; an exception without a message gives its type."""
        bridge = RecordingBridge()
        await make_emitter(bridge).notify_agent_error("triage", error)

        assert expected == bridge.events_for(USER)[0]["data"]

    @pytest.mark.asyncio
    async def test_agent_started_merges_data_but_keeps_its_message(self) -> None:
        """agent_started adds the given data items; the explicit message wins."""
        bridge = RecordingBridge()
        await make_emitter(bridge).notify_agent_started(
            "triage", message="hi", data={"message": "ignored", "model": "small", "token": "t"}
        )

        expected = {"message": "hi", "model": "small", "token": "[REDACTED]"}
        assert expected == bridge.events_for(USER)[0]["data"]

    @pytest.mark.asyncio
    async def test_tool_executing_without_parameters(self) -> None:
        """A tool without parameters reports an empty mapping."""
        bridge = RecordingBridge()
        await make_emitter(bridge).notify_tool_executing("triage", "clock")

        assert {"tool_name": "clock", "parameters": {}} == bridge.events_for(USER)[0]["data"]

    @pytest.mark.asyncio
    async def test_long_thought_is_truncated(self) -> None:
        """A thought longer than the string limit is cut with a marker."""
        bridge = RecordingBridge()
        await make_emitter(bridge).notify_agent_thinking("triage", "x" * 2500)

        thought = bridge.events_for(USER)[0]["data"]["thought"]
        assert "x" * 2000 + "…[truncated 500 chars]" == thought

    @pytest.mark.asyncio
    async def test_concurrent_notifications_get_distinct_increasing_seq(self) -> None:
        """Events emitted concurrently still get seq 1..n, each once, in send order."""
        bridge = RecordingBridge()
        emitter = make_emitter(bridge)

        await asyncio.gather(*(emitter.notify_agent_thinking("a", f"t{i}") for i in range(50)))

        assert list(range(1, 51)) == [event["seq"] for event in bridge.events_for(USER)]

    @pytest.mark.asyncio
    async def test_envelope_is_json_serialisable(self) -> None:
        """Every envelope survives json.dumps, even with unusual tool results."""
        bridge = RecordingBridge()
        emitter = make_emitter(bridge)
        await emitter.notify_tool_completed("a", "t", {"when": datetime.now(UTC), "raw": b"xy"})
        await emitter.notify_agent_completed("a", object(), duration_ms=math.nan)

        for event in bridge.events_for(USER):
            json.dumps(event, allow_nan=False)

    @pytest.mark.asyncio
    async def test_repr_names_user_run_seq_and_state(self) -> None:
        """The repr says whose emitter it is, how far it got and whether it is closed."""
        emitter = make_emitter(user_id="u-42", run_id="r1")
        for _ in range(3):
            await emitter.notify_agent_thinking("a", "t")

        assert "<UserWebSocketEmitter user_id='u-42' run_id='r1' seq=3 closed=False>" == repr(
            emitter
        )


class TestIsolation:
    """An emitter can only ever address its own user."""

    @pytest.mark.asyncio
    async def test_every_event_goes_to_the_emitters_user(self) -> None:
        """Data that names another user changes neither the recipient nor the envelope."""
        bridge = RecordingBridge()
        emitter = make_emitter(bridge)
        await emitter.notify_agent_started("a", data={"user_id": "victim"})
        await emitter.notify_tool_executing("a", "t", {"user_id": "victim", "run_id": "x"})
        await emitter.notify_tool_completed("a", "t", {"user_id": "victim"})

        assert [USER] == bridge.user_ids()
        assert [USER, USER, USER] == [event["user_id"] for event in bridge.events_for(USER)]
        assert [] == bridge.events_for("victim")

    @pytest.mark.asyncio
    async def test_two_emitters_on_one_bridge_stay_apart(self) -> None:
        """Two users' emitters sharing a bridge each reach only their own user."""
        bridge = RecordingBridge()
        alice, bob = make_emitter(bridge, "alice"), make_emitter(bridge, "bob")

        await asyncio.gather(emit_the_five(alice), emit_the_five(bob))

        for user_id in ("alice", "bob"):
            events = bridge.events_for(user_id)
            assert {user_id} == {event["user_id"] for event in events}
            assert [1, 2, 3, 4, 5] == [event["seq"] for event in events]

    def test_user_id_is_read_only(self) -> None:
        """The identity of an emitter cannot be reassigned."""
        emitter = make_emitter()

        with pytest.raises(AttributeError):
            emitter.user_id = "someone-else"  # type: ignore[misc]


class TestDelivery:
    """The emitter counts what reached a connection and never raises into the agent."""

    @pytest.mark.asyncio
    async def test_counts_sent_and_undelivered(self) -> None:
        """Events reaching a connection count as sent; those reaching none as undelivered."""
        bridge = RecordingBridge(connections=2)
        emitter = make_emitter(bridge)
        assert 2 == await emitter.notify_agent_thinking("a", "t")
        bridge.set_connections(0)
        assert 0 == await emitter.notify_agent_thinking("a", "t")

        assert (1, 1) == (emitter.events_sent, emitter.events_undelivered)

    @pytest.mark.asyncio
    async def test_closed_emitter_sends_nothing(self) -> None:
        """After close() notifications send nothing, return 0 and count as undelivered."""
        bridge = RecordingBridge()
        emitter = make_emitter(bridge)
        await emitter.close()
        await emitter.close()

        reached = await emit_the_five(emitter)

        assert [0, 0, 0, 0, 0] == reached
        assert [] == bridge.events
        assert (True, 0, 5) == (emitter.is_closed, emitter.events_sent, emitter.events_undelivered)
        assert "closed=True" in repr(emitter)

    @pytest.mark.asyncio
    async def test_failing_bridge_is_counted_and_logged_not_raised(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A bridge that raises costs the event, is logged with the run's ids, and is survived."""
        bridge = RecordingBridge(fail_with=ConnectionError("redis down"))
        emitter = make_emitter(bridge)

        with caplog.at_level(logging.WARNING, logger="enginescope.engines.emitter"):
            reached = await emitter.notify_agent_started("a")

        assert 0 == reached
        assert (0, 1) == (emitter.events_sent, emitter.events_undelivered)
        [record] = caplog.records
        assert (
            record.user_id,  # type: ignore[attr-defined]
            record.run_id,  # type: ignore[attr-defined]
            record.event_type,  # type: ignore[attr-defined]
            record.seq,  # type: ignore[attr-defined]
        ) == (USER, "run-1", "agent_started", 1)

    @pytest.mark.asyncio
    async def test_bridge_recovering_continues_the_sequence(self) -> None:
        """After a failed send the next event goes out with the next seq."""
        bridge = RecordingBridge()
        emitter = make_emitter(bridge)
        bridge.fail_with()
        await emitter.notify_agent_started("a")
        bridge.recover()
        await emitter.notify_agent_completed("a")

        assert [2] == [event["seq"] for event in bridge.events_for(USER)]

    @pytest.mark.asyncio
    async def test_cancellation_is_not_swallowed(self) -> None:
        """A cancelled send propagates CancelledError instead of being counted."""
        bridge = RecordingBridge(fail_with=asyncio.CancelledError())
        emitter = make_emitter(bridge)

        with pytest.raises(asyncio.CancelledError):
            await emitter.notify_agent_started("a")

    @pytest.mark.parametrize("answer", [None, "3", True, -1])
    @pytest.mark.asyncio
    async def test_nonsense_bridge_answer_counts_as_undelivered(self, answer: object) -> None:
        """A bridge answer that is not a positive count is taken as 0 connections."""

        class OddBridge:
            async def send_to_user(self, user_id: str, event: object) -> object:
                return answer

        emitter = UserWebSocketEmitter(USER, "t", "r", OddBridge())  # type: ignore[arg-type]

        assert 0 == await emitter.notify_agent_started("a")
        assert 1 == emitter.events_undelivered

    @pytest.mark.asyncio
    async def test_through_the_real_bridge_to_a_socket(self) -> None:
        """With an AgentWebSocketBridge the user's socket receives the five events in order."""
        bridge = AgentWebSocketBridge()
        socket = FakeSocket()
        bridge.register_connection(USER, socket)
        try:
            await emit_the_five(make_emitter(bridge))
            await bridge.flush()
        finally:
            await bridge.close()

        assert list(EVENT_TYPES[:5]) == socket.types()

    @pytest.mark.asyncio
    async def test_odd_names_and_broken_exceptions_still_make_events(self) -> None:
        """A non-string agent name and an exception whose str() fails still give an event."""

        class UnprintableError(Exception):
            def __str__(self) -> str:
                raise RuntimeError("no str")

        bridge = RecordingBridge()
        emitter = make_emitter(bridge)
        await emitter.notify_agent_error(42, UnprintableError())  # type: ignore[arg-type]

        [event] = bridge.events_for(USER)
        assert ("42", "UnprintableError", "UnprintableError") == (
            event["agent_name"],
            event["data"]["error"],
            event["data"]["error_type"],
        )


class TestRecordingBridge:
    """The reusable RecordingBridge records per user and can be told what to answer."""

    @pytest.mark.asyncio
    async def test_per_user_connection_counts(self) -> None:
        """set_connections answers per user, or for everybody, and resets per-user answers."""
        bridge = RecordingBridge()
        bridge.set_connections(0, "offline")

        answers = [await bridge.send_to_user(u, {"type": "x"}) for u in ("online", "offline")]
        bridge.set_connections(3)
        answers.append(await bridge.send_to_user("offline", {"type": "x"}))

        assert [1, 0, 3] == answers
        assert ["online", "offline"] == bridge.user_ids()
        assert "<RecordingBridge events=3 users=2>" == repr(bridge)

    @pytest.mark.asyncio
    async def test_records_a_snapshot_and_clears(self) -> None:
        """A recorded event does not change when the sender mutates it; clear() forgets all."""
        bridge = RecordingBridge()
        sent: dict[str, Any] = {"type": "x", "data": {"n": 1}}
        await bridge.send_to_user("u", sent)
        sent["data"]["n"] = 2

        assert [{"type": "x", "data": {"n": 1}}] == bridge.events_for("u")
        bridge.clear()
        assert ([], 0) == (bridge.events, bridge.attempts)

    @pytest.mark.asyncio
    async def test_uncopyable_events_are_recorded_shallowly(self) -> None:
        """An event holding something deepcopy refuses is still recorded."""

        class NoCopy:
            def __deepcopy__(self, memo: object) -> NoCopy:
                raise TypeError("no copies")

        bridge = RecordingBridge()
        marker = NoCopy()
        await bridge.send_to_user("u", {"type": "x", "obj": marker})

        assert marker is bridge.events_for("u")[0]["obj"]

    @pytest.mark.asyncio
    async def test_wait_for_events(self) -> None:
        """wait_for_events returns once enough events for the user were recorded."""
        bridge = RecordingBridge()

        async def later() -> None:
            for n in range(3):
                await asyncio.sleep(0)
                await bridge.send_to_user("u" if n else "other", {"seq": n})

        task = asyncio.create_task(later())
        events = await bridge.wait_for_events(2, user_id="u")
        everything = await bridge.wait_for_events(3)
        await task

        assert ([1, 2], 3) == ([event["seq"] for event in events], len(everything))


class TestConstruction:
    """The emitter refuses to be built without a real identity and bridge."""

    @pytest.mark.parametrize("field", ["user_id", "thread_id", "run_id"])
    @pytest.mark.parametrize("bad", ["", "   ", None, 42])
    def test_invalid_ids_are_named(self, field: str, bad: object) -> None:
        """An empty, blank or non-string id raises InvalidContextError naming the field."""
        ids: dict[str, Any] = {"user_id": "u", "thread_id": "t", "run_id": "r", field: bad}

        with pytest.raises(InvalidContextError) as caught:
            UserWebSocketEmitter(**ids, websocket_bridge=RecordingBridge())

        assert field == caught.value.field

    @pytest.mark.parametrize("bad", [None, object(), "bridge"])
    def test_invalid_bridge(self, bad: object) -> None:
        """A missing bridge or one without send_to_user is a TypeError naming the argument."""
        with pytest.raises(InvalidWebSocketBridgeError, match="websocket_bridge") as caught:
            UserWebSocketEmitter("u", "t", "r", bad)  # type: ignore[arg-type]

        assert isinstance(caught.value, TypeError)
        assert isinstance(caught.value, EngineScopeError)
        assert "websocket_bridge" == caught.value.field

    def test_exposes_its_ids(self) -> None:
        """The ids given are exposed unchanged."""
        emitter = UserWebSocketEmitter("u", "t", "r", RecordingBridge())

        assert ("u", "t", "r", False) == (
            emitter.user_id,
            emitter.thread_id,
            emitter.run_id,
            emitter.is_closed,
        )


@dataclasses.dataclass
class Login:
    user: str
    password: str


class Credentials(BaseModel):
    user: str
    api_key: str


class BrokenRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


class TestSanitize:
    """sanitize() makes any value JSON-ready, bounded and free of secret values."""

    @pytest.mark.parametrize("key", TOKEN_COUNTS)
    def test_token_counts_are_not_secrets(self, key: str) -> None:
        """LLM token counts such as max_tokens keep their values; auth tokens do not."""
        assert {key: 256, "auth_token": "[REDACTED]"} == sanitize({key: 256, "auth_token": "t"})

    @pytest.mark.parametrize(
        "key",
        [
            "password",
            "PASSWORD",
            "db_password",
            "passwd",
            "client_secret",
            "Secret",
            "token",
            "accessToken",
            "REFRESH_TOKEN",
            "api_key",
            "apiKey",
            "API-KEY",
            "x-api-key",
            "Authorization",
            "credentials",
            "private_key",
            "PrivateKey",
            "Cookie",
            "set-cookie",
            "session_key",
        ],
    )
    @pytest.mark.parametrize("depth", [0, 1, 3])
    def test_secret_keys_are_redacted_at_any_depth(self, key: str, depth: int) -> None:
        """A key that looks secret has its value replaced, however deep it sits."""
        value: object = {key: "hunter2", "visible": "ok"}
        for _ in range(depth):
            value = {"outer": [value]}

        result = sanitize(value)
        for _ in range(depth):
            assert isinstance(result, dict)
            [result] = result["outer"]

        assert {key: "[REDACTED]", "visible": "ok"} == result

    def test_secret_containers_are_redacted_whole(self) -> None:
        """A secret key holding a structure loses the whole structure."""
        assert {"credentials": "[REDACTED]"} == sanitize({"credentials": {"user": "u", "pw": 1}})

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("x" * 12, "x" * 10 + "…[truncated 2 chars]"),
            ("x" * 10, "x" * 10),
            (list(range(13)), [*range(10), "…[3 more items]"]),
            (tuple(range(11)), [*range(10), "…[1 more items]"]),
            (list(range(10)), list(range(10))),
        ],
    )
    def test_long_strings_and_sequences_are_truncated(
        self, value: object, expected: object
    ) -> None:
        """Strings and sequences beyond the limits are cut, with a marker of how much."""
        assert expected == sanitize(value, max_string=10, max_items=10)

    def test_long_mappings_are_truncated(self) -> None:
        """A mapping beyond max_items keeps its first items and says how many were cut."""
        result = sanitize({f"k{i}": i for i in range(5)}, max_items=2)

        assert {"k0": 0, "k1": 1, "…": "[3 more items]"} == result

    def test_nesting_beyond_max_depth_is_cut(self) -> None:
        """Containers nested deeper than max_depth become a marker."""
        value: object = "leaf"
        for _ in range(4):
            value = [value]

        assert [[["[MAX DEPTH]"]]] == sanitize(value, max_depth=3)
        assert [[[["leaf"]]]] == sanitize(value, max_depth=4)

    def test_cycles_are_cut(self) -> None:
        """A structure that contains itself is cut where it loops."""
        loop: dict[str, Any] = {"name": "a"}
        loop["self"] = loop
        items: list[Any] = [1]
        items.append(items)

        assert {"name": "a", "self": "[CYCLE]"} == sanitize(loop)
        assert [1, "[CYCLE]"] == sanitize(items)

    def test_shared_but_acyclic_values_are_kept(self) -> None:
        """The same object twice (not a cycle) is converted twice."""
        shared = {"a": 1}

        assert [{"a": 1}, {"a": 1}] == sanitize([shared, shared])

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (b"abc", "<3 bytes>"),
            (bytearray(5), "<5 bytes>"),
            (math.nan, "nan"),
            (-math.inf, "-inf"),
            (2**2000, "<int of 2001 bits>"),
            (datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), "2024-01-02T03:04:05+00:00"),
            (
                {2: "a", None: "b", True: "c", 1.5: "d"},
                {"2": "a", "null": "b", "true": "c", "1.5": "d"},
            ),
            ({("t", 1): "v"}, {"('t', 1)": "v"}),
            (Login("ann", "pw"), {"user": "ann", "password": "[REDACTED]"}),
            (Credentials(user="ann", api_key="k"), {"user": "ann", "api_key": "[REDACTED]"}),
            (BrokenRepr(), "<unrepresentable BrokenRepr>"),
            ("lone \ud800 surrogate", "lone ? surrogate"),
            (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
            (None, None),
            (True, True),
        ],
    )
    def test_non_json_values(self, value: object, expected: object) -> None:
        """Non-JSON values get a JSON stand-in; records are sanitised field by field."""
        assert expected == sanitize(value)

    def test_other_objects_become_their_type_name_never_their_repr(self) -> None:
        """An object without fields becomes its type name; its repr is never sent."""

        class Thing:
            __slots__ = ()

            def __repr__(self) -> str:
                return "<Thing password=hunter2>"

        assert "<unrepresentable Thing>" == sanitize(Thing(), max_string=10)

    def test_long_secret_keys_are_redacted(self) -> None:
        """A long key whose secret word sits past the truncation point is still redacted."""
        key = "x" * 80 + "_password"

        result = sanitize({key: "hunter2"}, max_string=10)

        assert {"xxxxxxxxxx…[truncated 79 chars]": "[REDACTED]"} == result

    def test_hostile_containers_become_a_marker_not_a_repr(self) -> None:
        """A mapping that fails while being read is replaced by a marker, never its repr."""

        class Hostile(dict[str, str]):
            def items(self) -> Any:
                raise RuntimeError("nope")

        assert "<unrepresentable Hostile>" == sanitize(Hostile({"password": "hunter2"}))

    def test_input_is_not_mutated(self) -> None:
        """Sanitising copies; the caller's value is untouched."""
        original = {"password": "p", "items": list(range(200))}

        sanitize(original)

        assert {"password": "p", "items": list(range(200))} == original

    @pytest.mark.parametrize(
        "limits", [{"max_string": -1}, {"max_items": "x"}, {"max_depth": None}]
    )
    def test_never_raises_even_with_bad_limits(self, limits: dict[str, Any]) -> None:
        """Nonsense limits still give a JSON-ready answer instead of an exception."""
        json.dumps(sanitize({"a": ["b" * 3]}, **limits))

    @given(
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers()
            | st.floats()
            | st.text(max_size=30)
            | st.binary(max_size=10)
            | st.builds(object),
            lambda children: (
                st.lists(children, max_size=6)
                | st.tuples(children, children)
                | st.dictionaries(
                    st.sampled_from([*SECRET_WORDS, "API-Key", "Auth_Token", "name", "x"])
                    | st.text(max_size=12)
                    | st.integers(),
                    children,
                    max_size=6,
                )
            ),
            max_leaves=40,
        ),
        st.integers(min_value=0, max_value=20),
        st.integers(min_value=0, max_value=8),
        st.integers(min_value=0, max_value=6),
    )
    @settings(max_examples=300, deadline=None)
    def test_property_json_ready_and_no_secret_value_survives(
        self, value: object, max_string: int, max_items: int, max_depth: int
    ) -> None:
        """Any value gives strict JSON, without raising, and no secret key keeps its value."""
        result = sanitize(value, max_string=max_string, max_items=max_items, max_depth=max_depth)

        json.dumps(result, allow_nan=False)
        assert secret_keys_keep_no_value(result)


class TestStreamedTextAndStops:
    """agent_text_delta coalescing settings and the agent_stopped event."""

    def test_the_new_event_types_are_listed(self) -> None:
        """EVENT_TYPES names streamed text and the stopped run's final event."""
        assert {"agent_text_delta", "agent_stopped"} <= set(EVENT_TYPES)

    @pytest.mark.parametrize(
        ("option", "value"),
        [
            ("text_delta_interval_seconds", -1),
            ("text_delta_interval_seconds", math.nan),
            ("text_delta_interval_seconds", "fast"),
            ("text_delta_max_chars", 0),
            ("text_delta_max_chars", 2001),
            ("text_delta_max_chars", 1.5),
            ("text_delta_max_chars", True),
        ],
    )
    def test_bad_coalescing_settings_are_refused_by_name(self, option: str, value: Any) -> None:
        """A bad coalescing setting is an InvalidEventSettingError naming the option."""
        with pytest.raises(InvalidEventSettingError, match=option) as caught:
            UserWebSocketEmitter(USER, "t", "r", RecordingBridge(), **{option: value})
        assert option == caught.value.field
        assert isinstance(caught.value, ValueError)

    @pytest.mark.asyncio
    async def test_agent_stopped_carries_reason_and_message(self) -> None:
        """agent_stopped has the stop reason, a message and the duration."""
        bridge = RecordingBridge()
        await make_emitter(bridge).notify_agent_stopped(
            "triage", "timeout", message="timed out after 1s", duration_ms=1000.0
        )
        [event] = bridge.events_for(USER)
        assert ENVELOPE_KEYS == set(event)
        assert ("agent_stopped", 1) == (event["type"], event["seq"])
        assert {
            "reason": "timeout",
            "message": "timed out after 1s",
            "duration_ms": 1000.0,
        } == event["data"]

    @pytest.mark.asyncio
    async def test_waiting_text_is_flushed_before_any_other_event(self) -> None:
        """Buffered text goes out just before the next non-text event of the run."""
        bridge = RecordingBridge()
        emitter = UserWebSocketEmitter(USER, "t", "r", bridge, text_delta_interval_seconds=3600)
        await emitter.notify_agent_text_delta("triage", "a")
        await emitter.notify_agent_text_delta("triage", "b")
        await emitter.notify_agent_thinking("triage", "hmm")
        assert [("agent_text_delta", "a"), ("agent_text_delta", "b"), ("agent_thinking", None)] == [
            (event["type"], event["data"].get("delta")) for event in bridge.events_for(USER)
        ]

    @pytest.mark.asyncio
    async def test_text_of_another_agent_flushes_the_first(self) -> None:
        """Text waiting for one agent name is sent before text of another is buffered."""
        bridge = RecordingBridge()
        emitter = UserWebSocketEmitter(USER, "t", "r", bridge, text_delta_interval_seconds=3600)
        for agent, text in (("one", "a"), ("one", "b"), ("two", "c")):
            await emitter.notify_agent_text_delta(agent, text)
        await emitter.flush_text()
        assert [("one", "a"), ("one", "b"), ("two", "c")] == [
            (event["agent_name"], event["data"]["delta"]) for event in bridge.events_for(USER)
        ]

    @pytest.mark.asyncio
    async def test_close_drops_waiting_text(self) -> None:
        """Text still waiting when the emitter closes is never sent."""
        bridge = RecordingBridge()
        emitter = UserWebSocketEmitter(USER, "t", "r", bridge, text_delta_interval_seconds=3600)
        await emitter.notify_agent_text_delta("triage", "sent")
        await emitter.notify_agent_text_delta("triage", "waiting")
        await emitter.close()
        await emitter.notify_agent_text_delta("triage", "after")
        assert 0 == await emitter.flush_text()
        assert ["sent"] == [event["data"]["delta"] for event in bridge.events_for(USER)]
