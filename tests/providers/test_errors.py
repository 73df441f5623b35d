"""Specification of the providers errors: one root, builtin bases, helpful messages."""

from __future__ import annotations

import pytest
from enginescope.errors import EngineScopeError
from enginescope.providers import (
    CaptiveDependencyError,
    NoActiveScopeError,
    ScopeClosedError,
    ScopeError,
    ScopeTeardownError,
    ScopeUsageError,
)


class TestHierarchy:
    @pytest.mark.parametrize(
        ("error", "builtin"),
        [
            (NoActiveScopeError("p"), LookupError),
            (ScopeClosedError("p", "s"), RuntimeError),
            (ScopeUsageError("m"), RuntimeError),
            (ScopeTeardownError("m", [ValueError()]), ExceptionGroup),
            (CaptiveDependencyError("h", "c", ["h", "c"]), TypeError),
        ],
    )
    def test_errors_share_the_root_and_a_builtin(self, error: Exception, builtin: type) -> None:
        """Every error is a ScopeError, an EngineScopeError and a fitting builtin."""
        assert (
            isinstance(error, ScopeError),
            isinstance(error, EngineScopeError),
            isinstance(error, builtin),
        ) == (True, True, True)


class TestTeardownGroup:
    def test_split_keeps_the_type(self) -> None:
        """Splitting the group keeps ScopeTeardownError, so ``except*`` sees our type."""
        group = ScopeTeardownError("m", [ValueError("a"), OSError("b")])
        matched, rest = group.split(ValueError)
        assert (ScopeTeardownError, ScopeTeardownError) == (type(matched), type(rest))

    def test_except_star_catches_members(self) -> None:
        """``except*`` on a member type catches the failure inside the group."""
        caught: list[str] = []
        try:
            raise ScopeTeardownError("m", [ValueError("a")])
        except* ValueError as group:
            caught.extend(str(e) for e in group.exceptions)
        assert caught == ["a"]


class TestMessages:
    def test_no_active_scope_says_what_to_do(self) -> None:
        """The message names the requester and both ways to enter a scope."""
        message = str(NoActiveScopeError("<Scoped db>"))
        assert message.startswith("<Scoped db> was resolved outside of any scope")
        assert "`user_scope(ctx)`" in message

    def test_closed_scope_mentions_outliving_tasks(self) -> None:
        """The message says the scope already closed and hints at a task that outlived it."""
        assert "task outlived its scope" in str(ScopeClosedError("<Scoped db>", "<Scope>"))
