"""user_scope(ctx): validation first, then a scope whose value is the user context."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from enginescope.containers import user_scope
from enginescope.engines import InvalidContextError, UserExecutionContext
from enginescope.providers import current_scope_value, get_current_scope

MakeContext = Callable[..., UserExecutionContext]


class TestValidation:
    def test_a_context_is_the_scope_value_itself(self, make_user_context: MakeContext) -> None:
        """A valid context is used as is, not copied."""
        context = make_user_context("u-1")

        with user_scope(context):
            value = current_scope_value()

        assert context is value

    def test_a_mapping_is_built_into_a_context(self) -> None:
        """A mapping of fields becomes a UserExecutionContext."""
        with user_scope({"user_id": "u-1", "thread_id": "t-1", "run_id": "r-1"}):
            value = current_scope_value()

        assert isinstance(value, UserExecutionContext)
        assert ("u-1", "t-1", "r-1") == (value.user_id, value.thread_id, value.run_id)

    @pytest.mark.parametrize(
        ("fields", "field"),
        [
            ({"user_id": "", "thread_id": "t", "run_id": "r"}, "user_id"),
            ({"user_id": "u", "thread_id": "null", "run_id": "r"}, "thread_id"),
            ({"user_id": "u", "thread_id": "t", "run_id": "bad\nid"}, "run_id"),
        ],
    )
    def test_bad_input_names_the_field_and_enters_no_scope(
        self, fields: dict[str, Any], field: str
    ) -> None:
        """A bad context fails at the call, naming the field, and no scope is entered."""
        with pytest.raises(InvalidContextError) as caught:
            user_scope(fields)

        assert (field, None) == (caught.value.field, get_current_scope())

    def test_something_that_is_not_a_context_is_refused(self) -> None:
        """A user id alone is not a context."""
        with pytest.raises(InvalidContextError):
            user_scope("u-1")  # type: ignore[arg-type]


class TestScope:
    async def test_async_with_enters_and_leaves(self, make_user_context: MakeContext) -> None:
        """Inside ``async with`` the context is current; after it nothing is."""
        context = make_user_context()

        async with user_scope(context) as entered:
            inside = current_scope_value()

        assert (context, context, None) == (entered.value, inside, get_current_scope())

    def test_plain_with_works_too(self, make_user_context: MakeContext) -> None:
        """The scope is also a sync context manager (for sync code and tests)."""
        context = make_user_context()

        with user_scope(context):
            inside = current_scope_value()

        assert (context, None) == (inside, get_current_scope())

    async def test_nested_scopes_restore_the_outer_user(
        self, make_user_context: MakeContext
    ) -> None:
        """Leaving an inner user scope makes the outer user current again."""
        outer, inner = make_user_context("u-1"), make_user_context("u-2")

        async with user_scope(outer):
            async with user_scope(inner):
                seen_inner = current_scope_value()
            seen_outer = current_scope_value()

        assert (inner, outer) == (seen_inner, seen_outer)

    async def test_tasks_started_inside_see_the_scope(self, make_user_context: MakeContext) -> None:
        """A task created inside the scope sees the scope's user context."""
        context = make_user_context()

        async def read() -> object:
            await asyncio.sleep(0)
            return current_scope_value()

        async with user_scope(context):
            seen = await asyncio.create_task(read())

        assert context is seen

    async def test_concurrent_scopes_do_not_see_each_other(
        self, make_user_context: MakeContext
    ) -> None:
        """Each task sees only the context of its own scope, however they interleave."""

        async def request(user_id: str) -> str:
            async with user_scope(make_user_context(user_id)):
                for _ in range(3):
                    await asyncio.sleep(0)
                value = current_scope_value()
                assert isinstance(value, UserExecutionContext)
                return value.user_id

        users = [f"u-{number}" for number in range(50)]

        assert users == await asyncio.gather(*(request(user) for user in users))
