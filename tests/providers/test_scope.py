"""Specification of ``scope()``: entering, nesting and tearing down scopes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from enginescope.errors import EngineScopeError
from enginescope.providers import (
    Scope,
    Scoped,
    ScopeTeardownError,
    ScopeUsageError,
    current_scope_value,
    get_current_scope,
    scope,
)

if TYPE_CHECKING:
    from conftest import Journal


def _in_scope(*resolved: Scoped[Any], error: Exception | None = None) -> None:
    """Resolve providers inside a sync scope, then let ``error`` leave the body."""
    with scope("u1"):
        for provider in resolved:
            provider()
        if error is not None:
            raise error


async def _in_async_scope(*resolved: Scoped[Any], error: Exception | None = None) -> None:
    """Resolve providers inside an async scope, then let ``error`` leave the body."""
    async with scope("u1"):
        for provider in resolved:
            await provider()
        if error is not None:
            raise error


class TestEntering:
    def test_with_yields_the_current_scope(self) -> None:
        """``with scope(v)`` returns the scope it made current, holding ``v``."""
        with scope("u1") as entered:
            assert (entered, "u1") == (get_current_scope(), current_scope_value())

    @pytest.mark.asyncio
    async def test_async_with_yields_the_current_scope(self) -> None:
        """``async with scope(v)`` makes the scope current as well."""
        async with scope("u1") as entered:
            assert (entered, "u1") == (get_current_scope(), current_scope_value())

    def test_nested_scope_shadows_value_and_links_parent(self) -> None:
        """A nested scope's value shadows the outer one and its parent is the outer scope."""
        with scope("outer") as outer:
            with scope("inner") as inner:
                assert ("inner", outer, 1) == (current_scope_value(), inner.parent, inner.depth)
            assert current_scope_value() == "outer"

    def test_scope_is_closed_after_exit(self) -> None:
        """Leaving the block closes the scope."""
        with scope("u1") as entered:
            assert not entered.closed
        assert entered.closed

    def test_a_scope_manager_is_single_use(self) -> None:
        """Entering the same scope manager twice is refused."""
        manager = scope("u1")
        with manager, pytest.raises(ScopeUsageError, match="already entered"), manager:
            pass

    def test_repr_shows_value_and_state(self) -> None:
        """The repr tells the value, depth and whether it is open."""
        assert repr(Scope("u1")) == "<Scope value='u1' depth=0 instances=0 finalizers=0 open>"


class TestTeardownOrder:
    def test_dependent_instances_are_torn_down_first(self, journal: Journal) -> None:
        """An instance built on another is released before the one it depends on."""
        base = Scoped(journal.generator, "base")
        middle = Scoped(lambda _b: journal.generator("middle"), base)
        top = Scoped(lambda _m: journal.generator("top"), middle)
        other = Scoped(journal.generator, "other")
        with scope("u1"):
            other()
            top()
        assert journal.closed() == ["top", "middle", "base", "other"]

    @pytest.mark.asyncio
    async def test_async_order_follows_creation_finish(self, journal: Journal) -> None:
        """Async instances are released newest-finished first."""
        base = Scoped(journal.agenerator, "base")

        async def on_base(_b: object) -> AsyncIterator[object]:
            async for item in journal.agenerator("child"):
                yield item

        child = Scoped(on_base, base)
        async with scope("u1"):
            await child()
        assert journal.closed() == ["child", "base"]

    def test_scope_is_closed_before_finalizers_run(self) -> None:
        """A finalizer sees its scope already closed."""
        seen: list[bool] = []

        def tracked() -> Iterator[None]:
            yield None
            current = get_current_scope()
            seen.append(current is not None and current.closed)

        with scope("u1"):
            Scoped(tracked)()
        assert seen == [True]


class TestExceptionsInTheBody:
    def test_exception_is_thrown_into_generator(self, journal: Journal) -> None:
        """A generator's teardown sees the exception that left the body, then it propagates."""
        provider = Scoped(journal.generator, "db")
        with pytest.raises(KeyError):
            _in_scope(provider, error=KeyError("boom"))
        assert journal.events == [("open", "db"), ("rollback", "db:KeyError")]

    @pytest.mark.asyncio
    async def test_exception_is_thrown_into_async_generator(self, journal: Journal) -> None:
        """An async generator's teardown sees the body's exception."""
        provider = Scoped(journal.agenerator, "db")
        with pytest.raises(KeyError):
            await _in_async_scope(provider, error=KeyError("boom"))
        assert journal.events == [("open", "db"), ("rollback", "db:KeyError")]

    def test_swallowing_generator_does_not_swallow_body_error(self) -> None:
        """A generator that swallows the thrown exception does not suppress it."""

        def swallow() -> Iterator[int]:
            with contextlib.suppress(KeyError):
                yield 1

        with pytest.raises(KeyError):
            _in_scope(Scoped(swallow), error=KeyError("boom"))

    def test_context_manager_gets_exception_info(self) -> None:
        """A context manager's __exit__ receives the body's exception."""
        received: list[object] = []

        class Recorder:
            def __enter__(self) -> Recorder:
                return self

            def __exit__(self, *exc_info: object) -> None:
                received.append(exc_info[1])

        error = KeyError("boom")
        with pytest.raises(KeyError):
            _in_scope(Scoped(Recorder), error=error)
        assert [error] == received

    def test_body_error_is_the_cause_of_teardown_failure(self) -> None:
        """When body and teardown both fail, the teardown group is raised from the body error."""

        def failing_close() -> Iterator[int]:
            try:
                yield 1
            except KeyError:
                raise OSError("teardown") from None

        with pytest.raises(ScopeTeardownError) as caught:
            _in_scope(Scoped(failing_close), error=KeyError("body"))
        assert isinstance(caught.value.__cause__, KeyError)
        assert isinstance(caught.value.exceptions[0], OSError)


class TestFailingFinalizers:
    def test_every_finalizer_runs_and_failures_are_grouped(self, journal: Journal) -> None:
        """One failing finalizer does not skip the others; all failures are in the group."""

        def failing(message: str) -> Iterator[str]:
            yield message
            journal.events.append(("failed", message))
            raise RuntimeError(message)

        first = Scoped(journal.generator, "first")
        bad_a, bad_b = Scoped(failing, "a"), Scoped(failing, "b")
        last = Scoped(journal.generator, "last")
        with pytest.raises(ScopeTeardownError) as caught:
            _in_scope(first, bad_a, bad_b, last)
        assert [str(e) for e in caught.value.exceptions] == ["b", "a"]
        assert journal.closed() == ["last", "first"]
        assert isinstance(caught.value, EngineScopeError)
        assert isinstance(caught.value, ExceptionGroup)

    def test_generator_yielding_twice_is_reported(self) -> None:
        """A generator that yields again during teardown is a usage error."""

        def twice() -> Iterator[int]:
            yield 1
            yield 2

        with pytest.raises(ScopeTeardownError) as caught:
            _in_scope(Scoped(twice))
        assert isinstance(caught.value.exceptions[0], ScopeUsageError)

    def test_sync_exit_reports_async_finalizers_and_runs_sync_ones(self, journal: Journal) -> None:
        """A sync ``with`` refuses async teardowns by name but still runs the sync ones."""
        sync_one = Scoped(journal.generator, "sync")
        async_one = Scoped(journal.agenerator, "async")

        async def resolve_both() -> None:
            with scope("u1"):
                sync_one()
                await async_one()

        async def main() -> tuple[ScopeTeardownError, list[str]]:
            with pytest.raises(ScopeTeardownError) as caught:
                await resolve_both()
            return caught.value, journal.closed()

        error, closed_at_exit = asyncio.run(main())
        assert closed_at_exit == ["sync"]
        assert "agenerator" in str(error.exceptions[0])
        assert "async with scope" in str(error.exceptions[0])


class TestCancellation:
    @pytest.mark.asyncio
    async def test_cancel_during_body_runs_every_finalizer(self, journal: Journal) -> None:
        """A cancelled body still tears everything down and stays cancelled."""
        first, second = Scoped(journal.agenerator, "first"), Scoped(journal.generator, "second")
        started = asyncio.Event()

        async def body() -> None:
            async with scope("u1"):
                await first()
                second()
                started.set()
                await asyncio.sleep(10)

        task = asyncio.create_task(body())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert journal.closed() == ["second:CancelledError", "first:CancelledError"]

    @pytest.mark.asyncio
    async def test_cancel_during_teardown_finishes_it(self, journal: Journal) -> None:
        """Cancelling the task while it tears down does not skip finalizers, then propagates."""
        in_teardown = asyncio.Event()

        async def slow() -> AsyncIterator[str]:
            yield "slow"
            in_teardown.set()
            await asyncio.sleep(0.05)
            journal.events.append(("close", "slow"))

        early, late = Scoped(journal.agenerator, "early"), Scoped(slow)

        async def body() -> None:
            async with scope("u1"):
                await early()
                await late()

        task = asyncio.create_task(body())
        await in_teardown.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert journal.closed() == ["slow", "early"]

    @pytest.mark.asyncio
    async def test_cancellation_wins_over_teardown_failures(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """When cancelled, failures are logged and the CancelledError still propagates."""

        async def broken() -> AsyncIterator[int]:
            try:
                yield 1
            except asyncio.CancelledError:
                raise OSError("teardown") from None

        started = asyncio.Event()

        async def body() -> None:
            async with scope("u1"):
                await Scoped(broken)()
                started.set()
                await asyncio.sleep(10)

        task = asyncio.create_task(body())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert [r.message for r in caplog.records if r.levelname == "ERROR"] == [
            "Finalizers failed while the scope was interrupted"
        ]

    @pytest.mark.asyncio
    async def test_in_flight_creation_is_cancelled_on_exit(self) -> None:
        """A creation still running when the scope exits is cancelled, not leaked."""
        gate = asyncio.Event()

        async def never() -> int:
            await gate.wait()
            return 1

        async with scope("u1") as entered:
            waiter = asyncio.ensure_future(Scoped(never)())
            await asyncio.sleep(0)
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert (entered._pending, entered.closed) == ({}, True)


class TestAccessors:
    def test_get_returns_this_scopes_instance_or_the_default(self) -> None:
        """Scope.get reads this scope's cache only, never the parent's."""
        provider = Scoped(dict)
        with scope("outer") as outer:
            made = provider()
            with scope("inner") as inner:
                assert (made, None, "none") == (
                    outer.get(provider),
                    inner.get(provider),
                    inner.get(provider, "none"),
                )

    def test_forget_drops_the_instance_but_keeps_its_teardown(self) -> None:
        """After forget the next resolve creates anew; both instances are released at exit."""
        released: list[int] = []
        serials = iter(range(1, 10))

        def make() -> Iterator[int]:
            serial = next(serials)
            yield serial
            released.append(serial)

        provider = Scoped(make)
        with scope("u1") as entered:
            first = provider()
            entered.forget(provider)
            second = provider()
        assert (1, 2, [2, 1]) == (first, second, released)

    def test_the_scope_says_how_it_was_entered(self) -> None:
        """is_async is True inside ``async with`` and False inside ``with``."""

        async def entered_async() -> bool:
            async with scope("u1") as entered:
                return entered.is_async

        with scope("u1") as entered:
            sync = entered.is_async
        assert (False, True) == (sync, asyncio.run(entered_async()))

    def test_scope_value_lives_beside_the_scope(self) -> None:
        """ScopeValue is defined in the scope module and re-exported by the package."""
        import importlib  # noqa: PLC0415 - the import is the test

        from enginescope import providers  # noqa: PLC0415

        scope_module = importlib.import_module("enginescope.providers.scope")
        assert providers.ScopeValue is scope_module.ScopeValue


class TestTeardownWithoutATask:
    """What can be released at once is released in the exiting task; the rest, newest first,
    in the shielded teardown."""

    @pytest.mark.asyncio
    async def test_an_async_finalizer_that_can_exit_now_needs_no_task(self) -> None:
        """A context manager whose exit_now succeeds is released in the exiting task."""
        released: list[tuple[str, asyncio.Task[Any] | None]] = []

        class Lease:
            async def __aenter__(self) -> str:
                return "lease"

            async def __aexit__(self, *exc_info: object) -> None:
                released.append(("awaited", asyncio.current_task()))

            def exit_now(self, exc: BaseException | None) -> bool:
                released.append(("now", asyncio.current_task()))
                return True

        async with scope("u1"):
            assert "lease" == await Scoped(Lease)()
        assert [("now", asyncio.current_task())] == released

    @pytest.mark.asyncio
    async def test_finalizers_that_must_wait_keep_the_newest_first_order(self) -> None:
        """The newest finalizers go at once; from the first that cannot, all are awaited."""
        order: list[str] = []

        def lease(name: str, *, now: bool) -> Any:
            class Lease:
                async def __aenter__(self) -> str:
                    return name

                async def __aexit__(self, *exc_info: object) -> None:
                    await asyncio.sleep(0)
                    order.append(f"{name} awaited")

                def exit_now(self, exc: BaseException | None) -> bool:
                    if now:
                        order.append(f"{name} now")
                    return now

            return Lease

        oldest, middle, newest = (
            Scoped(lease("oldest", now=True)),
            Scoped(lease("middle", now=False)),
            Scoped(lease("newest", now=True)),
        )
        async with scope("u1"):
            for provider in (oldest, middle, newest):
                await provider()
        assert ["newest now", "middle awaited", "oldest awaited"] == order

    @pytest.mark.asyncio
    async def test_a_failing_exit_now_is_reported_and_the_rest_still_run(self) -> None:
        """exit_now raising counts as that finalizer's failure; older ones still run."""
        order: list[str] = []

        class Broken:
            async def __aenter__(self) -> str:
                return "broken"

            async def __aexit__(self, *exc_info: object) -> None:
                order.append("broken awaited")

            def exit_now(self, exc: BaseException | None) -> bool:
                raise RuntimeError("exit_now failed")

        def older() -> Iterator[str]:
            yield "older"
            order.append("older released")

        async def use_both() -> None:
            async with scope("u1"):
                Scoped(older)()
                await Scoped(Broken)()

        with pytest.raises(ScopeTeardownError) as caught:
            await use_both()
        assert ["older released"] == order
        assert ["exit_now failed"] == [str(error) for error in caught.value.exceptions]
