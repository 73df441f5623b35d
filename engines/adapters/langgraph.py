"""Run a LangGraph graph in a user's engine: ``from_langgraph(graph, ...)``.

Needs ``pip install 'enginescope[langgraph]'`` (langgraph with langchain-core). The graph
runs through ``astream_events(version="v2")``, whose events become enginescope events: a
tool start is ``tool_executing`` (its input, sanitised), a tool end ``tool_completed``
(its output, sanitised; a tool error carries the error); streamed chat-model text is
``agent_text_delta`` and streamed reasoning one ``agent_thinking`` per model call; the
graph's output is the ``agent_completed`` result. An exception ends the run with
``agent_error``; a cancelled run closes the event stream at once and ends with
``agent_stopped``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..agents import Agent, AgentRun
from ..errors import FrameworkNotInstalledError
from ._shared import ToolCalls, resolve

try:
    from langchain_core.messages import BaseMessage, ToolMessage
    from langchain_core.runnables import Runnable, RunnableConfig
    from langchain_core.runnables.schema import StreamEvent
    from langgraph.graph.state import CompiledStateGraph
except ImportError as exc:  # pragma: no cover - exercised by simulating the missing module
    raise FrameworkNotInstalledError("langgraph", "langgraph") from exc

__all__ = ["default_input", "default_output", "from_langgraph"]

InputBuilder = Callable[[AgentRun], Any]
OutputReader = Callable[[Any], Any]


def default_input(run: AgentRun) -> dict[str, Any]:
    """The graph's input for a run: ``{"messages": [("user", run.message)]}``, the shape
    of LangGraph's ``MessagesState`` and of its prebuilt agents."""
    return {"messages": [("user", run.message)]}


def default_output(state: Any) -> Any:
    """The run's result from the graph's final state: the text of its last message when
    the state has ``messages``, otherwise the state itself."""
    messages = state.get("messages") if isinstance(state, Mapping) else None
    if messages and isinstance(messages[-1], BaseMessage):
        return messages[-1].text
    return state


def _default_config(run: AgentRun) -> RunnableConfig:
    return {"configurable": {"thread_id": run.context.thread_id}}


def from_langgraph(
    graph: CompiledStateGraph[Any, Any, Any, Any] | Runnable[Any, Any],
    *,
    input: InputBuilder = default_input,
    output: OutputReader = default_output,
    config: RunnableConfig | Callable[[AgentRun], Any] | None = None,
) -> Agent:
    """An enginescope agent that runs ``graph`` on the run's message.

    ``input(run)`` builds the graph's input (:func:`default_input`); ``output(state)``
    turns the final state into the result (:func:`default_output`). ``config`` is the
    ``RunnableConfig``, or a callable taking the :class:`~enginescope.engines.AgentRun`
    (sync or async); by default ``{"configurable": {"thread_id": <the run's thread>}}``,
    so a graph with a checkpointer keeps each conversation's state apart.
    """

    async def run_langgraph(run: AgentRun) -> Any:
        events = _Events(run)
        settings = _default_config(run) if config is None else await resolve(config, run)
        stream = graph.astream_events(input(run), settings, version="v2")
        try:
            async for event in stream:
                await events.map(event)
        except Exception as exc:
            await events.tools.failed(exc)
            raise
        finally:  # end the graph's stream now, not when it is garbage-collected
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()
        return output(events.final)

    return run_langgraph


class _Events:
    """Maps one run's LangGraph events to its enginescope events."""

    __slots__ = ("final", "reasoning", "run", "streamed", "tools")

    def __init__(self, run: AgentRun) -> None:
        self.run = run
        self.tools = ToolCalls(run)
        self.final: Any = None
        self.reasoning: dict[str, list[str]] = {}
        self.streamed: set[str] = set()

    async def map(self, event: StreamEvent) -> None:
        kind, data = event["event"], event["data"]
        if kind == "on_chat_model_stream":
            await self._model_chunk(event["run_id"], data.get("chunk"))
        elif kind == "on_chat_model_end":
            await self._model_end(event["run_id"], data.get("output"))
        elif kind == "on_tool_start":
            await self.tools.started(event["run_id"], event["name"], data.get("input"))
        elif kind == "on_tool_end":
            await self._tool_end(event["run_id"], event["name"], data.get("output"))
        elif kind == "on_tool_error":
            error = data.get("error")
            message = str(error) or type(error).__name__
            await self.tools.finished(event["run_id"], event["name"], error=message)
        elif kind == "on_chain_end" and not event["parent_ids"]:
            self.final = data.get("output")

    async def _model_chunk(self, run_id: str, chunk: Any) -> None:
        self.streamed.add(run_id)
        text, reasoning = _split(getattr(chunk, "content", ""))
        if reasoning:
            self.reasoning.setdefault(run_id, []).append(reasoning)
        if text:
            await self.run.stream_text(text)

    async def _model_end(self, run_id: str, message: Any) -> None:
        thought = "".join(self.reasoning.pop(run_id, ()))
        if run_id not in self.streamed:  # a model that does not stream: its whole text
            text, thought = _split(getattr(message, "content", ""))
            await self.run.stream_text(text)
        self.streamed.discard(run_id)
        if thought:
            await self.run.think(thought)

    async def _tool_end(self, run_id: str, name: str, result: Any) -> None:
        if isinstance(result, ToolMessage):
            if result.status == "error":
                await self.tools.finished(run_id, name, error=str(result.content))
                return
            result = result.content
        await self.tools.finished(run_id, name, result)


def _split(content: Any) -> tuple[str, str]:
    """A message's content as (text, reasoning): a string, or a list of content blocks."""
    if isinstance(content, str):
        return content, ""
    text: list[str] = []
    reasoning: list[str] = []
    for block in content if isinstance(content, list) else ():
        if isinstance(block, str):
            text.append(block)
        elif isinstance(block, Mapping) and block.get("type") == "text":
            text.append(str(block.get("text", "")))
        elif isinstance(block, Mapping) and block.get("type") in ("reasoning", "thinking"):
            reasoning.append(str(block.get("reasoning") or block.get("thinking") or ""))
    return "".join(text), "".join(reasoning)
