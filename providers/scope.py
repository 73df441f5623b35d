"""The current scope: a ``ContextVar`` holding a ``Scope``, entered with ``scope(value)``.

``ScopeValue`` (a provider of the current scope's value) lives here, beside the scope it reads.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, TypeAlias

from dependency_injector import providers
from enginescope.providers._creation import Creation
from enginescope.providers._finalizers import Finalizer
from enginescope.providers._teardown import (
    Outcome,
    raise_outcome,
    release_ready,
    run_shielded,
    teardown_async,
    teardown_sync,
)
from enginescope.providers.errors import NoActiveScopeError, ScopeClosedError, ScopeUsageError

__all__ = [
    "Scope",
    "ScopeContextManager",
    "ScopeValue",
    "current_scope_value",
    "get_current_scope",
    "require_open_scope",
    "scope",
]

logger = logging.getLogger(__name__)

ExcType: TypeAlias = type[BaseException] | None

_CURRENT: ContextVar[Scope | None] = ContextVar("enginescope_scope", default=None)
# get_current_scope() without a Python frame of its own, for the providers' resolve path.
scope_now = _CURRENT.get


class Scope:
    """One level of scoping: a value, a parent, cached instances and their finalizers.

    Instances are cached per provider in this scope only; a child scope never sees its
    parent's instances. A scope belongs to one event loop and is not thread-safe.

    ``get(key, default=None)`` is the instance cached for ``key`` in this scope (a done
    future when it was async), else ``default``; it never looks at the parent scope.
    """

    __slots__ = (
        "_finalizers",
        "_instances",
        "_pending",
        "_torn_down",
        "closed",
        "get",
        "is_async",
        "parent",
        "value",
    )

    def __init__(
        self, value: object, parent: Scope | None = None, *, is_async: bool = False
    ) -> None:
        self.value = value
        self.parent = parent
        self.closed = False
        self.is_async = is_async  # entered with `async with`, so its teardown can await
        # provider -> instance (or done future); read through get(), dropped by forget()
        self._instances: dict[object, Any] = {}
        # get() is the dict's own method: a warm resolve is one C call, not a Python frame.
        self.get: Callable[..., Any] = self._instances.get
        self._pending: dict[object, Creation] = {}
        self._finalizers: list[Finalizer] = []
        self._torn_down = False

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return (
            f"<Scope value={self.value!r} depth={self.depth} instances={len(self._instances)} "
            f"finalizers={len(self._finalizers)} {state}>"
        )

    @property
    def depth(self) -> int:
        """How many scopes enclose this one (0 for an outermost scope)."""
        return 0 if self.parent is None else self.parent.depth + 1

    def forget(self, key: object) -> None:
        """Drop the instance cached for ``key``; the next resolve creates a new one.

        Its finalizer stays: the dropped instance is still released when the scope closes.
        """
        self._instances.pop(key, None)

    def store(self, key: object, value: Any, finalizer: Finalizer | None) -> None:
        """Cache a freshly created instance and remember how to release it."""
        self.add_finalizer(finalizer)
        self._instances[key] = value

    def add_finalizer(self, finalizer: Finalizer | None) -> None:
        """Remember a finalizer; it runs newest first when the scope closes."""
        if finalizer is None:
            return
        if self._torn_down:
            raise ScopeUsageError(f"{finalizer.owner} finished creating after {self!r} closed.")
        self._finalizers.append(finalizer)

    def pending(self, key: object) -> Creation | None:
        """Return the in-flight async creation for ``key``, if any."""
        return self._pending.get(key)

    def start(
        self,
        key: object,
        coro: Coroutine[Any, Any, Any],
        retry: Callable[[], Awaitable[Any]],
    ) -> Creation:
        """Track an async creation of ``key`` until it settles: its result (a done future)
        is cached on success, the creation evicted on failure. The creation runs in the
        task that first awaits :meth:`Creation.join`; the others call ``retry`` if that
        task is cancelled."""
        creation = Creation(coro, lambda done: self._settle(key, done), retry)
        self._pending[key] = creation
        return creation

    def _settle(self, key: object, creation: Creation) -> None:
        if self._pending.get(key) is creation:
            del self._pending[key]
        result = creation.result
        if not result.done() or result.cancelled() or result.exception() is not None:
            logger.debug("Scoped creation failed; evicted", extra={"provider": key})
        elif not self.closed:
            self._instances[key] = result

    def _close(self) -> None:
        self.closed = True
        self._instances.clear()

    def _exit_sync(self, exc: BaseException | None) -> Outcome:
        self._close()
        outcome = teardown_sync(self._finalizers, self._pending, exc)
        self._torn_down = True
        return outcome

    def _release_now(self, exc: BaseException | None) -> Outcome:
        """Close, and release at once, in this task, what needs no awaiting."""
        self._close()
        outcome = Outcome()
        if not self._pending:
            release_ready(self._finalizers, exc, outcome)
        if not self._pending and not self._finalizers:
            self._torn_down = True  # nothing was awaited, so nothing could be interrupted
        return outcome

    async def _release_rest(self, exc: BaseException | None) -> Outcome:
        """What :meth:`_release_now` left: in the shielded teardown (a task), newest first
        all the same."""
        try:
            return await run_shielded(lambda: teardown_async(self._finalizers, self._pending, exc))
        finally:
            self._torn_down = True


class ScopeContextManager:
    """Enters a child of the current scope with ``with`` or ``async with``; single use."""

    __slots__ = ("_scope", "_token", "_value")

    def __init__(self, value: object) -> None:
        self._value = value
        self._scope: Scope | None = None
        self._token: Token[Scope | None] | None = None

    def __repr__(self) -> str:
        return f"<ScopeContextManager value={self._value!r} scope={self._scope!r}>"

    def _enter(self, *, is_async: bool) -> Scope:
        if self._scope is not None:
            raise ScopeUsageError(f"{self!r} was already entered; call scope(value) again.")
        self._scope = Scope(self._value, parent=_CURRENT.get(), is_async=is_async)
        self._token = _CURRENT.set(self._scope)
        return self._scope

    def _leave(self) -> Scope:
        if self._scope is None or self._token is None:
            raise ScopeUsageError(f"{self!r} was exited without being entered.")
        return self._scope

    def _reset(self, scope: Scope, outcome: Outcome, exc: BaseException | None) -> None:
        assert self._token is not None  # noqa: S101 - set by _enter, checked by _leave
        _CURRENT.reset(self._token)
        raise_outcome(scope, outcome, exc)

    def __enter__(self) -> Scope:
        return self._enter(is_async=False)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        scope = self._leave()
        self._reset(scope, scope._exit_sync(exc), exc)

    async def __aenter__(self) -> Scope:
        return self._enter(is_async=True)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        scope = self._leave()
        outcome = scope._release_now(exc)
        if not scope._torn_down:  # something must be awaited: no extra coroutine otherwise
            outcome.merge(await scope._release_rest(exc))
        self._reset(scope, outcome, exc)


def scope(value: object) -> ScopeContextManager:
    """Return a context manager that enters a child scope of the current one with ``value``.

    ``with scope(ctx):`` or ``async with scope(ctx):``. On exit the scope closes first, then
    its finalizers run newest first, each given the exception leaving the body. Finalizer
    failures are raised together as ``ScopeTeardownError`` (``__cause__``: the body's error);
    a cancellation always propagates after every finalizer ran. A sync ``with`` cannot run
    async finalizers: they are reported as ``ScopeUsageError`` inside the group.
    """
    return ScopeContextManager(value)


def get_current_scope() -> Scope | None:
    """Return the scope of the current context, or ``None`` outside every scope."""
    return _CURRENT.get()


def require_open_scope(requester: object) -> Scope:
    """Return the current scope, or raise if there is none or it has closed."""
    current = _CURRENT.get()
    if current is None:
        raise NoActiveScopeError(_name(requester))
    if current.closed:
        raise ScopeClosedError(_name(requester), repr(current))
    return current


def _name(requester: object) -> str:
    return requester if isinstance(requester, str) else repr(requester)


def current_scope_value() -> object:
    """Return the value of the current open scope (``NoActiveScopeError`` outside one)."""
    return require_open_scope("current_scope_value()").value


class ScopeValue(providers.Provider[Any]):
    """Provide the value of the current open scope (for enginescope: the user context)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"<ScopeValue at {id(self):#x}>"

    def __str__(self) -> str:
        return self.__repr__()

    def _provide(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return require_open_scope(self).value
