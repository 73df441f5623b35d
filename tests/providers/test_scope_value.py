"""Specification of ``ScopeValue``: the current scope's value as a provider."""

from __future__ import annotations

import copy

import pytest
from enginescope.providers import NoActiveScopeError, ScopeClosedError, ScopeValue, scope


class TestScopeValue:
    def test_provides_the_innermost_value(self) -> None:
        """ScopeValue gives the innermost open scope's value."""
        provider = ScopeValue()
        with scope("outer"):
            with scope("inner"):
                assert provider() == "inner"
            assert provider() == "outer"

    def test_outside_a_scope(self) -> None:
        """Outside every scope it raises NoActiveScopeError."""
        with pytest.raises(NoActiveScopeError, match="ScopeValue"):
            ScopeValue()()

    def test_in_a_closed_scope(self) -> None:
        """Inside a closed scope it raises ScopeClosedError."""
        provider = ScopeValue()
        with scope("u1") as entered:
            entered.closed = True
            with pytest.raises(ScopeClosedError):
                provider()

    def test_deepcopy_is_a_new_scope_value(self) -> None:
        """A deep copy is another ScopeValue that still reads the current scope."""
        copied = copy.deepcopy(ScopeValue())
        with scope("u1"):
            assert (ScopeValue, "u1") == (type(copied), copied())
