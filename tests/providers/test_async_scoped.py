"""Specification of ``AsyncScoped``: a ``Scoped`` that is async from the start."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from enginescope.providers import AsyncScoped, ScopeUsageError, scope


class TestAsyncScoped:
    def test_it_is_public_in_providers_and_containers(self) -> None:
        """AsyncScoped is importable from enginescope.providers and enginescope.containers."""
        from enginescope import containers, providers  # noqa: PLC0415 - the import is the test

        assert providers.AsyncScoped is containers.AsyncScoped

    async def test_an_override_by_an_object_is_still_awaited(self) -> None:
        """Overridden by a plain object before its first call, it still returns an awaitable."""
        provider: AsyncScoped[str] = AsyncScoped(lambda: "made")
        provider.override("overridden")
        async with scope("u1"):
            assert "overridden" == await provider()

    async def test_it_is_refused_in_a_sync_scope_before_anything_is_created(self) -> None:
        """In a sync ``with`` the creation is refused, naming ``async with``; nothing runs."""
        created: list[str] = []

        async def make() -> AsyncIterator[str]:
            created.append("made")
            yield "made"

        provider: AsyncScoped[str] = AsyncScoped(make)
        with scope("u1"), pytest.raises(ScopeUsageError, match="`async with`") as caught:
            await provider()
        assert [] == created
        assert "Nothing was created" in str(caught.value)

    async def test_in_an_async_scope_it_is_created_once(self) -> None:
        """In ``async with`` it is created once and shared by concurrent resolves."""
        created: list[str] = []

        async def make() -> str:
            await asyncio.sleep(0)
            created.append("made")
            return "made"

        provider: AsyncScoped[str] = AsyncScoped(make)
        async with scope("u1"):
            first, second = await asyncio.gather(provider(), provider())
        assert ("made", "made", ["made"]) == (first, second, created)

    def test_its_repr_names_its_own_class(self) -> None:
        """The repr says AsyncScoped, as the captive-dependency error does."""
        assert repr(AsyncScoped(dict)).startswith("<AsyncScoped dict ")
