"""The Prometheus helpers live in their own module, and stay importable from the glue."""

from __future__ import annotations

import importlib

import pytest


class TestHome:
    @pytest.mark.parametrize(
        "name", ["EngineMetricsCollector", "engine_metrics", "metrics_endpoint"]
    )
    def test_the_fastapi_module_re_exports_the_prometheus_helpers(self, name: str) -> None:
        """Defined in containers.prometheus; the same object from containers.fastapi."""
        prometheus = importlib.import_module("enginescope.containers.prometheus")
        fastapi = importlib.import_module("enginescope.containers.fastapi")

        assert (prometheus.__name__, getattr(prometheus, name)) == (
            getattr(prometheus, name).__module__,
            getattr(fastapi, name),
        )

    def test_the_gateway_lives_in_its_own_module(self) -> None:
        """WebSocketGateway is defined in containers.gateway and re-exported by fastapi."""
        gateway = importlib.import_module("enginescope.containers.gateway")
        fastapi = importlib.import_module("enginescope.containers.fastapi")

        assert gateway.WebSocketGateway is fastapi.WebSocketGateway
