"""AgentRegistry, UserAgents and AgentRun."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable
from typing import Any

import pytest
from enginescope.engines import (
    STOP_REASONS,
    AgentNotFoundError,
    AgentRegistry,
    AgentRun,
    UserExecutionContext,
    UserExecutionEngine,
    UserWebSocketEmitter,
    inline_tool,
)
from enginescope.engines.testing import RecordingBridge, demo_agent, word_statistics

from tests.support import FakeClock


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


def _engine(
    bridge: RecordingBridge, agents: AgentRegistry, user_id: str = "user-1", **emitter: Any
) -> UserExecutionEngine:
    ctx = _ctx(user_id)
    events = UserWebSocketEmitter(ctx.user_id, ctx.thread_id, ctx.run_id, bridge, **emitter)
    return UserExecutionEngine(ctx, events, agents=agents)


def _run(bridge: RecordingBridge, **emitter: Any) -> AgentRun:
    return AgentRun(
        _ctx(), "writer", "hi", UserWebSocketEmitter("user-1", "t", "r", bridge, **emitter)
    )


def _deltas(bridge: RecordingBridge, user_id: str = "user-1") -> list[str]:
    return [
        event["data"]["delta"]
        for event in bridge.events_for(user_id)
        if event["type"] == "agent_text_delta"
    ]


def _count(items: list[str]) -> int:
    return len(items)


class TestStreamText:
    @pytest.mark.asyncio
    async def test_the_first_piece_goes_at_once_then_pieces_wait_for_the_interval(
        self, clock: FakeClock
    ) -> None:
        """The first piece is sent at once; later ones wait until the interval passed."""
        bridge = RecordingBridge()
        run = _run(bridge, text_delta_interval_seconds=0.05, clock=clock)
        for piece in ("Hel", "lo", ", ", "wor"):
            await run.stream_text(piece)
            clock.advance(0.01)
        clock.advance(0.05)
        await run.stream_text("ld")
        assert ["Hel", "lo, world"] == _deltas(bridge)

    @pytest.mark.asyncio
    async def test_enough_waiting_text_goes_out_in_pieces_of_at_most_max_chars(
        self, clock: FakeClock
    ) -> None:
        """Text over max_chars is sent at once, cut into events of at most max_chars."""
        bridge = RecordingBridge()
        run = _run(bridge, text_delta_max_chars=4, clock=clock)
        await run.stream_text("a")
        await run.stream_text("bc")
        await run.stream_text("defghij")
        assert ["a", "bcde", "fghi", "j"] == _deltas(bridge)

    @pytest.mark.asyncio
    async def test_a_run_streams_and_the_deltas_join_to_its_text(self, clock: FakeClock) -> None:
        """Waiting text is flushed before a tool event and before completion; the deltas,
        joined, are the streamed text, with every event in one seq order."""
        agents = AgentRegistry()
        words = [f"word{number} " for number in range(40)]

        async def writer(run: AgentRun) -> str:
            for word in words[:20]:
                await run.stream_text(word)
            await run.use_tool("count", inline_tool(_count), items=words)
            for word in words[20:]:
                await run.stream_text(word)
            return "".join(words)

        agents.register("writer", writer)
        bridge = RecordingBridge()
        result = await _engine(bridge, agents, clock=clock).execute_agent("writer", "go")
        events = bridge.events_for("user-1")
        types = [event["type"] for event in events]
        assert result.result == "".join(_deltas(bridge))
        assert ["agent_text_delta", "agent_text_delta", "tool_executing"] == types[1:4]
        assert ["tool_completed", "agent_text_delta", "agent_completed"] == types[-3:]
        assert list(range(1, len(events) + 1)) == [event["seq"] for event in events]
        assert {"delta"} == set(events[1]["data"])
        assert ("user-1", "writer") == (events[1]["user_id"], events[1]["agent_name"])

    @pytest.mark.asyncio
    async def test_many_small_pieces_become_few_events(self, clock: FakeClock) -> None:
        """A thousand one-character pieces within one interval are a handful of events."""
        bridge = RecordingBridge()
        run = _run(bridge, text_delta_max_chars=256, clock=clock)
        for _ in range(1000):
            await run.stream_text("x")
        await bridge_flush(run)
        assert [1, 256, 256, 256, 231] == [len(delta) for delta in _deltas(bridge)]

    @pytest.mark.asyncio
    async def test_empty_text_sends_nothing(self) -> None:
        """Streaming an empty string sends no event."""
        bridge = RecordingBridge()
        await _run(bridge).stream_text("")
        assert [] == bridge.events_for("user-1")


async def bridge_flush(run: AgentRun) -> None:
    await run._emitter.flush_text()


class Swallower:
    """An agent that catches its cancellation and tries to go on reporting."""

    def __init__(self, *, then_raise: bool = False) -> None:
        self.started = asyncio.Event()
        self.then_raise = then_raise
        self.caught = False

    async def __call__(self, run: AgentRun) -> str:
        await run.stream_text("partial ")
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.caught = True
        await run.think("still here")
        await run.stream_text("more text")
        await run.use_tool("after", inline_tool(str), object="x")
        if self.then_raise:
            raise RuntimeError("after the stop")
        return "finished anyway"


async def _stop_by(how: str, engine: UserExecutionEngine, agent: Swallower) -> None:
    if how == "timeout":
        await engine.execute_agent("agent", "hi", timeout=0.01)
        return
    caller = asyncio.create_task(engine.execute_agent("agent", "hi"))
    await agent.started.wait()
    if how == "engine_closed":
        await engine.cleanup()
        await caller
        return
    caller.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await caller


class TestStoppedRun:
    @pytest.mark.asyncio
    @pytest.mark.parametrize("how", ["timeout", "engine_closed", "cancelled"])
    @pytest.mark.parametrize("then_raise", [False, True])
    async def test_a_stopped_run_ends_with_one_agent_stopped_even_if_it_swallows_it(
        self, how: str, then_raise: bool
    ) -> None:
        """However a run is stopped, and whatever its agent does after swallowing the
        cancellation, its last event is one agent_stopped naming the reason, and the text
        it had streamed before is flushed ahead of it."""
        agent, agents = Swallower(then_raise=then_raise), AgentRegistry()
        agents.register("agent", agent)
        bridge = RecordingBridge()
        engine = _engine(bridge, agents, text_delta_interval_seconds=60)
        await _stop_by(how, engine, agent)
        events = bridge.events_for("user-1")
        assert agent.caught
        assert ["agent_started", "agent_text_delta", "agent_stopped"] == [
            event["type"] for event in events
        ]
        assert "partial " == events[1]["data"]["delta"]
        assert how == events[-1]["data"]["reason"]
        assert set(STOP_REASONS) >= {events[-1]["data"]["reason"]}

    @pytest.mark.asyncio
    async def test_nothing_is_sent_after_the_final_event(self) -> None:
        """A task the agent left behind reports nothing once the run has ended."""
        agents, leftovers = AgentRegistry(), []

        async def leaves_a_run_behind(run: AgentRun) -> str:
            leftovers.append(run)
            return "done"

        agents.register("agent", leaves_a_run_behind)
        bridge = RecordingBridge()
        await _engine(bridge, agents).execute_agent("agent", "hi")
        [run] = leftovers
        await run.think("late")
        await run.stream_text("late")
        await run.use_tool("late", inline_tool(str), object=1)
        assert run.is_finished
        assert ["agent_started", "agent_completed"] == bridge.types_for("user-1")

    @pytest.mark.asyncio
    async def test_a_failing_agent_still_gets_agent_error(self) -> None:
        """A real exception (nobody stopped the run) is agent_error, not agent_stopped."""
        agents = AgentRegistry()

        async def broken(run: AgentRun) -> None:
            await run.stream_text("about to fail")
            raise ValueError("bad")

        agents.register("broken", broken)
        bridge = RecordingBridge()
        result = await _engine(bridge, agents).execute_agent("broken", "hi")
        assert (False, "ValueError") == (result.success, result.error_type)
        assert ["agent_started", "agent_text_delta", "agent_error"] == bridge.types_for("user-1")


class TestSyncToolsInThreads:
    @pytest.mark.asyncio
    async def test_a_blocking_sync_tool_does_not_stall_another_users_run(self) -> None:
        """While one user's sync tool blocks, another user's run completes."""
        release, order = threading.Event(), []

        def blocking_lookup() -> str:
            released = release.wait(timeout=5)
            order.append("alice's tool returned")
            return "released" if released else "timed out"

        async def alice_agent(run: AgentRun) -> Any:
            return await run.use_tool("lookup", blocking_lookup)

        agents = AgentRegistry()
        agents.register("lookup", alice_agent)
        agents.register("demo", demo_agent)
        bridge = RecordingBridge()
        alice, bob = _engine(bridge, agents, "alice"), _engine(bridge, agents, "bob")
        alice_run = asyncio.create_task(alice.execute_agent("lookup", "hi"))
        await bridge.wait_for_events(2, user_id="alice")
        assert (await bob.execute_agent("demo", "one two")).success
        order.append("bob completed")
        release.set()
        assert "released" == (await alice_run).result
        assert ["bob completed", "alice's tool returned"] == order

    @pytest.mark.asyncio
    async def test_the_tool_thread_sees_the_callers_context_variables(self) -> None:
        """A sync tool runs off the event loop's thread and sees the run's context vars."""
        seen: dict[str, Any] = {}

        def tool() -> str:
            seen["thread"] = threading.get_ident()
            return REQUEST.get()

        REQUEST.set("request-7")
        result = await _run(RecordingBridge()).use_tool("tool", tool)
        assert "request-7" == result
        assert threading.get_ident() != seen["thread"]

    @pytest.mark.asyncio
    async def test_an_inline_tool_runs_on_the_event_loop_thread(self) -> None:
        """A tool marked with inline_tool is called on the loop's thread, keeping its name."""

        @inline_tool
        def where() -> int:
            return threading.get_ident()

        assert threading.get_ident() == await _run(RecordingBridge()).use_tool("where", where)
        assert "where" == where.__name__

    @pytest.mark.asyncio
    async def test_an_object_with_an_async_call_is_awaited_on_the_loop(self) -> None:
        """A callable object whose __call__ is async is awaited, not sent to a thread."""

        class Lookup:
            async def __call__(self) -> int:
                return threading.get_ident()

        assert threading.get_ident() == await _run(RecordingBridge()).use_tool("l", Lookup())

    @pytest.mark.asyncio
    async def test_a_sync_function_returning_an_awaitable_is_awaited(self) -> None:
        """A sync callable that returns a coroutine (a lambda around an async tool) works."""

        async def add(a: int, b: int) -> int:
            return a + b

        def deferred(a: int, b: int) -> Any:
            return add(a, b)

        assert 5 == await _run(RecordingBridge()).use_tool("add", deferred, a=2, b=3)


REQUEST: contextvars.ContextVar[str] = contextvars.ContextVar("REQUEST", default="none")
