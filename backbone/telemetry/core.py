"""The telemetry in force: spans (optional) and metric sinks (any number).

A :class:`Telemetry` is what :data:`backbone.telemetry.hooks.active` holds while
telemetry is on. The producer and the workers call it; it calls OpenTelemetry
(:mod:`.tracing`, :mod:`.otel_metrics`) and prometheus-client (:mod:`.prometheus`)
only through the objects it was built with, so importing this module imports
neither.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

from ..events import F_TRACE

if TYPE_CHECKING:
    from ..consume.delivery import Delivery
    from ..consume.state import SubscriptionState
    from ..events import EventId
    from .tracing import Tracing

__all__ = ["DURATION_BUCKETS", "Handling", "MetricSink", "Publishing", "Telemetry"]

DURATION_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
"""Histogram buckets of handler durations, in seconds."""


class MetricSink(Protocol):
    """Where counts go: OpenTelemetry instruments, a Prometheus registry."""

    def published(self, stream: str, operation: str, count: int) -> None: ...

    def handled(
        self, stream: str, group: str, operation: str, seconds: float
    ) -> None: ...

    def failed(
        self, stream: str, group: str, operation: str, seconds: float
    ) -> None: ...

    def retried(self, stream: str, group: str, operation: str) -> None: ...

    def dead_lettered(
        self, stream: str, group: str, operation: str, reason: str
    ) -> None: ...


class Publishing:
    """One event being published: its operation and its span, if traced."""

    __slots__ = ("operation", "span")

    def __init__(self, operation: str, span: Any) -> None:
        self.operation = operation
        self.span = span


class Handling:
    """One handler call: its span (current while the handler runs) and timing."""

    __slots__ = (
        "_ended",
        "_sinks",
        "_span",
        "_token",
        "_tracing",
        "labels",
        "seconds",
        "started",
    )

    def __init__(
        self,
        telemetry: Telemetry,
        state: SubscriptionState,
        d: Delivery,
        operation: str,
    ) -> None:
        self.labels = (state.stream, state.group, operation)
        self._sinks = telemetry.sinks
        self._span: Any = None
        self._token: Any = None
        self._ended = False
        self.seconds = 0.0
        tracing = self._tracing = telemetry.tracing
        if tracing is not None:
            self._span, self._token = tracing.start_process(
                stream=state.stream,
                group=state.group,
                consumer=state.consumer,
                entry_id=d.entry_id,
                operation=operation,
                delivery_count=d.delivery_count,
                carried=d.fields.get(F_TRACE),
            )
        self.started = time.perf_counter()

    def end(self) -> None:
        """The call is over: time it, end the span, make it no longer current."""
        if self._ended:
            return
        self._ended = True
        self.seconds = time.perf_counter() - self.started
        if self._tracing is not None:
            self._tracing.end_process(self._span, self._token)

    def failed(self, error: BaseException) -> None:
        """The handler raised ERROR (an attempt that counts as a failure)."""
        if self._tracing is not None:
            self._tracing.fail(self._span, error)
        self.end()
        for sink in self._sinks:
            sink.failed(*self.labels, self.seconds)

    def handled(self) -> None:
        """The handler returned (after :meth:`end`)."""
        for sink in self._sinks:
            sink.handled(*self.labels, self.seconds)


class Telemetry:
    """Spans when TRACING is given; counts to every one of SINKS."""

    def __init__(self, tracing: Tracing | None, sinks: Sequence[MetricSink]) -> None:
        self.tracing = tracing
        self.sinks = tuple(sinks)

    # --- publishing -------------------------------------------------------------

    def start_publish(
        self, stream: str, operation: str
    ) -> tuple[Publishing, str | None]:
        """Before an event is written: its record, and the trace context to carry
        in its entry (None when not traced)."""
        if self.tracing is None:
            return Publishing(operation, None), None
        span, carried = self.tracing.start_send(stream, operation)
        return Publishing(operation, span), carried

    def publish_done(
        self,
        stream: str,
        records: Sequence[Publishing | None],
        ids: Sequence[EventId] | None,
        error: BaseException | None,
    ) -> None:
        """RECORDS were written as IDS (None: not written), or failed with ERROR
        (with IDS too: written, but not confirmed as asked)."""
        counts: dict[str, int] = {}
        for index, record in enumerate(records):
            if record is None:
                continue
            written = ids is not None and index < len(ids)
            if self.tracing is not None and record.span is not None:
                entry = ids[index].id if ids is not None and written else None
                self.tracing.end_send(record.span, entry, error)
            if written:
                counts[record.operation] = counts.get(record.operation, 0) + 1
        for operation, count in counts.items():
            for sink in self.sinks:
                sink.published(stream, operation, count)

    # --- consuming --------------------------------------------------------------

    def handling(
        self, state: SubscriptionState, d: Delivery, operation: str
    ) -> Handling:
        return Handling(self, state, d, operation)

    def retried(self, stream: str, group: str, operation: str) -> None:
        for sink in self.sinks:
            sink.retried(stream, group, operation)

    def dead_lettered(
        self, stream: str, group: str, operation: str, reason: str
    ) -> None:
        for sink in self.sinks:
            sink.dead_lettered(stream, group, operation, reason)
