"""What the adapters share: tool calls in flight, and values made JSON-ready."""

from __future__ import annotations

import inspect
import time
from typing import Any

from ..agents import AgentRun, _ms_since

__all__ = ["ToolCalls", "resolve"]


async def resolve(value: Any, run: AgentRun) -> Any:
    """``value(run)`` (awaited when async) for a callable, else ``value`` itself."""
    if not callable(value):
        return value
    result = value(run)
    return await result if inspect.isawaitable(result) else result


class ToolCalls:
    """The tool calls of one run that started and have not finished, by call id."""

    __slots__ = ("_calls", "_run")

    def __init__(self, run: AgentRun) -> None:
        self._run = run
        self._calls: dict[str, tuple[str, float]] = {}

    async def started(self, call_id: str, tool_name: str, arguments: Any) -> None:
        """A tool call began: ``tool_executing`` with its (sanitised) arguments."""
        self._calls[call_id] = (tool_name, time.perf_counter())
        await self._run.report_tool_executing(tool_name, _arguments(arguments))

    async def finished(
        self, call_id: str, tool_name: str, result: Any = None, *, error: str | None = None
    ) -> None:
        """A tool call ended: ``tool_completed`` with its result or its error."""
        name, started = self._calls.pop(call_id, (tool_name, None))
        duration = None if started is None else _ms_since(started)
        await self._run.report_tool_completed(name, result, duration_ms=duration, error=error)

    async def failed(self, error: BaseException) -> None:
        """The run failed: every call still in flight ends with ``error``."""
        message = str(error) or type(error).__name__
        for call_id, (name, _) in list(self._calls.items()):
            await self.finished(call_id, name, error=message)


def _arguments(arguments: Any) -> dict[str, Any]:
    if isinstance(arguments, dict):
        return {str(key): value for key, value in arguments.items()}
    return {"input": arguments}
