"""AgentRegistry, UserAgents and AgentRun."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from enginescope.engines import (
    AgentNotFoundError,
    AgentRegistry,
    AgentRun,
    UserExecutionContext,
    UserWebSocketEmitter,
)
from enginescope.engines.testing import RecordingBridge, demo_agent, word_statistics


async def noop_agent(run: AgentRun) -> str:
    return run.message


class TestAgentRegistry:
    def test_register_and_list(self) -> None:
        """Registered names are listed sorted and reported by len and in."""
        agents = AgentRegistry()
        agents.register("b", noop_agent)
        agents.register("a", demo_agent)
        assert agents.names() == ("a", "b")
        assert len(agents) == 2
        assert "a" in agents
        assert list(agents) == ["a", "b"]

    def test_duplicate_name_is_refused(self) -> None:
        """Registering a taken name twice raises unless replace=True."""
        agents = AgentRegistry()
        agents.register("a", noop_agent)
        with pytest.raises(ValueError, match="already registered"):
            agents.register("a", demo_agent)
        agents.register("a", demo_agent, replace=True)
        assert len(agents) == 1

    @pytest.mark.parametrize("name", ["", "  ", None, 3])
    def test_bad_names_are_refused(self, name: Any) -> None:
        """An agent needs a non-empty string name."""
        with pytest.raises(ValueError, match="non-empty string"):
            AgentRegistry().register(name, noop_agent)

    def test_non_callable_agent_is_refused(self) -> None:
        """An agent must be callable."""
        with pytest.raises(TypeError, match="async callable"):
            AgentRegistry().register("a", "not an agent")  # type: ignore[arg-type]

    def test_decorator_registers(self) -> None:
        """@registry.agent(name) registers the decorated function and returns it."""
        agents = AgentRegistry()

        @agents.agent("decorated")
        async def decorated(run: AgentRun) -> None:
            return None

        assert agents.names() == ("decorated",)
        assert decorated is agents.for_user(_ctx()).get("decorated")

    def test_unregister(self) -> None:
        """An unregistered agent is gone; unregistering an unknown name fails by name."""
        agents = AgentRegistry()
        agents.register("a", noop_agent)
        agents.unregister("a")
        with pytest.raises(AgentNotFoundError, match="'a'"):
            agents.unregister("a")

    def test_unknown_agent_error_names_it_and_lists_known(self) -> None:
        """Looking up an unknown agent names it and the agents that do exist."""
        agents = AgentRegistry()
        agents.register("triage", noop_agent)
        with pytest.raises(AgentNotFoundError) as caught:
            agents.for_user(_ctx()).get("missing")
        assert caught.value.agent_name == "missing"
        assert "'missing'" in str(caught.value)
        assert "triage" in str(caught.value)
        assert isinstance(caught.value, LookupError)


def _ctx(user_id: str = "user-1") -> UserExecutionContext:
    return UserExecutionContext(user_id=user_id, thread_id="thread-1", run_id="run-1")


class TestPerUserAgents:
    def test_factory_builds_one_agent_per_user_view(self) -> None:
        """A factory-registered agent is built once per engine view, never shared."""
        built: list[str] = []

        def make(context: UserExecutionContext) -> Callable[[AgentRun], Any]:
            built.append(context.user_id)

            async def agent(run: AgentRun) -> str:
                return context.user_id

            return agent

        agents = AgentRegistry()
        agents.register_factory("stateful", make)
        alice, bob = agents.for_user(_ctx("alice")), agents.for_user(_ctx("bob"))
        assert alice.get("stateful") is alice.get("stateful")
        assert alice.get("stateful") is not bob.get("stateful")
        assert built == ["alice", "bob"]

    def test_factory_must_be_callable(self) -> None:
        """A non-callable factory is refused at registration."""
        with pytest.raises(TypeError, match="callable"):
            AgentRegistry().register_factory("a", 3)  # type: ignore[arg-type]


class TestAgentRun:
    @pytest.mark.asyncio
    async def test_think_sends_agent_thinking(self) -> None:
        """think() sends one agent_thinking event with the text."""
        bridge = RecordingBridge()
        run = AgentRun(_ctx(), "a", "hi", UserWebSocketEmitter("user-1", "t", "r", bridge))
        await run.think("pondering", step=2)
        [event] = bridge.events_for("user-1")
        assert (
            event["type"],
            event["data"]["thought"],
            event["data"]["step"],
        ) == ("agent_thinking", "pondering", 2)

    @pytest.mark.asyncio
    @pytest.mark.parametrize("asynchronous", [False, True])
    async def test_use_tool_runs_sync_and_async_tools(self, asynchronous: bool) -> None:
        """use_tool calls the tool with its parameters and returns its result."""

        def add(a: int, b: int) -> int:
            return a + b

        async def add_async(a: int, b: int) -> int:
            return a + b

        bridge = RecordingBridge()
        run = AgentRun(_ctx(), "a", "hi", UserWebSocketEmitter("user-1", "t", "r", bridge))
        result = await run.use_tool("add", add_async if asynchronous else add, a=2, b=3)
        assert result == 5
        executing, completed = bridge.events_for("user-1")
        assert (
            executing["type"],
            executing["data"]["parameters"],
        ) == ("tool_executing", {"a": 2, "b": 3})
        assert (
            completed["type"],
            completed["data"]["result"],
            completed["data"]["error"],
        ) == ("tool_completed", 5, None)

    @pytest.mark.asyncio
    async def test_failing_tool_reports_and_reraises(self) -> None:
        """A tool's exception is reported in tool_completed and raised to the agent."""

        def broken() -> None:
            raise RuntimeError("disk on fire")

        bridge = RecordingBridge()
        run = AgentRun(_ctx(), "a", "hi", UserWebSocketEmitter("user-1", "t", "r", bridge))
        with pytest.raises(RuntimeError, match="disk on fire"):
            await run.use_tool("broken", broken)
        completed = bridge.events_for("user-1")[-1]
        assert (completed["type"], completed["data"]["error"]) == ("tool_completed", "disk on fire")

    @pytest.mark.asyncio
    async def test_tool_parameters_named_like_arguments(self) -> None:
        """A tool may take parameters called tool_name or fn."""
        bridge = RecordingBridge()
        run = AgentRun(_ctx(), "a", "hi", UserWebSocketEmitter("user-1", "t", "r", bridge))

        def echo(**kwargs: Any) -> dict[str, Any]:
            return kwargs

        assert await run.use_tool("echo", echo, tool_name=1, fn=2) == {"tool_name": 1, "fn": 2}


class TestDemoAgent:
    def test_word_statistics(self) -> None:
        """word_statistics counts words, unique words and names the most common."""
        stats = word_statistics("the cat and the hat")
        assert stats["words"] == 5
        assert stats["unique_words"] == 4
        assert stats["most_common"][0] == "the"

    @pytest.mark.asyncio
    async def test_demo_agent_replies_with_its_count(self) -> None:
        """The demo agent thinks, uses one tool and replies with the word count."""
        bridge = RecordingBridge()
        run = AgentRun(
            _ctx(), "demo", "one two two", UserWebSocketEmitter("user-1", "t", "r", bridge)
        )
        assert await demo_agent(run) == "Your message has 3 words (2 unique)."
        assert bridge.types_for("user-1") == ["agent_thinking", "tool_executing", "tool_completed"]
