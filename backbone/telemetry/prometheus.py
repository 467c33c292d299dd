"""backbone's metrics in a prometheus-client registry, and an HTTP endpoint.

This needs prometheus-client only, not OpenTelemetry. The metric names are the
OpenTelemetry ones in Prometheus' style (``backbone.events.handled`` is
``backbone_events_handled_total``); see docs/operations.md.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Final
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

from ..errors import ConfigurationError
from . import hooks, lag
from .core import DURATION_BUCKETS

__all__ = ["MetricsServer", "PrometheusMetrics", "metrics_for", "serve"]

_HANDLER_LABELS: Final = ("stream", "group", "operation")


class PrometheusMetrics:
    """backbone's counters, histogram and gauges in one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._published = Counter(
            "backbone_events_published",
            "Events written to a stream",
            ("stream", "operation"),
            registry=registry,
        )
        self._handled = Counter(
            "backbone_events_handled",
            "Handler calls that returned",
            _HANDLER_LABELS,
            registry=registry,
        )
        self._failed = Counter(
            "backbone_events_failed",
            "Handler calls that raised (each attempt)",
            _HANDLER_LABELS,
            registry=registry,
        )
        self._retried = Counter(
            "backbone_events_retried",
            "Failed events delivered again for another attempt",
            _HANDLER_LABELS,
            registry=registry,
        )
        self._dead_lettered = Counter(
            "backbone_events_dead_lettered",
            "Events moved to the dead-letter stream",
            (*_HANDLER_LABELS, "reason"),
            registry=registry,
        )
        self._duration = Histogram(
            "backbone_handler_duration_seconds",
            "Duration of handler calls, successful or not",
            _HANDLER_LABELS,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        registry.register(_Gauges(self))

    def published(self, stream: str, operation: str, count: int) -> None:
        self._published.labels(stream, operation).inc(count)

    def handled(self, stream: str, group: str, operation: str, seconds: float) -> None:
        self._handled.labels(stream, group, operation).inc()
        self._duration.labels(stream, group, operation).observe(seconds)

    def failed(self, stream: str, group: str, operation: str, seconds: float) -> None:
        self._failed.labels(stream, group, operation).inc()
        self._duration.labels(stream, group, operation).observe(seconds)

    def retried(self, stream: str, group: str, operation: str) -> None:
        self._retried.labels(stream, group, operation).inc()

    def dead_lettered(
        self, stream: str, group: str, operation: str, reason: str
    ) -> None:
        self._dead_lettered.labels(stream, group, operation, reason).inc()


class _Gauges(Collector):
    """Consumer lag and events in flight, read at each scrape."""

    def __init__(self, metrics: PrometheusMetrics) -> None:
        self.metrics = metrics

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "backbone_consumer_lag",
                "Entries of the stream not yet delivered to the group",
                labels=("stream", "group"),
            ),
            GaugeMetricFamily(
                "backbone_consumer_in_flight",
                "Events read by the subscription and not yet acknowledged",
                labels=("stream", "group", "consumer"),
            ),
        )

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        lags, flying = self._families()
        active = hooks.active
        if active is not None and self.metrics in active.sinks:
            for (stream, group), value in lag.consumer_lags():
                lags.add_metric((stream, group), value)
            for labels, value in lag.in_flight():
                flying.add_metric(labels, value)
        return (lags, flying)


_lock = threading.Lock()
_made: dict[int, PrometheusMetrics] = {}


def metrics_for(registry: CollectorRegistry | None) -> PrometheusMetrics:
    """backbone's metrics in REGISTRY (prometheus-client's default one when
    None), made once per registry."""
    registry = REGISTRY if registry is None else registry
    with _lock:
        found = _made.get(id(registry))
        if found is None or found.registry is not registry:
            found = _made[id(registry)] = PrometheusMetrics(registry)
        return found


class MetricsServer:
    """An HTTP endpoint serving a registry in Prometheus' text format, from a
    daemon thread. Every path answers (``/metrics`` is the usual one)."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        address = server.server_address
        self.addr: str = str(address[0])
        self.port: int = int(address[1])

    @property
    def url(self) -> str:
        host = f"[{self.addr}]" if ":" in self.addr else self.addr
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __repr__(self) -> str:
        return f"MetricsServer({self.url})"


def serve(port: int, addr: str, registry: CollectorRegistry | None) -> MetricsServer:
    if not 0 <= port <= 65535:
        raise ConfigurationError(f"metrics port {port} is not in 0..65535")
    try:
        server, thread = start_http_server(
            port, addr=addr, registry=REGISTRY if registry is None else registry
        )
    except OSError as exc:
        raise ConfigurationError(
            f"cannot serve metrics on {addr}:{port}: {exc.strerror or exc}; choose "
            "another port (0 picks a free one) or address"
        ) from exc
    return MetricsServer(server, thread)
