"""Helpers given the application's container find the engine container in it, or refuse."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from dependency_injector import containers, providers
from enginescope.containers import (
    EngineContainer,
    EngineContainerNotFoundError,
    find_engine_container,
)
from enginescope.containers.fastapi import (
    EngineMetricsCollector,
    WebSocketGateway,
    engine_lifespan,
    engine_metrics,
    metrics_endpoint,
    user_engine_dependency,
)
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient


class App(containers.DeclarativeContainer):
    """An application container composing one engine container."""

    config = providers.Configuration()
    engines = providers.Container(EngineContainer)
    service = providers.Factory(dict)


class TwoEngines(containers.DeclarativeContainer):
    """An application container composing two: which one is meant cannot be guessed."""

    chat = providers.Container(EngineContainer)
    batch = providers.Container(EngineContainer)


class Unrelated(containers.DeclarativeContainer):
    """An application container with no engine container at all."""

    service = providers.Factory(dict)


HELPERS: dict[str, Callable[[Any], object]] = {
    "WebSocketGateway.for_container()": lambda c: WebSocketGateway.for_container(
        c, agent_name="demo"
    ),
    "metrics_endpoint()": metrics_endpoint,
    "EngineMetricsCollector()": EngineMetricsCollector,
    "engine_metrics()": engine_metrics,
    "user_engine_dependency()": lambda c: user_engine_dependency(c, user=lambda: "u-1"),
}


class TestFinding:
    def test_an_engine_container_is_itself(self) -> None:
        """Given the engine container, that is the one used."""
        engines = EngineContainer()

        assert engines is find_engine_container(engines)

    def test_the_one_composed_by_an_app_container_is_found(self) -> None:
        """Given the application container, its composed engine container is used."""
        app = App()

        found = find_engine_container(app)

        assert app.engines.engine_factory is found.engine_factory

    def test_a_gateway_from_the_app_container_uses_its_engines(self) -> None:
        """for_container(app) takes the bridge and user_engine of app.engines."""
        app = App()

        gateway = WebSocketGateway.for_container(app, agent_name="demo")

        assert (app.engines.websocket_bridge, app.engines.user_engine) == (
            gateway._bridge,
            gateway._user_engine,
        )

    def test_metrics_endpoint_of_an_app_container_scrapes_its_engines(self) -> None:
        """metrics_endpoint(app) serves app.engines' metrics while the app runs."""
        app = App()
        web = Starlette(
            lifespan=engine_lifespan(app), routes=[Route("/metrics", metrics_endpoint(app))]
        )
        with TestClient(web) as client:
            scraped = client.get("/metrics")

        assert 200 == scraped.status_code
        assert "enginescope_active_engines 0.0" in scraped.text

    def test_engine_metrics_of_an_app_container_before_start_are_empty(self) -> None:
        """engine_metrics(app) reads app.engines (nothing started: nothing to report)."""
        assert {} == engine_metrics(App())


class TestRefusing:
    @pytest.mark.parametrize("caller", sorted(HELPERS))
    def test_a_container_without_engines_is_refused_at_construction(self, caller: str) -> None:
        """Each helper refuses at once, naming itself and what to pass."""
        with pytest.raises(EngineContainerNotFoundError) as caught:
            HELPERS[caller](Unrelated())

        message = str(caught.value)
        assert caller in message
        assert "app_container.engines()" in message
        assert isinstance(caught.value, TypeError)

    def test_two_engine_containers_are_named_for_the_caller_to_pick(self) -> None:
        """With two candidates the error lists both."""
        with pytest.raises(EngineContainerNotFoundError, match="composes 2") as caught:
            metrics_endpoint(TwoEngines())

        assert {"chat", "batch"} == set(caught.value.candidates)
