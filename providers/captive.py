"""Refusing captive dependencies: long-lived providers that would capture a scoped one."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

from dependency_injector import providers
from enginescope.providers.errors import CaptiveDependencyError
from enginescope.providers.scope import ScopeValue
from enginescope.providers.scoped import Scoped

__all__ = ["check_captive_dependencies", "refuse_captive_dependencies"]

C = TypeVar("C")
Provider = providers.Provider[Any]

LONG_LIVED: tuple[type[Any], ...] = (providers.BaseSingleton, providers.BaseResource)
SCOPE_BOUND: tuple[type[Any], ...] = (Scoped, ScopeValue)


def check_captive_dependencies(target: object) -> None:
    """Raise ``CaptiveDependencyError`` if a long-lived provider depends on a scoped one.

    ``target`` is a container (class or instance), a mapping of names to providers or an
    iterable of providers. Singletons (every kind) and Resources are long-lived; a
    dependency through Factories, Callables, Lists and the like counts, one injected as
    ``.provider`` (a delegate) does not. Container attribute names are used in the message.
    """
    names = _names(target)
    for holder in _reachable(names):
        if isinstance(holder, LONG_LIVED):
            path = _captive_path(holder)
            if path is not None:
                labels = [_label(node, names) for node in path]
                raise CaptiveDependencyError(labels[0], labels[-1], labels)


def refuse_captive_dependencies(container: C) -> C:
    """Class decorator for a ``DeclarativeContainer``: check it when it is defined."""
    check_captive_dependencies(container)
    return container


def _names(target: object, prefix: str = "") -> dict[Provider, str]:
    found: dict[Provider, str] = {}
    members = getattr(target, "providers", target)
    items: Iterable[tuple[str, Any]] = (
        members.items() if isinstance(members, Mapping) else ((repr(p), p) for p in members)  # type: ignore[attr-defined]
    )
    for name, provider in items:
        label = f"{prefix}{name}" if isinstance(members, Mapping) else repr(provider)
        found.setdefault(provider, label)
        if isinstance(provider, providers.Container | providers.DependenciesContainer):
            found.update({p: n for p, n in _names(provider, f"{label}.").items() if p not in found})
    return found


def _reachable(roots: Iterable[Provider]) -> Iterator[Provider]:
    seen: set[Provider] = set()
    stack = list(reversed(list(roots)))
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        yield node
        stack.extend(reversed(list(node.related)))


def _dependencies(node: Provider, *, is_root: bool) -> list[Provider]:
    if isinstance(node, providers.Delegate) or (
        not is_root and (providers.is_delegated(node) or isinstance(node, LONG_LIVED))
    ):
        return []
    overriders = set(node.overridden) if is_root else set()
    return [child for child in node.related if child not in overriders]


def _captive_path(holder: Provider) -> list[Provider] | None:
    stack: list[list[Provider]] = [[holder]]
    seen = {holder}
    while stack:
        path = stack.pop()
        for child in _dependencies(path[-1], is_root=len(path) == 1):
            if isinstance(child, SCOPE_BOUND):
                return [*path, child]
            if child not in seen:
                seen.add(child)
                stack.append([*path, child])
    return None


def _label(provider: Provider, names: Mapping[Provider, str]) -> str:
    kind = type(provider).__name__
    name = names.get(provider)
    return f"{kind} '{name}'" if name is not None and name != repr(provider) else repr(provider)
