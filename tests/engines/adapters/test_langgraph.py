"""from_langgraph: a LangGraph graph's run as enginescope events, with fake chat models."""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Callable
from typing import Any

import pytest
from enginescope.engines import AgentRun, FrameworkNotInstalledError
from enginescope.engines.adapters.langgraph import default_output, from_langgraph
from enginescope.engines.testing import RecordingBridge
from langchain_core.language_models.fake_chat_models import (
    FakeMessagesListChatModel,
    GenericFakeChatModel,
)
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from .conftest import MakeEngine, deltas, without_deltas

REPLY = "The sum is 5."


@tool
def add(a: int, b: int, password: str = "") -> int:
    """Add two numbers."""
    if a < 0:
        raise ValueError("negative numbers are not supported")
    return a + b


def tool_calling_graph(
    arguments: dict[str, Any], reply: Callable[[], BaseMessage | str] = lambda: REPLY
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """model -> tools -> model: the first model call asks for ``add``, the second streams."""
    call = AIMessage(content="", tool_calls=[{"name": "add", "args": arguments, "id": "c1"}])
    caller = FakeMessagesListChatModel(responses=[call])

    async def model(state: MessagesState) -> dict[str, Any]:
        if isinstance(state["messages"][-1], ToolMessage):
            writer = GenericFakeChatModel(messages=iter([reply()]))
            return {"messages": [await writer.ainvoke(state["messages"])]}
        return {"messages": [await caller.ainvoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("model", model)
    graph.add_node("tools", ToolNode([add]))
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", tools_condition)
    graph.add_edge("tools", "model")
    return graph.compile()


def one_node_graph(node: Callable[..., Any]) -> CompiledStateGraph[Any, Any, Any, Any]:
    graph = StateGraph(MessagesState)
    graph.add_node("model", node)
    graph.add_edge(START, "model")
    return graph.compile()


class TestEventMapping:
    async def test_tools_streamed_text_and_output_become_our_events(
        self, make_engine: MakeEngine, bridge: RecordingBridge
    ) -> None:
        """Tool start and end are tool_executing (sanitised) and tool_completed, the chat
        model's stream is agent_text_delta joining to the reply, the last message's text
        the agent_completed result."""
        graph = tool_calling_graph({"a": 2, "b": 3, "password": "hunter2"})
        result = await make_engine(from_langgraph(graph)).execute_agent("agent", "2 + 3?")

        events = bridge.events_for("user-1")
        by_type = {event["type"]: event["data"] for event in events}
        assert [
            "agent_started",
            "tool_executing",
            "tool_completed",
            "agent_text_delta",
            "agent_completed",
        ] == without_deltas([event["type"] for event in events])
        assert {"a": 2, "b": 3, "password": "[REDACTED]"} == by_type["tool_executing"]["parameters"]
        assert ("add", "5", None) == tuple(
            by_type["tool_completed"][key] for key in ("tool_name", "result", "error")
        )
        assert REPLY == deltas(bridge) == result.result == by_type["agent_completed"]["result"]

    async def test_a_model_that_does_not_stream_still_sends_text_and_reasoning(
        self, make_engine: MakeEngine, bridge: RecordingBridge
    ) -> None:
        """A whole (unstreamed) reply is sent as text; its reasoning as agent_thinking."""
        content: list[str | dict[str, Any]] = [
            {"type": "reasoning", "reasoning": "two and three"},
            {"type": "text", "text": "Five."},
        ]
        model = FakeMessagesListChatModel(responses=[AIMessage(content=content)])

        async def node(state: MessagesState) -> dict[str, Any]:
            return {"messages": [await model.ainvoke(state["messages"])]}

        await make_engine(from_langgraph(one_node_graph(node))).execute_agent("agent", "hi")
        events = bridge.events_for("user-1")
        assert ["agent_started", "agent_text_delta", "agent_thinking", "agent_completed"] == [
            event["type"] for event in events
        ]
        assert ("Five.", "two and three") == (
            events[1]["data"]["delta"],
            events[2]["data"]["thought"],
        )

    async def test_input_output_and_config_can_be_chosen(
        self, make_engine: MakeEngine, bridge: RecordingBridge
    ) -> None:
        """input(run), output(state) and config(run) replace the defaults; the default
        config carries the run's thread id."""
        seen: list[str] = []

        async def node(state: MessagesState, config: RunnableConfig) -> dict[str, Any]:
            seen.append(config["configurable"]["thread_id"])
            return {"messages": [AIMessage(content=state["messages"][-1].text.upper())]}

        graph = one_node_graph(node)
        await make_engine(from_langgraph(graph)).execute_agent("agent", "hi")

        def shout(run: AgentRun) -> dict[str, Any]:
            return {"messages": [("user", run.message + "!")]}

        async def config(run: AgentRun) -> RunnableConfig:
            return {"configurable": {"thread_id": f"custom-{run.context.user_id}"}}

        adapted = from_langgraph(
            graph, input=shout, output=lambda s: len(s["messages"]), config=config
        )
        result = await make_engine(adapted, "bob").execute_agent("agent", "hi")
        assert ["thread-1", "custom-bob"] == seen
        assert 2 == result.result
        assert "HI" == bridge.events_for("user-1")[-1]["data"]["result"]

    def test_default_output_is_the_state_without_messages(self) -> None:
        """A final state without messages is the result as it is."""
        assert {"count": 3} == default_output({"count": 3})


class TestFailures:
    async def test_a_failing_tool_reports_its_error_then_agent_error(
        self, make_engine: MakeEngine, bridge: RecordingBridge
    ) -> None:
        """A tool that raises gives tool_completed with its error, then agent_error; the
        engine runs the next message (which fails the same way)."""
        engine = make_engine(from_langgraph(tool_calling_graph({"a": -1, "b": 3})))
        failed = await engine.execute_agent("agent", "-1 + 3?")
        events = bridge.events_for("user-1")
        assert ["agent_started", "tool_executing", "tool_completed", "agent_error"] == [
            event["type"] for event in events
        ]
        assert "negative numbers are not supported" == events[2]["data"]["error"]
        assert (False, "ValueError") == (failed.success, failed.error_type)
        bridge.clear()
        await engine.execute_agent("agent", "again")
        assert [event["type"] for event in events] == bridge.types_for("user-1")
        assert engine.is_active()

    async def test_a_tool_error_message_is_a_tool_completed_error(
        self, make_engine: MakeEngine, bridge: RecordingBridge
    ) -> None:
        """A tool whose errors the ToolNode turns into an error ToolMessage reports it."""

        @tool
        def lookup(key: str) -> str:
            """Look a key up."""
            raise KeyError(key)

        call = AIMessage(
            content="", tool_calls=[{"name": "lookup", "args": {"key": "k"}, "id": "c"}]
        )
        caller = FakeMessagesListChatModel(responses=[call, AIMessage(content="sorry")])

        async def model(state: MessagesState) -> dict[str, Any]:
            return {"messages": [await caller.ainvoke(state["messages"])]}

        graph = StateGraph(MessagesState)
        graph.add_node("model", model)
        graph.add_node("tools", ToolNode([lookup], handle_tool_errors=True))
        graph.add_edge(START, "model")
        graph.add_conditional_edges("model", tools_condition)
        graph.add_edge("tools", "model")
        result = await make_engine(from_langgraph(graph.compile())).execute_agent("agent", "?")
        [completed] = [e for e in bridge.events_for("user-1") if e["type"] == "tool_completed"]
        assert "sorry" == result.result
        assert "'k'" in completed["data"]["error"]

    async def test_a_model_exception_is_agent_error(
        self, make_engine: MakeEngine, bridge: RecordingBridge
    ) -> None:
        """A node that raises ends the run with agent_error."""

        async def node(state: MessagesState) -> dict[str, Any]:
            raise ConnectionError("provider went away")

        result = await make_engine(from_langgraph(one_node_graph(node))).execute_agent("agent", "x")
        assert ("ConnectionError", "agent_error") == (
            result.error_type,
            bridge.types_for("user-1")[-1],
        )


class TestCancellation:
    @pytest.mark.parametrize("how", ["engine_closed", "timeout", "cancelled"])
    async def test_a_stopped_run_ends_the_graph_and_sends_nothing_more(
        self, make_engine: MakeEngine, bridge: RecordingBridge, how: str
    ) -> None:
        """Cleanup, a timeout or a cancelled caller stops the graph at once; the run ends
        with agent_stopped after the text streamed so far."""
        writing, state = asyncio.Event(), {"closed": False}

        async def node(messages: MessagesState) -> dict[str, Any]:
            writer = GenericFakeChatModel(messages=iter(["Let me think"]))
            await writer.ainvoke(messages["messages"])
            writing.set()
            try:
                await asyncio.Event().wait()
            finally:
                state["closed"] = True
            return {}

        engine = make_engine(from_langgraph(one_node_graph(node)))
        if how == "timeout":
            await engine.execute_agent("agent", "hi", timeout=0.2)
        else:
            caller = asyncio.create_task(engine.execute_agent("agent", "hi"))
            await writing.wait()
            if how == "engine_closed":
                await engine.cleanup()
            else:
                caller.cancel()
            await asyncio.wait((caller,))
        for _ in range(5):
            await asyncio.sleep(0)
        events = bridge.events_for("user-1")
        assert state["closed"]
        assert ["agent_started", "agent_text_delta", "agent_stopped"] == without_deltas(
            [event["type"] for event in events]
        )
        assert ("Let me think", how) == (deltas(bridge), events[-1]["data"]["reason"])


class TestWithoutTheFramework:
    @pytest.mark.parametrize("missing", ["langgraph", "langchain_core"])
    def test_importing_the_adapter_without_langgraph_names_the_extra(
        self, monkeypatch: pytest.MonkeyPatch, missing: str
    ) -> None:
        """Without langgraph or langchain-core, importing the adapter names the extra."""
        for name in [name for name in sys.modules if name.split(".")[0] == missing]:
            monkeypatch.delitem(sys.modules, name)
        monkeypatch.setitem(sys.modules, missing, None)
        monkeypatch.delitem(sys.modules, "enginescope.engines.adapters.langgraph")
        with pytest.raises(FrameworkNotInstalledError, match=r"enginescope\[langgraph\]"):
            importlib.import_module("enginescope.engines.adapters.langgraph")
