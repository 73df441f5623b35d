"""The app's chat agent: it reads and adds the user's tasks through ``TaskService``.

A message that starts with "add" (or "remind me to") becomes a task; anything else lists
the open ones. Each run thinks once and uses one tool, so the user's sockets see five
events: started, thinking, tool executing, tool completed, completed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from enginescope.engines import Agent, AgentRegistry, AgentRun

from .services import TaskService

__all__ = ["AGENT_NAME", "build_agent_registry", "make_tasks_agent", "new_task_title"]

AGENT_NAME = "tasks"
_ADD = re.compile(r"^\s*(?:add|remind me to)\b[\s:,-]*(?P<title>.+)$", re.IGNORECASE | re.DOTALL)


def new_task_title(message: str) -> str | None:
    """``"add buy milk"`` -> ``"buy milk"``; ``None`` when the message adds nothing."""
    match = _ADD.match(message)
    return match["title"].strip() if match else None


def make_tasks_agent(task_service: Callable[[], TaskService]) -> Agent:
    """The agent; ``task_service`` gives a fresh ``TaskService`` per run (the Factory)."""

    def add_task(owner_id: int, title: str) -> dict[str, Any]:
        task = task_service().add_task(owner_id, title)
        return {"id": task.id, "title": task.title}

    def open_tasks(owner_id: int) -> list[dict[str, Any]]:
        return [{"id": t.id, "title": t.title} for t in task_service().open_tasks(owner_id)]

    async def tasks_agent(run: AgentRun) -> str:
        owner_id = int(run.context.user_id)
        title = new_task_title(run.message)
        if title is not None:
            await run.think(f"Adding {title!r} to your tasks.")
            added = await run.use_tool("add_task", add_task, owner_id=owner_id, title=title)
            return f"Added task {added['id']}: {added['title']}"
        await run.think("Looking up your open tasks.")
        tasks = await run.use_tool("open_tasks", open_tasks, owner_id=owner_id)
        titles = "; ".join(task["title"] for task in tasks)
        return f"You have {len(tasks)} open tasks: {titles}" if tasks else "Nothing open."

    return tasks_agent


def build_agent_registry(task_service: Callable[[], TaskService]) -> AgentRegistry:
    registry = AgentRegistry()
    registry.register(AGENT_NAME, make_tasks_agent(task_service))
    return registry
