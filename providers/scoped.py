"""``Scoped``: a dependency-injector provider with one instance per scope."""

from __future__ import annotations

import asyncio
import inspect
import types
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

from dependency_injector import providers
from enginescope.providers._finalizers import acquire_async, acquire_sync, needs_async
from enginescope.providers.errors import ScopeUsageError
from enginescope.providers.scope import Scope, require_open_scope, scope_now

__all__ = ["Scoped"]

T = TypeVar("T")

_MISSING: Any = object()


class Scoped(providers.Provider[T]):
    """Provide one instance of ``provides(*args, **kwargs)`` per scope.

    ``provides`` may be a sync or async callable, a generator or async generator function
    (the code after ``yield`` is the teardown) or return a (async) context manager, which is
    entered. Injected providers are resolved by an inner ``providers.Callable``, so async
    dependencies are awaited for you. Async creations are cached as a future, so concurrent
    first resolves share one instance; a failed creation is evicted and retried next time.
    An override bypasses the scope cache.

    Like dependency-injector's ``Factory``, it can be built step by step:
    :meth:`set_provides`, :meth:`set_args` / :meth:`add_args` / :meth:`clear_args`,
    :meth:`set_kwargs` / :meth:`add_kwargs` / :meth:`clear_kwargs` (each returns the
    provider); :meth:`reset` drops the current scope's instance, as
    ``ContextLocalSingleton.reset()`` does.
    """

    __slots__ = ("_callable", "_plan")

    def __init__(self, provides: Any = None, *args: Any, **kwargs: Any) -> None:
        self._callable: providers.Callable[Any] = providers.Callable(provides, *args, **kwargs)
        self._plan: _Plan | None = None  # how to resolve the injections, made on first use
        super().__init__()

    def __repr__(self) -> str:
        provides = self.provides
        name = getattr(provides, "__qualname__", None) or repr(provides)
        kind = type(self).__name__
        return (
            f"<{kind} {name} args={len(self.args)} kwargs={sorted(self.kwargs)} at {id(self):#x}>"
        )

    def __str__(self) -> str:
        return self.__repr__()

    def __deepcopy__(self, memo: dict[Any, Any] | None) -> Scoped[T]:
        memo = {} if memo is None else memo
        copied = memo.get(id(self))
        if copied is not None:
            return copied  # type: ignore[no-any-return]
        copied = self.__class__()
        memo[id(self)] = copied
        provides = self.provides
        if providers.is_provider(provides):
            provides = providers.deepcopy(provides, memo)
        copied._callable = providers.Callable(
            provides,
            *providers.deepcopy(self.args, memo),
            **providers.deepcopy(self.kwargs, memo),
        )
        self._copy_overridings(copied, memo)
        return copied

    @property
    def provides(self) -> Any:
        """The callable that creates the instance."""
        return self._callable.provides

    @property
    def args(self) -> tuple[Any, ...]:
        """Positional injections."""
        return self._callable.args

    @property
    def kwargs(self) -> dict[str, Any]:
        """Keyword injections."""
        return self._callable.kwargs

    def set_provides(self, provides: Any) -> Scoped[T]:
        """Create instances with ``provides`` from now on."""
        self._callable.set_provides(provides)
        return self

    def set_args(self, *args: Any) -> Scoped[T]:
        """Replace the positional injections."""
        self._callable.set_args(*args)
        self._plan = None
        return self

    def add_args(self, *args: Any) -> Scoped[T]:
        """Append positional injections."""
        self._callable.add_args(*args)
        self._plan = None
        return self

    def clear_args(self) -> Scoped[T]:
        """Drop every positional injection."""
        self._callable.clear_args()
        self._plan = None
        return self

    def set_kwargs(self, **kwargs: Any) -> Scoped[T]:
        """Replace the keyword injections."""
        self._callable.set_kwargs(**kwargs)
        self._plan = None
        return self

    def add_kwargs(self, **kwargs: Any) -> Scoped[T]:
        """Add (or replace) keyword injections."""
        self._callable.add_kwargs(**kwargs)
        self._plan = None
        return self

    def clear_kwargs(self) -> Scoped[T]:
        """Drop every keyword injection."""
        self._callable.clear_kwargs()
        self._plan = None
        return self

    def reset(self) -> None:
        """Drop the current scope's instance, so the next resolve there creates a new one.

        Its teardown still runs when the scope closes. Outside every scope: nothing to do.
        """
        current = scope_now()
        if current is not None:
            current.forget(self)

    @property
    def related(self) -> Iterator[providers.Provider[Any]]:
        """The injected providers, then the overriding ones."""
        yield from self._callable.related
        yield from super().related

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Resolve. The instance already cached in the current scope is returned directly,
        skipping dependency-injector's generic call machinery (which costs more than the
        lookup itself); a first resolve, an override or call arguments go through it."""
        current = scope_now()
        if current is not None and not (args or kwargs):
            value = current.get(self, _MISSING)
            if (
                isinstance(value, asyncio.Future)  # async results are cached as futures
                or (value is not _MISSING and not self.is_async_mode_enabled())
            ) and self.last_overriding is None:
                return value
        return super().__call__(*args, **kwargs)

    def _provide(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        current = scope_now()
        if current is not None and not (args or kwargs):
            value = current.get(self, _MISSING)
            if value is not _MISSING:
                return value
        return self._create(args, kwargs)

    def _create(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if args or kwargs:
            raise ScopeUsageError(f"{self!r} takes no call arguments; inject them instead.")
        current = require_open_scope(self)
        pending = current.pending(self)
        if pending is not None:
            return pending.join()
        raw = self._call_provides()
        if needs_async(raw):
            return self._start_async(current, raw)
        value, finalizer = acquire_sync(raw, self)
        current.store(self, value, finalizer)
        return value

    def _call_provides(self) -> Any:
        """Call ``provides`` with its injections, resolved as dependency-injector does.

        With an async injection the call is a coroutine that awaits it first. Futures that
        are already done (an async Resource once started) are read at once, where
        dependency-injector's own gathering of them takes several trips through the loop;
        a started Resource is read without the call, which wraps it in a new future.
        """
        plan = self._plan
        if plan is None:
            plan = self._plan = _Plan(self.args, self.kwargs)
        if (
            plan.resources
            and self.is_async_mode_undefined()
            and any(resource.is_async_mode_enabled() for resource in plan.resources)
        ):
            self.enable_async_mode()  # injected as its value, it is still async to resolve
        args = [_inject(kind, value) for kind, value in plan.positional]
        kwargs = {name: _inject(kind, value) for name, kind, value in plan.named}
        if any(map(_is_async, args)) or any(map(_is_async, kwargs.values())):
            return self._call_when_ready(args, kwargs)
        return self.provides(*args, **kwargs)

    async def _call_when_ready(self, args: list[Any], kwargs: dict[str, Any]) -> Any:
        values = await _gathered((*args, *kwargs.values()))
        named = dict(zip(kwargs, values[len(args) :], strict=True))
        result = self.provides(*values[: len(args)], **named)
        return await result if _is_async(result) else result

    def _start_async(self, current: Scope, raw: object) -> Coroutine[Any, Any, Any]:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            if inspect.iscoroutine(raw):
                raw.close()
            raise ScopeUsageError(f"{self!r} is async; resolve it with `await`.") from None
        return current.start(self, self._create_async(current, raw), self._resolve_again).join()

    def _resolve_again(self) -> Any:
        return self._provide((), {})

    async def _create_async(self, current: Scope, raw: object) -> Any:
        value, finalizer = await acquire_async(raw, self)
        try:
            current.add_finalizer(finalizer)
        except ScopeUsageError:
            if finalizer is not None:
                await finalizer.release(None)
            raise
        return value


_VALUE, _CALL, _RESOURCE = "value", "call", "resource"


class _Plan:
    """How a ``Scoped`` resolves its injections, worked out once per set of injections:
    each is a plain value (also a delegated provider), a provider to call, or a Resource."""

    __slots__ = ("named", "positional", "resources")

    def __init__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.positional = tuple((_kind(value), value) for value in args)
        self.named = tuple((name, _kind(value), value) for name, value in kwargs.items())
        kinds = (*self.positional, *((kind, value) for _, kind, value in self.named))
        self.resources = tuple(value for kind, value in kinds if kind is _RESOURCE)


def _kind(value: Any) -> str:
    if not providers.is_provider(value) or providers.is_delegated(value):
        return _VALUE
    return _RESOURCE if isinstance(value, providers.Resource) else _CALL


def _inject(kind: str, value: Any) -> Any:
    """An injection's value: a provider is called, a started Resource read, a value itself."""
    if kind is _VALUE:
        return value
    if kind is _RESOURCE and value.last_overriding is None and value.initialized:
        return _started_value(value)
    return value()


def _started_value(resource: providers.Resource[Any]) -> Any:
    """A started Resource's value (or, while it is still starting, its future).

    This is what calling it returns, without the new future dependency-injector wraps a
    started async Resource's value in on every call.
    """
    return resource._provide((), {})  # type: ignore[attr-defined]


_AWAITED = (asyncio.Future, types.CoroutineType)


def _is_async(value: object) -> bool:
    """What dependency-injector awaits for you: a future (a task too) or a coroutine."""
    return isinstance(value, _AWAITED)


def _is_ready(value: object) -> bool:
    return not _is_async(value) or (isinstance(value, asyncio.Future) and value.done())


async def _gathered(values: tuple[Any, ...]) -> list[Any]:
    """``values`` with each future or coroutine replaced by its result, awaited together."""
    if all(map(_is_ready, values)):
        return [value.result() if _is_async(value) else value for value in values]
    results = iter(await asyncio.gather(*filter(_is_async, values)))
    return [next(results) if _is_async(value) else value for value in values]
