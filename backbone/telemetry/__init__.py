"""Traces and metrics for backbone, with OpenTelemetry and Prometheus.

Off until the application turns it on; off, it costs a flag check per event.
Logs need none of this (see docs/operations.md, "Logs, traces and metrics").

* :func:`instrument` turns on OpenTelemetry traces and metrics for every
  :class:`~backbone.Backbone` of the process: a PRODUCER span per event published,
  a CONSUMER span per handler call continuing the producer's trace (the trace
  context travels in the stream entry), counters, a duration histogram and
  consumer lag gauges. Needs ``backbone[telemetry]``.
* :func:`serve_metrics` serves the same metrics in Prometheus' text format on an
  HTTP port (needs prometheus-client only). :func:`enable_prometheus` counts them
  in a prometheus-client registry without serving it, for an application that
  serves ``/metrics`` itself.
* :func:`uninstrument` turns it all off again.

Turn telemetry on before producers and subscriptions start: a change affects
events published or handled from then on.
"""

from __future__ import annotations

import importlib
import threading
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from . import hooks

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider
    from prometheus_client import CollectorRegistry

    from .core import MetricSink
    from .prometheus import MetricsServer

__all__ = [
    "EXTRA",
    "MetricsServer",
    "enable_prometheus",
    "instrument",
    "is_enabled",
    "serve_metrics",
    "uninstrument",
]

EXTRA = "backbone[telemetry]"

_lock = threading.Lock()
_tracing: Any = None  # a .tracing.Tracing while instrumented
_otel_metrics: Any = None  # a .otel_metrics.OtelMetrics while instrumented
_prometheus: list[Any] = []  # .prometheus.PrometheusMetrics counted in
_otel_made: tuple[Any, Any] = (None, None)  # the last (meter provider, OtelMetrics)


def _require(module: str, for_what: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise ConfigurationError(
            f"{for_what} needs the optional dependencies of backbone's telemetry "
            f"extra, which are not installed ({exc}); install them with: "
            f"pip install '{EXTRA}'"
        ) from None


def _apply() -> None:
    """Put the configuration in force (called with the lock held)."""
    from .core import Telemetry

    sinks: list[MetricSink] = []
    if _otel_metrics is not None:
        sinks.append(_otel_metrics)
    sinks.extend(_prometheus)
    if _tracing is None and not sinks:
        hooks.active = None
    else:
        hooks.active = Telemetry(_tracing, sinks)


def instrument(
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    *,
    traces: bool = True,
    metrics: bool = True,
) -> None:
    """Trace and count backbone's events with OpenTelemetry, in this process.

    TRACER_PROVIDER and METER_PROVIDER default to OpenTelemetry's global ones
    (``opentelemetry.trace.set_tracer_provider``...). ``traces=False`` or
    ``metrics=False`` leaves that half off. Calling it again replaces the
    previous providers; Prometheus counting (:func:`serve_metrics`) stays on.

    Raises :class:`~backbone.ConfigurationError` naming ``backbone[telemetry]``
    when OpenTelemetry is not installed.
    """
    global _tracing, _otel_metrics, _otel_made
    _require("opentelemetry.trace", "backbone.telemetry.instrument()")
    if traces:
        _require("opentelemetry.trace.propagation.tracecontext", "tracing")
    if metrics:
        _require("opentelemetry.metrics", "metrics")
    with _lock:
        if traces:
            from .tracing import Tracing

            _tracing = Tracing(tracer_provider)
        else:
            _tracing = None
        if metrics:
            from .otel_metrics import OtelMetrics

            # Instruments register with their provider once: reuse them.
            if _otel_made[1] is None or _otel_made[0] is not meter_provider:
                _otel_made = (meter_provider, OtelMetrics(meter_provider))
            _otel_metrics = _otel_made[1]
        else:
            _otel_metrics = None
        _apply()


def enable_prometheus(registry: CollectorRegistry | None = None) -> CollectorRegistry:
    """Count backbone's metrics in a prometheus-client REGISTRY (its default one
    when None) from now on, and return it. Needs prometheus-client only."""
    _require("prometheus_client", "Prometheus metrics")
    from .prometheus import metrics_for

    with _lock:
        metrics = metrics_for(registry)
        if metrics not in _prometheus:
            _prometheus.append(metrics)
        _apply()
        return metrics.registry


def serve_metrics(
    port: int,
    addr: str = "127.0.0.1",
    *,
    registry: CollectorRegistry | None = None,
) -> MetricsServer:
    """Serve backbone's metrics for Prometheus at ``http://ADDR:PORT/metrics``.

    Turns on Prometheus counting (:func:`enable_prometheus`) in REGISTRY
    (prometheus-client's default one, which also has the process' own metrics)
    and serves it from a daemon thread; it does not block and needs no event
    loop. PORT 0 picks a free port: read it from the returned server's ``port``;
    ``close()`` stops serving. Raises :class:`~backbone.ConfigurationError` when
    the port cannot be bound or prometheus-client is not installed.
    """
    from_registry = enable_prometheus(registry)
    from .prometheus import serve

    return serve(port, addr, from_registry)


def uninstrument() -> None:
    """Turn traces and metrics off (values counted so far stay in registries)."""
    global _tracing, _otel_metrics
    with _lock:
        _tracing = None
        _otel_metrics = None
        _prometheus.clear()
        _apply()
    from . import lag

    lag.forget()


def is_enabled() -> bool:
    """True while backbone traces or counts anything."""
    return hooks.active is not None


def __getattr__(name: str) -> Any:
    if name == "MetricsServer":  # imported on use: it needs prometheus-client
        _require("prometheus_client", "backbone.telemetry.MetricsServer")
        from .prometheus import MetricsServer

        return MetricsServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
