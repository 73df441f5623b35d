"""Prometheus rendering of an engine container's metrics (the factory's and the bridge's).

:func:`metrics_endpoint` is a Starlette endpoint serving them in the Prometheus text format,
:class:`EngineMetricsCollector` the collector behind it (register it in a registry of your
own), :func:`engine_metrics` the same numbers as one JSON-ready dict. All read the metrics
live at every call and never start the container's resources. Each accepts an
:class:`EngineContainer` or an application container that composes one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final, Protocol, cast

from dependency_injector import providers
from enginescope.engines import ExecutionEngineFactory
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from .lookup import find_engine_container

__all__ = ["EngineMetricsCollector", "engine_metrics", "metrics_endpoint"]


class _MeteredBridge(Protocol):
    def get_metrics(self) -> Mapping[str, Any]: ...


def _started(provider: providers.Provider[Any]) -> Any:
    """The value of a Resource provider once initialised, else ``None`` (never starts it).

    Call it on the event loop that runs the app: off it, an async resource reads as ``None``.
    """
    resource = cast("providers.Resource[Any]", provider)
    if not resource.initialized:
        return None
    try:
        value = resource()
    except RuntimeError:  # an async resource asked for off its event loop's thread
        return None
    if isinstance(value, asyncio.Future):  # an async resource hands back its finished future
        return value.result() if value.done() and not value.cancelled() else None
    return value


_FACTORY_COUNTERS: Final = {
    "total_engines_created": ("engines_created", "Engines created."),
    "total_engines_cleaned": ("engines_cleaned", "Engines cleaned up."),
    "creation_errors": ("engine_creation_errors", "Engine creations that failed."),
    "cleanup_errors": ("engine_cleanup_errors", "Engine cleanups that failed."),
    "timeout_cleanups": ("engine_timeout_cleanups", "Engines closed by the reaper."),
    "user_limit_rejections": ("user_limit_rejections", "Engines refused by the user limit."),
    "reaper_errors": ("reaper_errors", "Reaper sweeps that failed."),
}
_FACTORY_GAUGES: Final = {
    "active_engines_count": ("active_engines", "Engines alive now."),
    "active_users_count": ("active_users", "Users with at least one engine now."),
    "max_engines_per_user": ("max_engines_per_user", "The per-user engine limit."),
    "engine_timeout_seconds": ("engine_timeout_seconds", "Age at which engines are reaped."),
    "cleanup_interval": ("cleanup_interval_seconds", "Seconds between reaper sweeps."),
    "cleanup_task_running": ("reaper_running", "1 while the reaper task runs."),
    "is_shutdown": ("factory_shutdown", "1 once the factory has shut down."),
}
_BRIDGE_COUNTERS: Final = {
    "events_queued": ("bridge_events_queued", "Events queued to connections."),
    "events_sent": ("bridge_events_sent", "Events the sockets accepted."),
    "events_dropped_no_connection": (
        "bridge_events_dropped_no_connection",
        "Events for users with no open connection.",
    ),
    "slow_consumer_disconnects": (
        "bridge_slow_consumer_disconnects",
        "Connections dropped for a full queue.",
    ),
    "failed_socket_disconnects": (
        "bridge_failed_socket_disconnects",
        "Connections dropped after a failed send.",
    ),
}
_BRIDGE_GAUGES: Final = {
    "active_connections": ("bridge_active_connections", "Open connections now."),
    "users_connected": ("bridge_users_connected", "Users with an open connection now."),
}
Table = Mapping[str, tuple[str, str]]


def _families(
    values: Mapping[str, Any], counters: Table, gauges: Table, namespace: str
) -> Iterable[Metric]:
    for key, (name, documentation) in counters.items():
        if key in values:
            yield CounterMetricFamily(f"{namespace}_{name}", documentation, value=values[key])
    for key, (name, documentation) in gauges.items():
        if key in values:
            yield GaugeMetricFamily(f"{namespace}_{name}", documentation, value=values[key])


def engine_metrics(container: Any) -> dict[str, Any]:
    """The factory's metrics (without engine keys) and the bridge's, as one JSON-ready dict.

    Empty parts before the container's resources start; never starts them.
    """
    container = find_engine_container(container, caller="engine_metrics()")
    metrics: dict[str, Any] = {}
    factory = _started(container.engine_factory)
    if isinstance(factory, ExecutionEngineFactory):
        metrics.update(factory.get_factory_metrics(include_keys=False))
    bridge = _started(container.websocket_bridge)
    if bridge is not None:
        metrics.update(cast("_MeteredBridge", bridge).get_metrics())
    return metrics


class EngineMetricsCollector(Collector):
    """A Prometheus collector reading the factory and bridge metrics at every scrape."""

    def __init__(self, container: Any, *, namespace: str = "enginescope") -> None:
        self._container = find_engine_container(container, caller="EngineMetricsCollector()")
        self.namespace = namespace

    def collect(self) -> Iterable[Metric]:
        """Counters and gauges as they are now; factory metrics only while it runs."""
        factory = _started(self._container.engine_factory)
        if isinstance(factory, ExecutionEngineFactory):
            metrics = factory.get_factory_metrics(include_keys=False)
            yield from _families(metrics, _FACTORY_COUNTERS, _FACTORY_GAUGES, self.namespace)
        bridge = _started(self._container.websocket_bridge)
        if bridge is not None:
            values = cast("_MeteredBridge", bridge).get_metrics()
            yield from _families(values, _BRIDGE_COUNTERS, _BRIDGE_GAUGES, self.namespace)


def metrics_endpoint(
    container: Any, *, registry: CollectorRegistry | None = None
) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette endpoint serving the container's metrics in the Prometheus text format.

    Uses ``registry`` or a fresh :class:`CollectorRegistry` (never the global one), so two
    apps in one process do not share or clash on metrics.
    """
    registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
    collector = EngineMetricsCollector(
        find_engine_container(container, caller="metrics_endpoint()")
    )
    registry.register(collector)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return metrics
