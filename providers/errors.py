"""Errors raised by the scope machinery; every one derives from ``EngineScopeError``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

from enginescope.errors import EngineScopeError

__all__ = [
    "CaptiveDependencyError",
    "NoActiveScopeError",
    "ScopeClosedError",
    "ScopeError",
    "ScopeTeardownError",
    "ScopeUsageError",
]


class ScopeError(EngineScopeError):
    """Base class of every error raised by ``enginescope.providers``."""


class NoActiveScopeError(ScopeError, LookupError):
    """A scope-bound provider was resolved while no scope was active."""

    def __init__(self, requester: str) -> None:
        self.requester = requester
        super().__init__(
            f"{requester} was resolved outside of any scope; enter `scope(value)` "
            "(or `user_scope(ctx)`) first and resolve it inside the `with` block."
        )


class ScopeClosedError(ScopeError, RuntimeError):
    """A scope-bound provider was resolved in a scope that has already closed."""

    def __init__(self, requester: str, scope: str) -> None:
        self.requester = requester
        self.scope = scope
        super().__init__(
            f"{requester} was resolved in {scope}, which has already closed (for example a "
            "task outlived its scope); resolve it inside an open scope."
        )


class ScopeUsageError(ScopeError, RuntimeError):
    """A scope or a scoped callable was used against its protocol."""


class ScopeTeardownError(ScopeError, ExceptionGroup[Exception]):
    """One or more finalizers of a scope failed; every failure is in ``exceptions``.

    When the body of the scope raised as well, the body's exception is the ``__cause__``.
    """

    def __new__(cls, message: str, exceptions: Sequence[Exception]) -> Self:
        return super().__new__(cls, message, exceptions)

    def derive(self, excs: Sequence[Exception]) -> ScopeTeardownError:  # type: ignore[override]
        """Keep the type when ``split()`` or ``subgroup()`` build a partial group."""
        return ScopeTeardownError(self.message, excs)


class CaptiveDependencyError(ScopeError, TypeError):
    """A long-lived provider depends on a scope-bound one and would capture it."""

    def __init__(self, holder: str, captive: str, path: Sequence[str]) -> None:
        self.holder = holder
        self.captive = captive
        self.path = tuple(path)
        super().__init__(
            f"{holder} depends on {captive} (via {' -> '.join(self.path)}): the long-lived "
            "provider would keep the first scope's instance for every later scope. Make the "
            f"holder a Factory or Scoped, or inject `{captive}.provider` and call it per use."
        )
