"""The chat's pydantic-ai agent: a real LLM when ``CHAT_MODEL`` names one, else offline.

Both have the calculator and word-statistics tools. ``CHAT_MODEL`` is a pydantic-ai model
name (``openai:gpt-4o``, with ``OPENAI_API_KEY`` in the environment and the provider's
package installed: ``pip install 'pydantic-ai-slim[openai]'``). Without it the model is a
``FunctionModel`` that plays an LLM offline: it thinks, calls one tool (the calculator
when the message has arithmetic in it, word statistics otherwise) and streams its reply
word by word, so the demo needs no network.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, Final

from enginescope.engines import Agent as EngineAgent
from enginescope.engines.adapters.pydantic_ai import from_pydantic_ai
from enginescope.engines.testing import word_statistics
from pydantic_ai import Agent, ModelRetry
from pydantic_ai.messages import ModelMessage, ModelRequest, ToolReturnPart, UserPromptPart
from pydantic_ai.models.function import AgentInfo, DeltaThinkingPart, DeltaToolCall, FunctionModel

from .agent import CalculatorError, calculate, find_expression

__all__ = ["INSTRUCTIONS", "make_llm_agent", "offline_model"]

INSTRUCTIONS: Final = (
    "You are a concise assistant. Use the calculator tool for any arithmetic and the "
    "word_statistics tool when asked about the words of a text."
)


def make_llm_agent(model: str | None = None, tool_delay_seconds: float = 0.0) -> EngineAgent:
    """The chat agent on ``model`` (a pydantic-ai model name), or offline when ``None``.

    Each tool call first waits ``tool_delay_seconds``, and the offline model a tenth of
    it between the words it streams, so a run can be watched (and stopped)."""
    llm = model or offline_model(tool_delay_seconds / 10)
    agent = Agent(llm, instructions=INSTRUCTIONS, defer_model_check=True)

    @agent.tool_plain
    async def calculator(expression: str) -> int | float:
        """Evaluate an arithmetic expression: + - * / // % ** and parentheses."""
        await asyncio.sleep(tool_delay_seconds)
        try:
            return calculate(expression)
        except CalculatorError as exc:
            raise ModelRetry(str(exc)) from None

    @agent.tool_plain(name="word_statistics")
    async def word_statistics_tool(text: str) -> dict[str, Any]:
        """Count the words of a text, its unique words and the most common ones."""
        await asyncio.sleep(tool_delay_seconds)
        return word_statistics(text)

    return from_pydantic_ai(agent)


def offline_model(reply_delay_seconds: float = 0.0) -> FunctionModel:
    """A scripted LLM: one tool call for the user's message, then a streamed reply."""

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
        returned = _tool_return(messages[-1])
        if returned is None:
            for delta in _plan(_prompt(messages)):
                yield delta
            return
        for number, word in enumerate(_reply(_prompt(messages), returned).split(" ")):
            await asyncio.sleep(reply_delay_seconds)
            yield f" {word}" if number else word

    return FunctionModel(stream_function=stream, model_name="offline")


def _plan(message: str) -> list[dict[int, Any]]:
    expression = find_expression(message)
    if expression is not None:
        thought = f"I see arithmetic: {expression}. Using the calculator."
        call = _call("calculator", expression=expression)
    else:
        thought = f"Counting the words of your {len(message)}-character message."
        call = _call("word_statistics", text=message)
    return [{0: DeltaThinkingPart(content=thought)}, {1: call}]


def _call(tool_name: str, **arguments: str) -> DeltaToolCall:
    return DeltaToolCall(tool_name, json.dumps(arguments), tool_call_id="call-1")


def _reply(message: str, returned: ToolReturnPart) -> str:
    expression = find_expression(message)
    if returned.outcome != "success":
        why = returned.model_response_str(wrap_if_error=False)
        return f"I could not calculate {expression}: {why}"
    if returned.tool_name == "calculator":
        return f"{expression} = {returned.content}"
    stats = returned.content
    common = ", ".join(stats["most_common"]) or "none"
    return f"{stats['words']} words, {stats['unique_words']} unique; most common: {common}."


def _prompt(messages: list[ModelMessage]) -> str:
    for message in messages:
        for part in message.parts if isinstance(message, ModelRequest) else ():
            if isinstance(part, UserPromptPart) and isinstance(part.content, str):
                return part.content
    return ""


def _tool_return(message: ModelMessage) -> ToolReturnPart | None:
    if not isinstance(message, ModelRequest):
        return None
    parts = [part for part in message.parts if isinstance(part, ToolReturnPart)]
    return parts[-1] if parts else None
