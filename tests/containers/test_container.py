"""EngineContainer: resources, the scoped user engine, overriding, composition and captives."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
from dependency_injector import containers, providers
from dependency_injector.wiring import Provide, inject
from enginescope.containers import (
    ContainerShutDownError,
    EngineContainer,
    EngineSettings,
    user_scope,
)
from enginescope.engines import (
    AgentNotFoundError,
    AgentRegistry,
    AgentRun,
    AgentWebSocketBridge,
    ExecutionEngineFactory,
    UserEngineLimitError,
    UserExecutionContext,
    UserExecutionEngine,
)
from enginescope.engines.testing import FakeSocket, RecordingBridge
from enginescope.errors import EngineScopeError
from enginescope.providers import CaptiveDependencyError, NoActiveScopeError, ScopeUsageError

MakeContext = Callable[..., UserExecutionContext]


@pytest_asyncio.fixture
async def container(enginescope_bridge: RecordingBridge) -> AsyncIterator[EngineContainer]:
    """A started EngineContainer on a recording bridge, shut down after the test."""
    built = EngineContainer()
    built.settings.override(EngineSettings(max_engines_per_user=2))
    built.websocket_bridge.override(enginescope_bridge)
    await built.init_resources()
    yield built
    await built.shutdown_resources()


async def metrics(container: EngineContainer) -> dict[str, Any]:
    """The factory's counters, without the engine keys."""
    factory = await container.engine_factory()
    return factory.get_factory_metrics(include_keys=False)


async def settle(result: Awaitable[None] | None) -> None:
    """Await what init/shutdown_resources returned; it is None when nothing async started."""
    if result is not None:
        await result


def counts(snapshot: dict[str, Any]) -> tuple[int, int, int]:
    """(created, cleaned, active) from a metrics snapshot."""
    return (
        snapshot["total_engines_created"],
        snapshot["total_engines_cleaned"],
        snapshot["active_engines_count"],
    )


class TestResources:
    async def test_init_resources_builds_the_factory_from_the_settings(self) -> None:
        """The factory is built from the settings, the bridge and the registry singletons."""
        container = EngineContainer()
        container.settings.override(EngineSettings(max_engines_per_user=5, bridge_queue_size=3))
        await container.init_resources()

        factory = await container.engine_factory()
        bridge = await container.websocket_bridge()

        assert (5, bridge, container.agent_registry()) == (
            factory.max_engines_per_user,
            factory.websocket_bridge,
            factory.agent_registry,
        )
        assert 3 == bridge._queue_size
        await container.shutdown_resources()

    async def test_the_default_bridge_is_an_agent_websocket_bridge(self) -> None:
        """Without an override the container builds the in-process bridge."""
        container = EngineContainer()
        await container.init_resources()

        assert AgentWebSocketBridge is type(await container.websocket_bridge())
        await container.shutdown_resources()

    async def test_shutdown_closes_engines_factory_and_bridge_and_leaves_no_task(
        self, make_user_context: MakeContext
    ) -> None:
        """shutdown_resources closes every engine, the factory, the bridge and their tasks."""
        before = asyncio.all_tasks()
        container = EngineContainer()
        await container.init_resources()
        factory = await container.engine_factory()
        bridge = await container.websocket_bridge()
        socket = FakeSocket()
        bridge.register_connection("u-1", socket)
        engine = await factory.create_for_user(make_user_context("u-1"))

        await container.shutdown_resources()

        assert (False, True, True, 0) == (
            engine.is_active(),
            factory.is_shutdown,
            bridge.is_closed,
            factory.get_factory_metrics()["active_engines_count"],
        )
        assert before == asyncio.all_tasks()

    async def test_the_factory_shuts_down_before_the_bridge_closes(
        self, make_user_context: MakeContext
    ) -> None:
        """Engines closing at shutdown can still reach the bridge: the bridge closes last."""
        container = EngineContainer()
        await container.init_resources()
        factory = await container.engine_factory()
        bridge = await container.websocket_bridge()
        seen: list[bool] = []
        original = factory.shutdown

        async def shutdown() -> None:
            seen.append(bridge.is_closed)
            await original()

        factory.shutdown = shutdown  # type: ignore[method-assign]
        await factory.create_for_user(make_user_context())

        await container.shutdown_resources()

        assert [False] == seen

    async def test_everything_overridden_still_starts_and_stops(self) -> None:
        """With the bridge and the factory overridden by objects, nothing needs awaiting."""
        factory = ExecutionEngineFactory(RecordingBridge())
        container = EngineContainer()
        container.websocket_bridge.override(RecordingBridge())
        container.engine_factory.override(factory)

        await container.init_resources()
        await container.shutdown_resources()

        assert (factory, False) == (container.engine_factory(), factory.is_shutdown)
        await factory.shutdown()

    async def test_resources_start_lazily_when_first_resolved(
        self, make_user_context: MakeContext
    ) -> None:
        """Without init_resources the factory starts on the first user_engine resolve."""
        container = EngineContainer()
        async with user_scope(make_user_context("u-1")):
            engine = await container.user_engine()

        assert (1, 1, 0) == counts(await metrics(container))
        assert "u-1" == engine.context.user_id
        await container.shutdown_resources()


class TestUserEngine:
    async def test_created_through_the_factory_and_cleaned_up_when_the_scope_closes(
        self, container: EngineContainer, make_user_context: MakeContext
    ) -> None:
        """The scope's engine is counted by the factory and cleaned up on scope exit."""
        async with user_scope(make_user_context("u-1")):
            engine = await container.user_engine()
            inside = counts(await metrics(container))

        assert ((1, 0, 1), (1, 1, 0)) == (inside, counts(await metrics(container)))
        assert not engine.is_active()

    async def test_the_engine_belongs_to_the_scope_context(
        self, container: EngineContainer, make_user_context: MakeContext
    ) -> None:
        """user_engine and user_context both answer with the scope's context."""
        context = make_user_context("u-7")
        async with user_scope(context):
            engine = await container.user_engine()
            current = container.user_context()

        assert (context, context) == (engine.context, current)

    async def test_one_scope_resolves_one_engine(
        self, container: EngineContainer, make_user_context: MakeContext
    ) -> None:
        """Repeated and concurrent resolves in one scope give the same engine."""
        async with user_scope(make_user_context()):
            engines = await asyncio.gather(*(container.user_engine() for _ in range(10)))
            again = await container.user_engine()

        assert {id(again)} == {id(engine) for engine in engines}
        assert (1, 1, 0) == counts(await metrics(container))

    async def test_two_scopes_resolve_two_engines(
        self, container: EngineContainer, make_user_context: MakeContext
    ) -> None:
        """Each scope gets its own engine, even for the same user."""
        async with user_scope(make_user_context("u-1")):
            first = await container.user_engine()
        async with user_scope(make_user_context("u-1")):
            second = await container.user_engine()

        assert first.engine_id != second.engine_id

    async def test_nested_scopes_have_their_own_engines(
        self, container: EngineContainer, make_user_context: MakeContext
    ) -> None:
        """An inner scope's engine is its own and closes with the inner scope."""
        async with user_scope(make_user_context("u-1")):
            outer = await container.user_engine()
            async with user_scope(make_user_context("u-2")):
                inner = await container.user_engine()
            states = (outer.is_active(), inner.is_active())

        assert (("u-1", "u-2"), (True, False)) == (
            (outer.context.user_id, inner.context.user_id),
            states,
        )

    async def test_outside_a_scope_resolving_raises(self, container: EngineContainer) -> None:
        """Without a scope there is no user, so there is no engine."""
        with pytest.raises(NoActiveScopeError):
            await container.user_engine()
        with pytest.raises(NoActiveScopeError):
            container.user_context()

    async def test_an_error_in_the_scope_body_still_cleans_up(
        self, container: EngineContainer, make_user_context: MakeContext
    ) -> None:
        """The engine is cleaned up, and the body's error propagates unchanged."""
        engines: list[UserExecutionEngine] = []

        async def request() -> None:
            async with user_scope(make_user_context()):
                engines.append(await container.user_engine())
                raise KeyError("boom")

        with pytest.raises(KeyError, match="boom"):
            await request()

        assert (False, (1, 1, 0)) == (engines[0].is_active(), counts(await metrics(container)))

    async def test_cancelling_the_scope_task_cleans_up(
        self, container: EngineContainer, make_user_context: MakeContext
    ) -> None:
        """A cancelled request still gives its engine and its slot back."""
        resolved = asyncio.Event()
        engines: list[UserExecutionEngine] = []

        async def request() -> None:
            async with user_scope(make_user_context("u-1")):
                engines.append(await container.user_engine())
                resolved.set()
                await asyncio.Event().wait()

        task = asyncio.create_task(request())
        await resolved.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        factory = await container.engine_factory()
        assert (False, (1, 1, 0), 0) == (
            engines[0].is_active(),
            counts(await metrics(container)),
            factory.slot_ledger.count("u-1"),  # type: ignore[attr-defined]
        )

    async def test_the_engine_runs_agents_and_reaches_only_its_user(
        self,
        container: EngineContainer,
        enginescope_bridge: RecordingBridge,
        make_user_context: MakeContext,
    ) -> None:
        """The default registry's demo agent runs, and its events go to that user only."""
        async with user_scope(make_user_context("u-1")):
            engine = await container.user_engine()
            result = await engine.execute_agent("demo", "hello there world")

        assert (True, ["u-1"]) == (result.success, enginescope_bridge.user_ids())
        assert [
            "agent_started",
            "agent_thinking",
            "tool_executing",
            "tool_completed",
            "agent_completed",
        ] == enginescope_bridge.types_for("u-1")

    async def test_the_user_limit_holds_across_scopes(
        self, container: EngineContainer, make_user_context: MakeContext
    ) -> None:
        """Concurrent scopes of one user get at most max_engines_per_user engines."""
        release = asyncio.Event()

        async def request() -> str:
            async with user_scope(make_user_context("u-1")):
                try:
                    await container.user_engine()
                except UserEngineLimitError:
                    return "refused"
                await release.wait()
                return "served"

        tasks = [asyncio.create_task(request()) for _ in range(6)]
        await asyncio.sleep(0.01)
        release.set()
        outcomes = await asyncio.gather(*tasks)

        assert (2, 4) == (outcomes.count("served"), outcomes.count("refused"))
        assert 4 == (await metrics(container))["user_limit_rejections"]


class TestManyScopes:
    async def test_a_thousand_concurrent_scopes_each_see_only_their_own_engine(
        self, container: EngineContainer, make_user_context: MakeContext
    ) -> None:
        """1,000 interleaved scopes never see another scope's context or engine."""
        started = asyncio.Barrier(1000)

        async def request(number: int) -> tuple[str, str]:
            context = make_user_context(f"u-{number}")
            async with user_scope(context):
                engine = await container.user_engine()
                await started.wait()  # every scope is open at once
                await asyncio.sleep(0)
                again = await container.user_engine()
                assert (context, context, engine) == (
                    container.user_context(),
                    engine.context,
                    again,
                )
                return context.user_id, engine.engine_id

        seen = await asyncio.gather(*(request(number) for number in range(1000)))

        assert 1000 == len({user_id for user_id, _ in seen}) == len({e for _, e in seen})
        assert (1000, 1000, 0) == counts(await metrics(container))


class TestOverriding:
    async def test_the_bridge_override_receives_the_events(
        self, make_user_context: MakeContext
    ) -> None:
        """An overridden bridge is the one the engines talk to."""
        container = EngineContainer()
        bridge = RecordingBridge()
        container.websocket_bridge.override(bridge)
        await container.init_resources()

        async with user_scope(make_user_context("u-1")):
            await (await container.user_engine()).execute_agent("demo", "hi")

        assert (bridge, 5) == (container.websocket_bridge(), len(bridge.events_for("u-1")))
        await container.shutdown_resources()

    async def test_reset_override_restores_the_default_bridge(self) -> None:
        """After reset_override the container builds its own bridge again."""
        container = EngineContainer()
        container.websocket_bridge.override(RecordingBridge())
        container.websocket_bridge.reset_override()
        await container.init_resources()

        assert isinstance(await container.websocket_bridge(), AgentWebSocketBridge)
        await container.shutdown_resources()

    async def test_an_overridden_bridge_is_not_closed_by_the_container(self) -> None:
        """The container closes only the bridge it built; yours stays yours."""
        bridge = AgentWebSocketBridge()
        container = EngineContainer(websocket_bridge=providers.Object(bridge))
        await container.init_resources()

        await container.shutdown_resources()

        assert not bridge.is_closed
        await bridge.close()

    async def test_the_agent_registry_override_is_used(
        self, make_user_context: MakeContext
    ) -> None:
        """Engines run the agents of the overriding registry, and only those."""
        registry = AgentRegistry()

        @registry.agent("echo")
        async def echo(run: AgentRun) -> str:
            return run.message.upper()

        container = EngineContainer()
        container.agent_registry.override(registry)
        async with user_scope(make_user_context()):
            engine = await container.user_engine()
            result = await engine.execute_agent("echo", "hi")
            with pytest.raises(AgentNotFoundError, match="'demo'"):
                await engine.execute_agent("demo", "hi")

        assert "HI" == result.result
        await container.shutdown_resources()

    async def test_the_settings_override_configures_the_factory(self) -> None:
        """Overriding settings with an instance is how a test pins limits and timeouts."""
        container = EngineContainer()
        container.settings.override(EngineSettings(max_engines_per_user=1, max_concurrent_runs=9))
        await container.init_resources()

        factory = await container.engine_factory()

        assert (1, 9) == (factory.max_engines_per_user, factory.max_concurrent_runs)
        await container.shutdown_resources()

    async def test_infrastructure_managers_default_to_none_and_can_be_overridden(
        self, make_user_context: MakeContext
    ) -> None:
        """database_session_manager and redis_manager reach the engine when overridden."""
        sessions, cache = object(), object()
        container = EngineContainer()
        assert (None, None) == (container.database_session_manager(), container.redis_manager())
        container.database_session_manager.override(sessions)
        container.redis_manager.override(cache)

        async with user_scope(make_user_context()):
            engine = await container.user_engine()

        assert (sessions, cache) == (engine.database_session_manager, engine.redis_manager)
        await container.shutdown_resources()

    async def test_user_engine_can_be_overridden_inside_a_scope(
        self, container: EngineContainer, make_user_context: MakeContext
    ) -> None:
        """An override wins over the scope's engine and is undone by reset."""
        fake = object()
        async with user_scope(make_user_context()):
            real = await container.user_engine()
            with container.user_engine.override(providers.Object(fake)):
                overridden = await container.user_engine()
            after = await container.user_engine()

        assert (fake, real) == (overridden, after)

    async def test_user_engine_can_be_overridden_before_its_first_resolve(
        self, make_user_context: MakeContext
    ) -> None:
        """An object override on a fresh container can still be awaited."""
        fake = object()
        container = EngineContainer()
        container.user_engine.override(fake)

        async with user_scope(make_user_context()):
            resolved = await container.user_engine()

        assert fake is resolved


class App(containers.DeclarativeContainer):
    """An application container that composes the engine container."""

    engines = providers.Container(EngineContainer)
    greeting = providers.Object("hello")


@inject
async def handle(
    message: str,
    engine: UserExecutionEngine = Provide[App.engines.user_engine],
    context: UserExecutionContext = Provide[App.engines.user_context],
    greeting: str = Provide[App.greeting],
) -> tuple[str, str, str]:
    """An endpoint-like function with injected engine, context and app dependency."""
    result = await engine.execute_agent("demo", message)
    assert result.success
    return engine.context.user_id, context.user_id, greeting


@inject
async def factory_metrics(
    factory: ExecutionEngineFactory = Provide[App.engines.engine_factory],
) -> dict[str, Any]:
    """A health-check-like function with the injected factory."""
    return factory.get_factory_metrics(include_keys=False)


class TestComposition:
    @pytest_asyncio.fixture
    async def app(self, enginescope_bridge: RecordingBridge) -> AsyncIterator[App]:
        """The app container, wired to this module, with a recording bridge."""
        built = App()
        built.engines.websocket_bridge.override(enginescope_bridge)
        built.wire(modules=[sys.modules[__name__]])
        await built.init_resources()
        yield built
        await built.shutdown_resources()
        built.unwire()

    async def test_the_engine_container_works_inside_an_app_container(
        self, app: App, make_user_context: MakeContext
    ) -> None:
        """Resources start and stop through the app, engines resolve through it."""
        async with user_scope(make_user_context("u-1")):
            engine = await app.engines.user_engine()
        factory = await app.engines.engine_factory()

        assert ("u-1", (1, 1, 0)) == (
            engine.context.user_id,
            counts(factory.get_factory_metrics(include_keys=False)),
        )

    async def test_inject_awaits_the_scoped_engine(
        self, app: App, make_user_context: MakeContext, enginescope_bridge: RecordingBridge
    ) -> None:
        """@inject with Provide[App.engines.user_engine] hands an async function the engine."""
        async with user_scope(make_user_context("u-1")):
            answer = await handle("hi")

        assert (("u-1", "u-1", "hello"), 5) == (answer, len(enginescope_bridge.events_for("u-1")))

    async def test_inject_resolves_the_same_engine_within_a_scope(
        self, app: App, make_user_context: MakeContext
    ) -> None:
        """Two injected calls in one scope share the scope's engine."""
        async with user_scope(make_user_context("u-1")):
            await handle("one")
            await handle("two")

        assert (1, 1, 0) == counts(await factory_metrics())

    async def test_inject_outside_a_scope_raises(self, app: App) -> None:
        """An injected scoped engine outside a user scope is an error, not a shared engine."""
        with pytest.raises(NoActiveScopeError):
            await handle("hi")

    async def test_the_app_can_override_at_composition(
        self, make_user_context: MakeContext
    ) -> None:
        """providers.Container(EngineContainer, websocket_bridge=...) overrides for the app."""
        bridge = RecordingBridge()

        class Overriding(containers.DeclarativeContainer):
            engines = providers.Container(
                EngineContainer, websocket_bridge=providers.Object(bridge)
            )

        app = Overriding()
        await app.init_resources()
        async with user_scope(make_user_context("u-1")):
            await (await app.engines.user_engine()).execute_agent("demo", "hi")
        await app.shutdown_resources()

        assert 5 == len(bridge.events_for("u-1"))


class TestCaptiveDependencies:
    def test_a_singleton_on_user_engine_in_a_subclass_is_refused(self) -> None:
        """Subclassing with a Singleton that captures user_engine fails at class definition."""
        with pytest.raises(CaptiveDependencyError) as caught:

            class Captive(EngineContainer):
                holder = providers.Singleton(dict, engine=EngineContainer.user_engine)

        assert ("Singleton 'holder'", "AsyncScoped 'user_engine'") == (
            caught.value.holder,
            caught.value.captive,
        )

    def test_a_resource_on_user_context_in_a_subclass_is_refused(self) -> None:
        """A Resource that captures the user context is refused as well."""
        with pytest.raises(CaptiveDependencyError, match=r"'audit'.*'user_context'"):

            class Captive(EngineContainer):
                audit = providers.Resource(dict, user=EngineContainer.user_context)

    def test_short_lived_dependents_are_allowed(self) -> None:
        """A Factory on user_engine, or a Singleton on user_engine.provider, is fine."""

        class Fine(EngineContainer):
            per_call = providers.Factory(dict, engine=EngineContainer.user_engine)
            lookup = providers.Singleton(dict, engine=EngineContainer.user_engine.provider)

        assert {"per_call", "lookup"} <= set(Fine.providers)

    async def test_a_captive_singleton_in_the_app_container_is_refused_at_startup(self) -> None:
        """The factory checks the whole application container before it starts."""

        class Captive(containers.DeclarativeContainer):
            engines = providers.Container(EngineContainer)
            service = providers.Singleton(dict, engine=engines.user_engine)

        app = Captive()
        before = asyncio.all_tasks()
        with pytest.raises(CaptiveDependencyError, match=r"'service'.*'engines\.user_engine'"):
            await app.init_resources()
        await settle(app.shutdown_resources())

        assert before == asyncio.all_tasks()

    async def test_a_captive_override_is_refused_at_startup(self) -> None:
        """Overriding a provider with a captive Singleton is caught when the factory starts."""
        container = EngineContainer()
        container.agent_registry.override(providers.Singleton(dict, engine=container.user_engine))

        with pytest.raises(CaptiveDependencyError, match="'user_engine'"):
            await container.init_resources()
        await settle(container.shutdown_resources())


class TestAfterShutdown:
    async def test_a_resolve_after_shutdown_starts_nothing_and_says_why(
        self, make_user_context: MakeContext
    ) -> None:
        """After shutdown_resources, user_engine raises ContainerShutDownError; nothing starts."""
        container = EngineContainer()
        await container.init_resources()
        await container.shutdown_resources()
        before = asyncio.all_tasks()

        async with user_scope(make_user_context("u-1")):
            with pytest.raises(ContainerShutDownError, match="init_resources") as caught:
                await container.user_engine()

        assert isinstance(caught.value, EngineScopeError)
        assert isinstance(caught.value, RuntimeError)
        assert (False, False, False) == (
            container.engine_factory.initialized,
            container.websocket_bridge.initialized,
            container.slot_ledger.initialized,
        )
        assert before == asyncio.all_tasks()

    async def test_each_resource_refuses_a_resolve_after_shutdown(self) -> None:
        """The bridge and the factory are not rebuilt by a direct resolve either."""
        container = EngineContainer()
        await container.init_resources()
        await container.shutdown_resources()

        for provider in (container.websocket_bridge, container.engine_factory):
            with pytest.raises(ContainerShutDownError):
                await provider()

    async def test_init_resources_again_restarts_cleanly(
        self, make_user_context: MakeContext
    ) -> None:
        """init_resources after a shutdown builds a new factory and bridge that work."""
        container = EngineContainer()
        await container.init_resources()
        first = await container.engine_factory()
        await container.shutdown_resources()
        await container.init_resources()
        second = await container.engine_factory()
        async with user_scope(make_user_context("u-1")):
            result = await (await container.user_engine()).execute_agent("demo", "hi")
        await container.shutdown_resources()

        assert (True, True, False) == (result.success, first.is_shutdown, first is second)
        assert second.is_shutdown

    async def test_a_container_never_started_still_starts_on_first_resolve(self) -> None:
        """Before any init_resources, a resolve starts the factory as dependency-injector does."""
        container = EngineContainer()
        factory = await container.engine_factory()
        await container.shutdown_resources()

        assert isinstance(factory, ExecutionEngineFactory)


class TestSyncScope:
    async def test_a_sync_scope_is_refused_before_an_engine_is_created(
        self, container: EngineContainer, make_user_context: MakeContext
    ) -> None:
        """``with user_scope`` + ``await user_engine()``: refused at once, no engine, no slot."""
        with (
            user_scope(make_user_context("u-1")),
            pytest.raises(ScopeUsageError, match="async with") as caught,
        ):
            await container.user_engine()

        snapshot = await metrics(container)
        factory = await container.engine_factory()
        assert (0, 0, 0) == counts(snapshot)
        assert {} == factory.get_active_contexts()
        assert "user_scope" in str(caught.value)


class TestFactoryStart:
    def test_the_factory_resource_checks_captives_and_injects_nothing_unused(self) -> None:
        """The factory starts through FactoryResource; every injection is a factory option."""
        import inspect  # noqa: PLC0415 - only this test reads the signature

        from enginescope.containers._lifecycle import FactoryResource  # noqa: PLC0415
        from enginescope.containers._resources import open_engine_factory  # noqa: PLC0415

        parameters = set(inspect.signature(open_engine_factory).parameters)
        assert isinstance(EngineContainer.engine_factory, FactoryResource)
        assert set(EngineContainer.engine_factory.kwargs) == parameters
        assert "before_start" not in parameters


class TestNestedUserScopes:
    async def test_a_nested_scope_of_the_same_user_has_its_own_engine_and_slot(
        self, container: EngineContainer, make_user_context: MakeContext
    ) -> None:
        """As documented on user_scope: each scope is one engine, so nesting takes a slot."""
        async with user_scope(make_user_context("u-1")):
            outer = await container.user_engine()
            async with user_scope(make_user_context("u-1")):
                inner = await container.user_engine()
                factory = await container.engine_factory()
                active = factory.get_active_contexts()

        assert outer is not inner
        assert {"u-1": 2} == active
