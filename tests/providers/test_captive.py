"""Specification of the captive-dependency check."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from dependency_injector import containers, providers
from enginescope.providers import (
    CaptiveDependencyError,
    Scoped,
    ScopeValue,
    check_captive_dependencies,
    refuse_captive_dependencies,
)


def _pair(*items: object) -> tuple[object, ...]:
    return items


class TestRefused:
    def test_singleton_on_scoped(self) -> None:
        """A Singleton injected with a Scoped is refused, naming both by attribute."""

        class Container(containers.DeclarativeContainer):
            session = Scoped(dict)
            cache = providers.Singleton(_pair, session)

        with pytest.raises(CaptiveDependencyError) as caught:
            check_captive_dependencies(Container)
        assert (
            caught.value.holder,
            caught.value.captive,
        ) == ("Singleton 'cache'", "Scoped 'session'")

    def test_resource_through_factory_on_scoped(self) -> None:
        """A Resource depending on a Scoped through a Factory is refused with the path."""

        class Container(containers.DeclarativeContainer):
            session = Scoped(dict)
            service = providers.Factory(_pair, session)
            pool = providers.Resource(_pair, service)

        with pytest.raises(CaptiveDependencyError) as caught:
            check_captive_dependencies(Container())
        assert caught.value.path == ("Resource 'pool'", "Factory 'service'", "Scoped 'session'")

    @pytest.mark.parametrize(
        "long_lived",
        [providers.Singleton, providers.ThreadSafeSingleton, providers.ThreadLocalSingleton],
    )
    def test_every_singleton_kind_on_scope_value(
        self, long_lived: Callable[..., providers.Provider[Any]]
    ) -> None:
        """Any singleton kind capturing ScopeValue is refused."""
        user = ScopeValue()
        holder = long_lived(_pair, user)
        with pytest.raises(CaptiveDependencyError, match="ScopeValue"):
            check_captive_dependencies({"holder": holder, "user": user})

    def test_inline_provider_in_a_list_is_found(self) -> None:
        """A Scoped nested inline in a List under a Singleton is still found."""
        holder = providers.Singleton(_pair, providers.List(Scoped(dict)))
        with pytest.raises(CaptiveDependencyError):
            check_captive_dependencies([holder])

    def test_decorator_checks_at_class_definition(self) -> None:
        """The class decorator refuses a container with a captive dependency."""
        with pytest.raises(CaptiveDependencyError, match="Make the holder a Factory or Scoped"):

            @refuse_captive_dependencies
            class Container(containers.DeclarativeContainer):
                session = Scoped(dict)
                cache = providers.Singleton(_pair, session)

    def test_sub_container_names_are_dotted(self) -> None:
        """Providers of a nested container are named with a dotted path."""

        class Inner(containers.DeclarativeContainer):
            session = Scoped(dict)

        class Outer(containers.DeclarativeContainer):
            inner = providers.Container(Inner)
            cache = providers.Singleton(_pair, inner.session)

        with pytest.raises(CaptiveDependencyError) as caught:
            check_captive_dependencies(Outer())
        assert caught.value.captive == "Scoped 'inner.session'"


class TestAllowed:
    def test_factory_on_scoped(self) -> None:
        """A Factory may depend on a Scoped: it is created anew each time."""

        @refuse_captive_dependencies
        class Container(containers.DeclarativeContainer):
            session = Scoped(dict)
            service = providers.Factory(_pair, session)

        assert Container.service is not None

    def test_scoped_on_singleton(self) -> None:
        """A Scoped may depend on a Singleton: the longer-lived one is fine to hold."""
        settings = providers.Singleton(dict)
        check_captive_dependencies([Scoped(_pair, settings), settings])

    def test_singleton_given_the_provider_itself(self) -> None:
        """A Singleton injected with ``scoped.provider`` resolves per use and is allowed."""
        session = Scoped(dict)
        check_captive_dependencies([providers.Singleton(_pair, session.provider), session])

    def test_singleton_overridden_by_scoped(self) -> None:
        """A Singleton overridden by a Scoped does not cache it, so it is allowed."""
        holder = providers.Singleton(dict)
        holder.override(Scoped(dict))
        check_captive_dependencies([holder])
