"""Acquiring a created value and releasing it later (generators and context managers)."""

from __future__ import annotations

import asyncio
import inspect
import types
from collections.abc import AsyncGenerator, Generator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, Protocol

from enginescope.providers.errors import ScopeUsageError

__all__ = ["Finalizer", "acquire_async", "acquire_sync", "needs_async"]


class Finalizer(Protocol):
    """Releases one scoped instance; ``exc`` is the exception leaving the scope, if any."""

    owner: object
    is_async: bool

    def release_sync(self, exc: BaseException | None) -> None: ...

    async def release(self, exc: BaseException | None) -> None: ...

    def release_now(self, exc: BaseException | None) -> bool:
        """An async finalizer's release done synchronously when it needs no awaiting right
        now; ``True`` if released, ``False`` if nothing was done (``release`` is awaited)."""
        ...


def _exc_info(exc: BaseException | None) -> tuple[Any, Any, Any]:
    return (None, None, None) if exc is None else (type(exc), exc, exc.__traceback__)


def _didnt_stop(owner: object) -> ScopeUsageError:
    return ScopeUsageError(f"{owner}: the generator yielded twice; yield exactly once.")


class _GeneratorFinalizer:
    is_async = False

    def __init__(self, gen: Generator[Any, Any, Any], owner: object) -> None:
        self.gen, self.owner = gen, owner

    def release_sync(self, exc: BaseException | None) -> None:
        try:
            next(self.gen) if exc is None else self.gen.throw(exc)
        except StopIteration:
            return
        except BaseException as error:
            if error is not exc:
                raise
            return
        raise _didnt_stop(self.owner)

    def release_now(self, exc: BaseException | None) -> bool:
        self.release_sync(exc)
        return True

    async def release(self, exc: BaseException | None) -> None:
        self.release_sync(exc)


class _AsyncGeneratorFinalizer:
    is_async = True

    def __init__(self, agen: AsyncGenerator[Any, Any], owner: object) -> None:
        self.agen, self.owner = agen, owner

    def release_sync(self, exc: BaseException | None) -> None:
        raise NotImplementedError

    def release_now(self, exc: BaseException | None) -> bool:
        return False

    async def release(self, exc: BaseException | None) -> None:
        try:
            await (anext(self.agen) if exc is None else self.agen.athrow(exc))
        except StopAsyncIteration:
            return
        except BaseException as error:
            if error is not exc:
                raise
            return
        raise _didnt_stop(self.owner)


class _ContextManagerFinalizer:
    is_async = False

    def __init__(self, cm: AbstractContextManager[Any], owner: object) -> None:
        self.cm, self.owner = cm, owner

    def release_sync(self, exc: BaseException | None) -> None:
        self.cm.__exit__(*_exc_info(exc))

    def release_now(self, exc: BaseException | None) -> bool:
        self.release_sync(exc)
        return True

    async def release(self, exc: BaseException | None) -> None:
        self.release_sync(exc)


class _AsyncContextManagerFinalizer:
    is_async = True

    def __init__(self, cm: AbstractAsyncContextManager[Any], owner: object) -> None:
        self.cm, self.owner = cm, owner

    def release_sync(self, exc: BaseException | None) -> None:
        raise NotImplementedError

    def release_now(self, exc: BaseException | None) -> bool:
        """Ask the context manager's ``exit_now(exc)`` (if it has one) to exit at once."""
        exit_now = getattr(self.cm, "exit_now", None)
        return callable(exit_now) and exit_now(exc) is True

    async def release(self, exc: BaseException | None) -> None:
        await self.cm.__aexit__(*_exc_info(exc))


def _is_awaitable_result(raw: object) -> bool:
    return isinstance(raw, types.CoroutineType) or asyncio.isfuture(raw)


def needs_async(raw: object) -> bool:
    """Tell whether acquiring ``raw`` needs an event loop (async CMs win over sync CMs)."""
    return isinstance(raw, _ASYNC_RAW) or asyncio.isfuture(raw)


# Coroutines, async generators and async context managers: acquired with `await`.
_ASYNC_RAW = (types.CoroutineType, types.AsyncGeneratorType, AbstractAsyncContextManager)


def acquire_sync(raw: object, owner: object) -> tuple[Any, Finalizer | None]:
    """Enter a generator or context manager; any other object is the value itself."""
    if inspect.isgenerator(raw):
        try:
            return next(raw), _GeneratorFinalizer(raw, owner)
        except StopIteration:
            raise ScopeUsageError(f"{owner}: the generator did not yield a value.") from None
    if isinstance(raw, AbstractContextManager):
        return raw.__enter__(), _ContextManagerFinalizer(raw, owner)
    return raw, None


async def acquire_async(raw: object, owner: object) -> tuple[Any, Finalizer | None]:
    """Await a coroutine or future, then enter what it gave like ``acquire_sync`` does."""
    if _is_awaitable_result(raw):
        raw = await raw  # type: ignore[misc]
    if inspect.isasyncgen(raw):
        try:
            return await anext(raw), _AsyncGeneratorFinalizer(raw, owner)
        except StopAsyncIteration:
            raise ScopeUsageError(f"{owner}: the async generator did not yield.") from None
    if isinstance(raw, AbstractAsyncContextManager):
        return await raw.__aenter__(), _AsyncContextManagerFinalizer(raw, owner)
    return acquire_sync(raw, owner)
