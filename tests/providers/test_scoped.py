"""Specification of ``Scoped``: one instance per scope, any kind of callable."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any

import pytest
from dependency_injector import containers, providers
from enginescope.providers import (
    NoActiveScopeError,
    ScopeClosedError,
    Scoped,
    ScopeTeardownError,
    ScopeUsageError,
    ScopeValue,
    get_current_scope,
    scope,
)

if TYPE_CHECKING:
    from conftest import Journal, Resource


class TestCaching:
    def test_same_instance_within_one_scope(self, journal: Journal) -> None:
        """Resolving twice in one scope returns the same instance."""
        provider = Scoped(journal.make, "db")
        with scope("u1"):
            first, second = provider(), provider()
        assert first is second
        assert journal.created == 1

    def test_new_instance_per_scope(self, journal: Journal) -> None:
        """Each scope gets its own instance."""
        provider = Scoped(journal.make, "db")
        with scope("u1"):
            first = provider()
        with scope("u2"):
            second = provider()
        assert [first.serial, second.serial] == [1, 2]

    def test_child_scope_gets_its_own_instance(self, journal: Journal) -> None:
        """A nested scope does not reuse its parent's instance."""
        provider = Scoped(journal.make, "db")
        with scope("outer"):
            outer = provider()
            with scope("inner"):
                inner = provider()
            assert outer is provider()
        assert outer is not inner

    def test_injected_providers_are_resolved(self, journal: Journal) -> None:
        """Provider arguments are resolved before the callable is called."""
        provider = Scoped(lambda user, n: (user, n), ScopeValue(), n=providers.Object(3))
        with scope("u1"):
            assert provider() == ("u1", 3)

    def test_call_arguments_are_refused(self, journal: Journal) -> None:
        """Calling a Scoped with arguments is an error, because the instance is shared."""
        provider = Scoped(journal.make, "db")
        with scope("u1"), pytest.raises(ScopeUsageError, match="takes no call arguments"):
            provider("extra")


class TestCallableKinds:
    def test_sync_function(self, journal: Journal) -> None:
        """A plain callable's return value is the instance."""
        with scope("u1"):
            assert Scoped(journal.make, "db")().name == "db"

    def test_generator_teardown_runs_on_exit(self, journal: Journal) -> None:
        """The code after a generator's yield runs when the scope exits."""
        provider = Scoped(journal.generator, "db")
        with scope("u1"):
            assert provider().name == "db"
            assert journal.closed() == []
        assert journal.closed() == ["db"]

    def test_context_manager_is_entered_and_exited(self, journal: Journal) -> None:
        """A returned context manager is entered; its __exit__ runs on scope exit."""
        provider = Scoped(contextmanager(journal.generator), "cm")
        with scope("u1"):
            assert provider().name == "cm"
        assert journal.events == [("open", "cm"), ("close", "cm")]

    @pytest.mark.asyncio
    async def test_async_function(self, journal: Journal) -> None:
        """An async callable is awaited and its result cached."""

        async def make() -> Resource:
            await asyncio.sleep(0)
            return journal.make("a")

        provider = Scoped(make)
        async with scope("u1"):
            assert (await provider()) is (await provider())
        assert journal.created == 1

    @pytest.mark.asyncio
    async def test_async_generator_teardown(self, journal: Journal) -> None:
        """An async generator's code after yield runs on async exit."""
        provider = Scoped(journal.agenerator, "agen")
        async with scope("u1"):
            assert (await provider()).name == "agen"
        assert journal.events == [("open", "agen"), ("close", "agen")]

    @pytest.mark.asyncio
    async def test_async_context_manager(self, journal: Journal) -> None:
        """A returned async context manager is entered and exited."""
        provider = Scoped(asynccontextmanager(journal.agenerator), "acm")
        async with scope("u1"):
            assert (await provider()).name == "acm"
        assert journal.events == [("open", "acm"), ("close", "acm")]

    @pytest.mark.asyncio
    async def test_async_dependency_is_awaited(self, journal: Journal) -> None:
        """A sync callable with an async dependency receives the awaited value."""
        source = Scoped(journal.agenerator, "source")
        provider = Scoped(lambda src: f"uses {src.name}", source)
        async with scope("u1"):
            assert await provider() == "uses source"

    def test_generator_that_does_not_yield(self) -> None:
        """A generator that returns without yielding is a usage error."""

        def empty() -> Iterator[int]:
            yield from ()

        with scope("u1"), pytest.raises(ScopeUsageError, match="did not yield"):
            Scoped(empty)()

    def test_async_callable_without_loop(self) -> None:
        """An async Scoped resolved with no running loop says to await it."""

        async def make() -> int:
            return 1

        with scope("u1"), pytest.raises(ScopeUsageError, match="resolve it with `await`"):
            Scoped(make)()


class TestConcurrency:
    @pytest.mark.asyncio
    async def test_concurrent_first_resolves_create_one_instance(self, journal: Journal) -> None:
        """Fifty concurrent first resolves in one scope share one creation."""

        async def make() -> Resource:
            await asyncio.sleep(0.01)
            return journal.make("shared")

        provider = Scoped(make)
        async with scope("u1"):
            results = await asyncio.gather(*(provider() for _ in range(50)))
        assert journal.created == 1
        assert {id(results[0])} == {id(r) for r in results}

    @pytest.mark.asyncio
    async def test_failed_creation_is_evicted_and_retried(self) -> None:
        """A failed creation raises to every waiter, and the next resolve tries again."""
        attempts: list[int] = []

        async def flaky() -> int:
            attempts.append(len(attempts))
            await asyncio.sleep(0.01)
            if len(attempts) == 1:
                raise ConnectionError("first attempt fails")
            return len(attempts)

        provider = Scoped(flaky)
        async with scope("u1"):
            outcomes = await asyncio.gather(*(provider() for _ in range(5)), return_exceptions=True)
            await asyncio.sleep(0)
            retried = await provider()
        assert sum(isinstance(o, ConnectionError) for o in outcomes) == 5
        assert (retried, attempts) == (2, [0, 1])

    @pytest.mark.asyncio
    async def test_cancelled_waiter_does_not_cancel_creation(self, journal: Journal) -> None:
        """Cancelling one waiter leaves the shared creation running for the others."""

        async def make() -> Resource:
            await asyncio.sleep(0.02)
            return journal.make("shared")

        provider = Scoped(make)
        async with scope("u1"):
            waiters = [asyncio.create_task(_await(provider)) for _ in range(3)]
            await asyncio.sleep(0)
            waiters[1].cancel()
            survivors = await asyncio.gather(waiters[0], waiters[2])
        assert [r.name for r in survivors] == ["shared", "shared"]
        assert waiters[1].cancelled()

    @pytest.mark.asyncio
    async def test_a_cancelled_creator_does_not_cancel_the_others(self, journal: Journal) -> None:
        """When the task running the shared creation is cancelled, the other resolves are
        not: they create the instance again, once, and get it."""
        attempts = 0

        async def make() -> Resource:
            nonlocal attempts
            attempts += 1
            await asyncio.sleep(0.02)
            return journal.make("shared")

        provider = Scoped(make)
        async with scope("u1"):
            waiters = [asyncio.create_task(_await(provider)) for _ in range(3)]
            await asyncio.sleep(0)
            waiters[0].cancel()  # the first to run drives the creation
            survivors = await asyncio.gather(waiters[1], waiters[2])
            again = await provider()
        assert waiters[0].cancelled()
        assert ["shared", "shared"] == [r.name for r in survivors]
        assert (2, 1) == (attempts, journal.created)
        assert again is survivors[0]

    @pytest.mark.asyncio
    async def test_a_creation_that_never_suspends_needs_no_task(self, journal: Journal) -> None:
        """An async creation that does not suspend runs in the resolving task itself."""
        tasks: list[asyncio.Task[Any] | None] = []

        async def make() -> Resource:
            tasks.append(asyncio.current_task())
            return journal.make("inline")

        provider = Scoped(make)
        async with scope("u1"):
            assert "inline" == (await provider()).name
        assert [asyncio.current_task()] == tasks

    @pytest.mark.asyncio
    async def test_tasks_spawned_in_a_scope_share_it(self, journal: Journal) -> None:
        """A task created inside a scope resolves the scope's instance."""
        provider = Scoped(journal.make, "db")
        async with scope("u1"):
            mine = provider()
            theirs = await asyncio.create_task(_resolve(provider))
        assert mine is theirs

    @pytest.mark.asyncio
    async def test_thousand_concurrent_scopes_are_isolated(self) -> None:
        """A thousand concurrent scopes each see only their own instance."""
        provider = Scoped(lambda user: {"user": user}, ScopeValue())

        async def run(user: int) -> tuple[int, object]:
            async with scope(user):
                first = provider()
                await asyncio.sleep(0)
                assert first is provider()
                return user, first["user"]

        results = await asyncio.gather(*(run(u) for u in range(1000)))
        assert [(u, u) for u in range(1000)] == results


async def _await(provider: Scoped[Any]) -> Any:
    return await provider()


async def _resolve(provider: Scoped[Any]) -> Any:
    await asyncio.sleep(0)
    return provider()


class TestScopeRequired:
    def test_outside_any_scope(self, journal: Journal) -> None:
        """Resolving with no scope raises NoActiveScopeError that says what to do."""
        with pytest.raises(NoActiveScopeError, match=r"enter `scope\(value\)`"):
            Scoped(journal.make, "db")()

    @pytest.mark.asyncio
    async def test_task_that_outlives_its_scope(self, journal: Journal) -> None:
        """A task resolving after its scope closed gets ScopeClosedError."""
        provider = Scoped(journal.make, "db")
        gate = asyncio.Event()

        async def late() -> Any:
            await gate.wait()
            return provider()

        async with scope("u1"):
            provider()
            task = asyncio.create_task(late())
        gate.set()
        with pytest.raises(ScopeClosedError, match="already closed"):
            await task


class TestOverriding:
    def test_override_bypasses_the_scope_cache(self, journal: Journal) -> None:
        """An overriding provider is called instead, every time."""
        provider = Scoped(journal.make, "real")
        with scope("u1"):
            with provider.override(providers.Factory(journal.make, "fake")):
                first, second = provider(), provider()
            assert (first.name, second.name) == ("fake", "fake")
            assert first is not second

    def test_reset_override_restores_scoping(self, journal: Journal) -> None:
        """After reset_override the provider scopes its own instance again."""
        provider = Scoped(journal.make, "real")
        provider.override(providers.Object("fake"))
        provider.reset_override()
        with scope("u1"):
            assert provider() is provider()
            assert provider().name == "real"

    def test_override_works_outside_a_scope(self) -> None:
        """An override is honoured even with no scope active."""
        provider = Scoped(object)
        provider.override(providers.Object("stub"))
        assert provider() == "stub"


class TestProviderProtocol:
    def test_related_yields_injected_providers(self) -> None:
        """``related`` lists the injected providers and then the overriding ones."""
        dependency, keyword, overriding = ScopeValue(), providers.Object(1), providers.Object(2)
        provider = Scoped(dict, dependency, k=keyword)
        provider.override(overriding)
        assert [dependency, keyword, overriding] == list(provider.related)

    def test_deepcopy_keeps_structure(self) -> None:
        """A deep copy has copied injections and overridings, resolved through the memo."""
        shared = providers.Factory(list)
        provider = Scoped(lambda a, b: (a, b), shared, b=shared)
        provider.override(providers.Object("o"))
        memo: dict[int, Any] = {}
        copied = copy.deepcopy(provider, memo)
        assert copied is not provider
        assert copied.args[0] is copied.kwargs["b"]
        assert copied.args[0] is memo[id(shared)]
        assert copied.args[0] is not shared
        assert copied is copy.deepcopy(provider, memo)
        assert [o.provides for o in copied.overridden] == ["o"]

    def test_copied_provider_has_its_own_cache_key(self, journal: Journal) -> None:
        """A copy is a different provider, so it owns a separate instance in a scope."""
        provider = Scoped(journal.make, "db")
        copied = copy.deepcopy(provider)
        with scope("u1"):
            assert provider() is not copied()

    def test_repr_names_the_callable(self) -> None:
        """The repr says it is Scoped and which callable it wraps."""
        assert repr(Scoped(dict, 1, k=2)).startswith("<Scoped dict args=1 kwargs=['k']")


class TestInDeclarativeContainer:
    def test_singleton_scoped_and_factory(self, journal: Journal) -> None:
        """In a container, scoped instances are per scope while the singleton is shared."""

        class Container(containers.DeclarativeContainer):
            settings = providers.Singleton(dict, dsn="mem://")
            session = Scoped(lambda settings, user: (settings["dsn"], user), settings, ScopeValue())
            service = providers.Factory(lambda session: {"session": session}, session)

        container = Container()
        with scope("u1"):
            first = container.service()
            assert first["session"] is container.service()["session"]
        with scope("u2"):
            second = container.service()
        assert first["session"] == ("mem://", "u1")
        assert second["session"] == ("mem://", "u2")
        assert container.settings() is container.settings()

    def test_container_copy_keeps_scoped_wiring(self) -> None:
        """Instantiating a container copies Scoped providers with their dependencies."""

        class Container(containers.DeclarativeContainer):
            user = ScopeValue()
            greeting = Scoped(lambda user: f"hi {user}", user)

        container = Container()
        assert container.greeting is not Container.greeting
        assert [container.user] == list(container.greeting.related)
        with scope("ada"):
            assert container.greeting() == "hi ada"

    def test_current_scope_is_unset_after_exit(self) -> None:
        """After the with block the previous (no) scope is current again."""
        with scope("u1"):
            assert get_current_scope() is not None
        assert get_current_scope() is None


class TestResourceInjection:
    @pytest.mark.asyncio
    async def test_started_async_resource_is_injected_as_its_value(self) -> None:
        """A started async Resource is injected as its value; the resolve stays awaitable."""

        async def open_pool() -> Any:
            yield "pool"

        pool = providers.Resource(open_pool)
        provider = Scoped(lambda pool, user: (pool, user), pool, ScopeValue())
        await pool.init()
        async with scope("ada"):
            assert ("pool", "ada") == await provider()
        await pool.shutdown()

    @pytest.mark.asyncio
    async def test_override_of_a_started_resource_is_injected(self) -> None:
        """Overriding a started Resource injects the override, not the started value."""

        async def open_pool() -> Any:
            yield "pool"

        pool = providers.Resource(open_pool)
        provider = Scoped(lambda pool: pool, pool)
        await pool.init()
        with pool.override(providers.Object("fake pool")):
            async with scope("ada"):
                assert "fake pool" == await provider()
        await pool.shutdown()

    @pytest.mark.asyncio
    async def test_resource_not_started_is_started_by_the_resolve(self) -> None:
        """A Resource not started yet is started by the first resolve, as when called."""

        async def open_pool() -> Any:
            yield "pool"

        pool = providers.Resource(open_pool)
        provider = Scoped(lambda pool: pool, pool)
        async with scope("ada"):
            assert "pool" == await provider()
        assert pool.initialized
        await pool.shutdown()


class TestTimeoutsInsideCreationAndTeardown:
    @pytest.mark.asyncio
    async def test_timeout_in_teardown_is_the_finalizers_own(self) -> None:
        """An asyncio.timeout in a teardown fires inside the teardown, not in the caller."""

        async def resource() -> Any:
            yield "r"
            async with asyncio.timeout(0.01):
                await asyncio.sleep(1)

        provider: Scoped[Any] = Scoped(resource)
        with pytest.raises(ScopeTeardownError) as caught:
            async with scope("u1"):
                assert "r" == await provider()
        assert [TimeoutError] == [type(error) for error in caught.value.exceptions]

    @pytest.mark.asyncio
    async def test_timeout_in_creation_raises_timeout_error(self) -> None:
        """An asyncio.timeout before the yield raises TimeoutError to the resolver."""

        async def resource() -> Any:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(1)
            yield "never"

        provider: Scoped[Any] = Scoped(resource)
        async with scope("u1"):
            with pytest.raises(TimeoutError):
                await provider()


class TestBuilding:
    def test_set_provides_replaces_the_callable(self) -> None:
        """set_provides returns the provider and later instances use the new callable."""
        provider: Scoped[Any] = Scoped(dict)
        assert provider is provider.set_provides(list)
        with scope("u1"):
            assert [] == provider()

    def test_args_are_set_added_and_cleared(self) -> None:
        """set_args replaces, add_args appends, clear_args drops the positional injections."""
        provider: Scoped[Any] = Scoped(lambda *args: args, 1)
        seen = [provider.set_args(2, 3).args, provider.add_args(4).args, provider.clear_args().args]
        assert [(2, 3), (2, 3, 4), ()] == seen

    def test_kwargs_are_set_added_and_cleared(self) -> None:
        """set_kwargs replaces, add_kwargs adds, clear_kwargs drops the keyword injections."""
        provider: Scoped[Any] = Scoped(dict, a=1)
        seen = [
            provider.set_kwargs(b=2).kwargs,
            provider.add_kwargs(c=providers.Object(3)).kwargs,
        ]
        with scope("u1"):
            built = provider()
        assert [{"b": 2}, {"b": 2, "c": provider.kwargs["c"]}] == seen
        assert ({"b": 2, "c": 3}, {}) == (built, provider.clear_kwargs().kwargs)

    def test_injections_changed_after_a_resolve_apply_to_the_next_scope(self) -> None:
        """Each set_/add_/clear_ call after a resolve is what the next scope's instance gets."""
        provider: Scoped[Any] = Scoped(lambda *args, **kwargs: (args, kwargs), 1, a=1)
        built = []
        for change in (
            lambda: provider.set_args(providers.Object(2)),
            lambda: provider.add_args(3),
            lambda: provider.set_kwargs(b=providers.Object(2)),
            lambda: provider.add_kwargs(c=3),
            provider.clear_args,
            provider.clear_kwargs,
        ):
            with scope("before"):
                provider()
            change()
            with scope("after"):
                built.append(provider())
        assert [
            ((2,), {"a": 1}),
            ((2, 3), {"a": 1}),
            ((2, 3), {"b": 2}),
            ((2, 3), {"b": 2, "c": 3}),
            ((), {"b": 2, "c": 3}),
            ((), {}),
        ] == built

    def test_built_in_a_containers_init_it_is_injected(self) -> None:
        """Providers built step by step in a container's ``__init__`` work as declared ones."""

        class App(containers.DeclarativeContainer):
            user = ScopeValue()
            greeting = Scoped(str)

        app = App()
        app.greeting.set_provides(lambda user, punctuation: f"hi {user}{punctuation}")
        app.greeting.add_args(app.user).add_kwargs(punctuation="!")
        with scope("ann"):
            assert "hi ann!" == app.greeting()


class TestReset:
    def test_reset_drops_the_current_scopes_instance(self, journal: Journal) -> None:
        """After reset the next resolve in the same scope is a new instance."""
        provider = Scoped(journal.generator, "db")
        with scope("u1"):
            first = provider()
            provider.reset()
            second = provider()
        assert ((1, 2), ["db", "db"]) == ((first.serial, second.serial), journal.closed())

    def test_reset_leaves_other_scopes_alone(self, journal: Journal) -> None:
        """Resetting in an inner scope keeps the outer scope's instance."""
        provider = Scoped(journal.make, "db")
        with scope("outer"):
            outer = provider()
            with scope("inner"):
                provider()
                provider.reset()
            assert outer is provider()

    def test_reset_outside_a_scope_does_nothing(self) -> None:
        """Outside every scope reset is a no-op, as for ContextLocalSingleton."""
        provider = Scoped(dict)
        provider.reset()
        assert get_current_scope() is None
