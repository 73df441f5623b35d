"""from_pydantic_ai: a pydantic-ai agent's run as enginescope events, offline."""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from enginescope.engines import AgentRun, FrameworkNotInstalledError
from enginescope.engines.adapters.pydantic_ai import from_pydantic_ai
from enginescope.engines.testing import RecordingBridge
from pydantic import BaseModel
from pydantic_ai import Agent, ModelRetry, RunContext
from pydantic_ai.messages import ModelMessage, ModelRequest, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, DeltaThinkingPart, DeltaToolCall, FunctionModel
from pydantic_ai.models.test import TestModel

from .conftest import MakeEngine, deltas, without_deltas

REPLY = ["The ", "sum ", "is ", "5."]


def _tool_returned(messages: list[ModelMessage]) -> bool:
    last = messages[-1]
    return isinstance(last, ModelRequest) and any(
        isinstance(part, ToolReturnPart) for part in last.parts
    )


def calls_add_then_replies(**arguments: Any) -> FunctionModel:
    """A model that calls ``add`` with ``arguments``, then thinks and streams REPLY."""
    json_args = str(arguments).replace("'", '"')

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
        if _tool_returned(messages):
            yield {0: DeltaThinkingPart(content="adding up")}
            for piece in REPLY:
                yield piece
            return
        yield {0: DeltaToolCall(name="add", json_args=json_args, tool_call_id="call-1")}

    return FunctionModel(stream_function=stream)


def adder(model: FunctionModel) -> Agent[None, str]:
    agent = Agent(model)

    @agent.tool_plain
    def add(a: int, b: int, password: str = "") -> int:
        if a < 0:
            raise ValueError("negative numbers are not supported")
        return a + b

    return agent


class TestEventMapping:
    async def test_tool_thinking_text_and_output_become_our_events(
        self, make_engine: MakeEngine, bridge: RecordingBridge
    ) -> None:
        """A tool call is tool_executing (sanitised) and tool_completed, thinking is
        agent_thinking, text streams as deltas that join to the output, which is the
        agent_completed result."""
        agent = adder(calls_add_then_replies(a=2, b=3, password="hunter2"))  # noqa: S106 - must be hidden
        engine = make_engine(from_pydantic_ai(agent))

        result = await engine.execute_agent("agent", "what is 2 + 3?")

        events = bridge.events_for("user-1")
        by_type = {event["type"]: event["data"] for event in events}
        assert [
            "agent_started",
            "tool_executing",
            "tool_completed",
            "agent_thinking",
            "agent_text_delta",
            "agent_completed",
        ] == without_deltas([event["type"] for event in events])
        assert {"a": 2, "b": 3, "password": "[REDACTED]"} == by_type["tool_executing"]["parameters"]
        assert ("add", 5, None) == tuple(
            by_type["tool_completed"][key] for key in ("tool_name", "result", "error")
        )
        assert "adding up" == by_type["agent_thinking"]["thought"]
        assert "".join(REPLY) == deltas(bridge) == result.result
        assert "".join(REPLY) == by_type["agent_completed"]["result"]
        assert list(range(1, len(events) + 1)) == [event["seq"] for event in events]

    async def test_a_structured_output_is_json_ready(
        self, make_engine: MakeEngine, bridge: RecordingBridge
    ) -> None:
        """A pydantic output type reaches agent_completed as a plain dict."""

        class Answer(BaseModel):
            total: int
            words: list[str]

        agent = Agent(
            TestModel(custom_output_args={"total": 3, "words": ["a", "b"]}), output_type=Answer
        )
        result = await make_engine(from_pydantic_ai(agent)).execute_agent("agent", "count")
        assert {"total": 3, "words": ["a", "b"]} == result.result
        assert result.result == bridge.events_for("user-1")[-1]["data"]["result"]

    async def test_test_model_calls_every_tool(
        self, make_engine: MakeEngine, bridge: RecordingBridge
    ) -> None:
        """With pydantic-ai's TestModel, each tool it calls is reported around its run."""
        agent = Agent(TestModel(call_tools=["shout"]))

        @agent.tool_plain
        def shout(text: str) -> str:
            return text.upper()

        result = await make_engine(from_pydantic_ai(agent)).execute_agent("agent", "hi")
        completed = [e for e in bridge.events_for("user-1") if e["type"] == "tool_completed"]
        assert result.success
        assert ["shout"] == [event["data"]["tool_name"] for event in completed]
        assert isinstance(completed[0]["data"]["result"], str)


class TestFailures:
    async def test_a_failing_tool_reports_its_error_then_agent_error(
        self, make_engine: MakeEngine, bridge: RecordingBridge
    ) -> None:
        """A tool that raises gives tool_completed with its error, then agent_error; the
        engine runs the next message."""
        engine = make_engine(from_pydantic_ai(adder(calls_add_then_replies(a=-1, b=3))))

        failed = await engine.execute_agent("agent", "what is -1 + 3?")

        events = bridge.events_for("user-1")
        assert ["agent_started", "tool_executing", "tool_completed", "agent_error"] == [
            event["type"] for event in events
        ]
        assert "negative numbers are not supported" == events[2]["data"]["error"]
        assert ("ValueError", False) == (failed.error_type, failed.success)
        assert engine.is_active()

    async def test_a_tool_asking_for_a_retry_reports_it_and_the_run_goes_on(
        self, make_engine: MakeEngine, bridge: RecordingBridge
    ) -> None:
        """ModelRetry from a tool is a tool_completed with the error; the model retries."""
        agent = Agent(calls_add_then_replies(a=1, b=1))
        attempts: list[int] = []

        @agent.tool_plain
        def add(a: int, b: int) -> int:
            attempts.append(a)
            if len(attempts) == 1:
                raise ModelRetry("try again")
            return a + b

        result = await make_engine(from_pydantic_ai(agent)).execute_agent("agent", "1 + 1")
        errors = [
            event["data"]["error"]
            for event in bridge.events_for("user-1")
            if event["type"] == "tool_completed"
        ]
        assert result.success
        assert "try again" in errors[0]

    async def test_a_model_exception_is_agent_error_and_the_engine_stays_usable(
        self, make_engine: MakeEngine, bridge: RecordingBridge
    ) -> None:
        """A model that raises mid-stream ends the run with agent_error; the next works."""
        calls: list[str] = []

        async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
            calls.append("call")
            if len(calls) == 1:
                yield "half a "
                raise ConnectionError("provider went away")
            yield "fine"

        engine = make_engine(from_pydantic_ai(Agent(FunctionModel(stream_function=stream))))
        failed = await engine.execute_agent("agent", "hi")
        assert ("ConnectionError", "agent_error") == (
            failed.error_type,
            bridge.types_for("user-1")[-1],
        )
        assert "fine" == (await engine.execute_agent("agent", "again")).result


@dataclass
class Account:
    user_id: str


class TestDeps:
    @pytest.mark.parametrize("asynchronous", [False, True])
    async def test_deps_from_a_callable_of_the_run_are_per_user(
        self, make_engine: MakeEngine, bridge: RecordingBridge, asynchronous: bool
    ) -> None:
        """A deps callable is called with each run, so each user's tools see their own."""

        def for_run(run: AgentRun) -> Account:
            return Account(run.context.user_id)

        async def for_run_async(run: AgentRun) -> Account:
            return Account(run.context.user_id)

        agent: Agent[Account, str] = Agent(
            TestModel(call_tools=["whoami"]), deps_type=Account, output_type=str
        )

        @agent.tool
        def whoami(ctx: RunContext[Account]) -> str:
            return ctx.deps.user_id

        adapted = from_pydantic_ai(agent, deps=for_run_async if asynchronous else for_run)
        for user_id in ("alice", "bob"):
            await make_engine(adapted, user_id).execute_agent("agent", "who am I?")
        assert ["alice", "bob"] == [
            event["data"]["result"]
            for user_id in ("alice", "bob")
            for event in bridge.events_for(user_id)
            if event["type"] == "tool_completed"
        ]

    async def test_a_deps_value_is_passed_as_it_is(
        self, make_engine: MakeEngine, bridge: RecordingBridge
    ) -> None:
        """A deps value that is not callable reaches the tools unchanged."""
        agent: Agent[Account, str] = Agent(TestModel(call_tools=["whoami"]), deps_type=Account)

        @agent.tool
        def whoami(ctx: RunContext[Account]) -> str:
            return ctx.deps.user_id

        await make_engine(from_pydantic_ai(agent, deps=Account("shared"))).execute_agent(
            "agent", "?"
        )
        assert "shared" in [
            event["data"]["result"]
            for event in bridge.events_for("user-1")
            if event["type"] == "tool_completed"
        ]


class Stalling:
    """A model stream that writes a little, then waits forever, recording its close."""

    def __init__(self) -> None:
        self.writing = asyncio.Event()
        self.closed = False

    async def stream(self, messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        try:
            yield "Let me think"
            self.writing.set()
            await asyncio.Event().wait()
            yield "never"
        finally:
            self.closed = True


class TestCancellation:
    @pytest.mark.parametrize("how", ["engine_closed", "timeout", "cancelled"])
    async def test_a_stopped_run_closes_the_model_stream_and_sends_nothing_more(
        self, make_engine: MakeEngine, bridge: RecordingBridge, how: str
    ) -> None:
        """Cleanup, a timeout or a cancelled caller closes the model's stream at once and
        the run ends with agent_stopped, after the text streamed so far."""
        model = Stalling()
        engine = make_engine(from_pydantic_ai(Agent(FunctionModel(stream_function=model.stream))))
        if how == "timeout":
            await engine.execute_agent("agent", "hi", timeout=0.05)
        else:
            caller = asyncio.create_task(engine.execute_agent("agent", "hi"))
            await model.writing.wait()
            if how == "engine_closed":
                await engine.cleanup()
            else:
                caller.cancel()
            await asyncio.wait((caller,))
        for _ in range(5):
            await asyncio.sleep(0)
        events = bridge.events_for("user-1")
        assert model.closed
        assert ["agent_started", "agent_text_delta", "agent_stopped"] == [
            event["type"] for event in events
        ]
        assert ("Let me think", how) == (events[1]["data"]["delta"], events[2]["data"]["reason"])


class TestWithoutTheFramework:
    def test_importing_the_adapter_without_pydantic_ai_names_the_extra(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without pydantic-ai, importing the adapter says which extra to install."""
        monkeypatch.setitem(sys.modules, "pydantic_ai", None)
        monkeypatch.delitem(sys.modules, "enginescope.engines.adapters.pydantic_ai")
        with pytest.raises(FrameworkNotInstalledError) as caught:
            importlib.import_module("enginescope.engines.adapters.pydantic_ai")
        assert "pip install 'enginescope[pydantic-ai]'" in str(caught.value)
        assert isinstance(caught.value, ImportError)
        assert ("pydantic-ai", "pydantic-ai") == (caught.value.framework, caught.value.extra)
