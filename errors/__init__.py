"""The single error root shared by every enginescope package.

``engines`` and ``providers`` never import each other; both subclass this root so a
caller can catch any enginescope failure with one ``except EngineScopeError``.
"""

from __future__ import annotations

__all__ = ["EngineScopeError"]


class EngineScopeError(Exception):
    """Base class of every error raised by enginescope."""
