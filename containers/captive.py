"""Refusing captive dependencies over a whole application container tree."""

from __future__ import annotations

from enginescope.providers import check_captive_dependencies

__all__ = ["check_container_tree"]


def check_container_tree(container: object) -> None:
    """Refuse captive dependencies in ``container`` and every container that composes it.

    Walks up from ``container`` through ``providers.Container`` parents to the outermost
    application container and checks all of it, so a Singleton declared next to
    ``providers.Container(EngineContainer)`` cannot capture ``user_engine`` either.
    Raises :class:`~enginescope.providers.CaptiveDependencyError` naming both providers.
    """
    root = container
    while (parent := getattr(root, "parent", None)) is not None:
        root = parent
    check_captive_dependencies(root)
