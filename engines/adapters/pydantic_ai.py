"""Run a pydantic-ai agent in a user's engine: ``from_pydantic_ai(agent, deps=...)``.

Needs ``pip install 'enginescope[pydantic-ai]'``. The agent's event stream becomes
enginescope events: a function tool call is ``tool_executing`` (its arguments, sanitised)
then ``tool_completed`` (its result, sanitised, or its error); a thinking part is
``agent_thinking``; text is streamed as ``agent_text_delta``; the output, made JSON-ready,
is the ``agent_completed`` result. An exception from the model or a tool ends the run
with ``agent_error`` (the tool's ``tool_completed`` carries it first); a cancelled run
closes the model's stream at once and ends with ``agent_stopped``.
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from typing import Any

from ..agents import Agent, AgentRun
from ..errors import FrameworkNotInstalledError
from ._shared import ToolCalls, resolve

try:
    from pydantic_ai import RunContext
    from pydantic_ai.agent import AbstractAgent
    from pydantic_ai.messages import (
        AgentStreamEvent,
        FunctionToolCallEvent,
        FunctionToolResultEvent,
        PartDeltaEvent,
        PartEndEvent,
        PartStartEvent,
        TextPart,
        TextPartDelta,
        ThinkingPart,
    )
    from pydantic_core import to_jsonable_python
except ImportError as exc:  # pragma: no cover - exercised by simulating the missing module
    raise FrameworkNotInstalledError("pydantic-ai", "pydantic-ai") from exc

__all__ = ["from_pydantic_ai"]


def from_pydantic_ai(
    agent: AbstractAgent[Any, Any], *, deps: Any = None, **run_options: Any
) -> Agent:
    """An enginescope agent that runs ``agent`` on the run's message.

    ``deps`` is the pydantic-ai dependencies: a value, or a callable taking the
    :class:`~enginescope.engines.AgentRun` (sync or async) so each user's dependencies
    come from their engine and context (wrap a callable value in a lambda).
    ``run_options`` go to ``agent.run`` as they are (``model=``, ``usage_limits=``, ...).
    The model must stream (every provider model, ``TestModel``, and ``FunctionModel``
    with a ``stream_function`` do).
    """

    async def run_pydantic_ai(run: AgentRun) -> Any:
        events = _Events(run)
        try:
            result = await agent.run(
                run.message,
                deps=await resolve(deps, run),
                event_stream_handler=events.handle,
                **run_options,
            )
        except Exception as exc:
            await events.tools.failed(exc)
            raise
        return to_jsonable_python(result.output, fallback=_type_name)

    return run_pydantic_ai


def _type_name(value: Any) -> str:
    return f"<{type(value).__name__}>"


class _Events:
    """Maps one run's pydantic-ai events to its enginescope events."""

    __slots__ = ("run", "tools")

    def __init__(self, run: AgentRun) -> None:
        self.run = run
        self.tools = ToolCalls(run)

    async def handle(self, _: RunContext[Any], stream: AsyncIterable[AgentStreamEvent]) -> None:
        async for event in stream:
            await self.map(event)

    async def map(self, event: AgentStreamEvent) -> None:
        if isinstance(event, PartStartEvent) and isinstance(event.part, TextPart):
            await self.run.stream_text(event.part.content)
        elif isinstance(event, PartDeltaEvent) and isinstance(event.delta, TextPartDelta):
            await self.run.stream_text(event.delta.content_delta)
        elif isinstance(event, PartEndEvent) and isinstance(event.part, ThinkingPart):
            if event.part.content:
                await self.run.think(event.part.content)
        elif isinstance(event, FunctionToolCallEvent):
            part = event.part
            await self.tools.started(part.tool_call_id, part.tool_name, part.args_as_dict())
        elif isinstance(event, FunctionToolResultEvent):
            await self._tool_result(event)

    async def _tool_result(self, event: FunctionToolResultEvent) -> None:
        part = event.part
        if part.outcome == "success":
            await self.tools.finished(part.tool_call_id, part.tool_name, part.content)
        else:
            error = part.model_response_str(wrap_if_error=False) or part.outcome
            await self.tools.finished(part.tool_call_id, part.tool_name, error=error)
