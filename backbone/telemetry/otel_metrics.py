"""backbone's metrics as OpenTelemetry instruments (see docs/operations.md)."""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from . import hooks, lag
from .core import DURATION_BUCKETS

__all__ = ["OtelMetrics"]


_Attributes = dict[str, str]


class OtelMetrics:
    """Counters and a histogram written on the event path, and observable gauges
    read when the meter provider collects."""

    def __init__(self, meter_provider: metrics.MeterProvider | None) -> None:
        from .. import __version__

        meter = metrics.get_meter(
            "backbone", __version__, meter_provider=meter_provider
        )
        self._published = meter.create_counter(
            "backbone.events.published",
            unit="{event}",
            description="Events written to a stream",
        )
        self._handled = meter.create_counter(
            "backbone.events.handled",
            unit="{event}",
            description="Handler calls that returned",
        )
        self._failed = meter.create_counter(
            "backbone.events.failed",
            unit="{event}",
            description="Handler calls that raised (each attempt)",
        )
        self._retried = meter.create_counter(
            "backbone.events.retried",
            unit="{event}",
            description="Failed events delivered again for another attempt",
        )
        self._dead_lettered = meter.create_counter(
            "backbone.events.dead_lettered",
            unit="{event}",
            description="Events moved to the dead-letter stream",
        )
        self._duration = meter.create_histogram(
            "backbone.handler.duration",
            unit="s",
            description="Duration of handler calls, successful or not",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        meter.create_observable_gauge(
            "backbone.consumer.lag",
            callbacks=[self._observe_lag],
            unit="{event}",
            description="Entries of the stream not yet delivered to the group",
        )
        meter.create_observable_gauge(
            "backbone.consumer.in_flight",
            callbacks=[self._observe_in_flight],
            unit="{event}",
            description="Events read by the subscription and not yet acknowledged",
        )
        self._attributes: dict[tuple[str, ...], _Attributes] = {}

    def _of(self, *values: str) -> _Attributes:
        found = self._attributes.get(values)
        if found is None:
            names: tuple[str, ...] = ("stream", "group", "operation", "reason")
            if len(values) == 2:  # published: no group
                names = ("stream", "operation")
            found = self._attributes[values] = dict(zip(names, values, strict=False))
        return found

    # --- the event path -----------------------------------------------------------

    def published(self, stream: str, operation: str, count: int) -> None:
        self._published.add(count, self._of(stream, operation))

    def handled(self, stream: str, group: str, operation: str, seconds: float) -> None:
        attributes = self._of(stream, group, operation)
        self._handled.add(1, attributes)
        self._duration.record(seconds, attributes)

    def failed(self, stream: str, group: str, operation: str, seconds: float) -> None:
        attributes = self._of(stream, group, operation)
        self._failed.add(1, attributes)
        self._duration.record(seconds, attributes)

    def retried(self, stream: str, group: str, operation: str) -> None:
        self._retried.add(1, self._of(stream, group, operation))

    def dead_lettered(
        self, stream: str, group: str, operation: str, reason: str
    ) -> None:
        self._dead_lettered.add(1, self._of(stream, group, operation, reason))

    # --- gauges -------------------------------------------------------------------

    def _on(self) -> bool:
        active = hooks.active
        return active is not None and self in active.sinks

    def _observe_lag(self, options: CallbackOptions) -> Iterable[Observation]:
        if not self._on():
            return []
        return [
            Observation(value, {"stream": stream, "group": group})
            for (stream, group), value in lag.consumer_lags()
        ]

    def _observe_in_flight(self, options: CallbackOptions) -> Iterable[Observation]:
        if not self._on():
            return []
        return [
            Observation(value, {"stream": s, "group": g, "consumer": c})
            for (s, g, c), value in lag.in_flight()
        ]
