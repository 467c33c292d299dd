"""Spans: a PRODUCER span per event published, a CONSUMER span per handler call.

The producer span's W3C trace context travels in the event's stream entry, in
the metadata field ``tp`` (:data:`backbone.events.F_TRACE`): ``<traceparent>``,
or ``<traceparent> <tracestate>`` when there is a trace state (a traceparent has
no space in it, so the first space separates the two). The consumer extracts it
with OpenTelemetry's W3C ``TraceContextTextMapPropagator`` and makes it the
parent of the handler's span, so a publish and every handling of the event, in
any process, are one trace. A value that is not a valid trace context starts a
new trace; it never fails the event.

While the handler runs, its span is the current span: events it publishes are
children of it, so a causal chain of events is one trace too.

Attributes follow OpenTelemetry's messaging semantic conventions.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["Tracing", "carried_context", "parse_carried"]

log = logging.getLogger("backbone.telemetry")

SYSTEM: Final = "redis"
_PROPAGATOR: Final = TraceContextTextMapPropagator()


def carried_context(span: Span) -> str | None:
    """The value of the ``tp`` field for SPAN (None for a span with no valid
    context, such as OpenTelemetry's no-op one)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    parent = carrier.get("traceparent")
    if not parent:
        return None
    state = carrier.get("tracestate")
    return f"{parent} {state}" if state else parent


def parse_carried(raw: bytes | str | None) -> otel_context.Context | None:
    """The context carried by a ``tp`` field, or None when there is none or it
    is not a valid W3C trace context."""
    if not raw:
        return None
    try:
        text = raw.decode("ascii") if isinstance(raw, bytes) else raw
        parent, _, state = text.strip().partition(" ")
        carrier = {"traceparent": parent}
        if state:
            carrier["tracestate"] = state
        extracted = _PROPAGATOR.extract(carrier)
    except Exception:  # anyone can write the field: never fail the event for it
        return None
    if not trace.get_current_span(extracted).get_span_context().is_valid:
        return None
    return extracted


class Tracing:
    """Starts and ends backbone's spans with one tracer."""

    def __init__(self, tracer_provider: trace.TracerProvider | None) -> None:
        from .. import __version__

        self.tracer = trace.get_tracer(
            "backbone", __version__, tracer_provider=tracer_provider
        )

    # --- publishing -------------------------------------------------------------

    def start_send(self, stream: str, operation: str) -> tuple[Span, str | None]:
        """A PRODUCER span for one event (child of the current span), and the
        ``tp`` value to write in its entry."""
        span = self.tracer.start_span(
            f"send {stream}",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": SYSTEM,
                "messaging.destination.name": stream,
                "messaging.operation.type": "send",
                "messaging.operation.name": "send",
                "backbone.operation": operation,
            },
        )
        return span, carried_context(span)

    @staticmethod
    def end_send(span: Span, entry_id: str | None, error: BaseException | None) -> None:
        if entry_id is not None:
            span.set_attribute("messaging.message.id", entry_id)
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}"))
            span.set_attribute("error.type", type(error).__qualname__)
        span.end()

    # --- handling ---------------------------------------------------------------

    def start_process(
        self,
        *,
        stream: str,
        group: str,
        consumer: str,
        entry_id: str,
        operation: str,
        delivery_count: int,
        carried: bytes | None,
    ) -> tuple[Span, Any]:
        """A CONSUMER span for one handler call, made current; its parent is the
        context carried in the entry (a new trace when there is none). Returns the
        span and the token to detach it with."""
        parent = parse_carried(carried)
        if parent is None:
            # Not the handler's surrounding span (the subscription's task has
            # none anyway): an event without a trace context starts a new trace.
            parent = otel_context.Context()
        span = self.tracer.start_span(
            f"process {stream}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": SYSTEM,
                "messaging.destination.name": stream,
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.message.id": entry_id,
                "messaging.consumer.group.name": group,
                "messaging.client.id": consumer,
                "backbone.operation": operation,
                "backbone.delivery_count": delivery_count,
            },
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        return span, token

    @staticmethod
    def fail(span: Span, error: BaseException) -> None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.set_attribute("error.type", type(error).__qualname__)

    @staticmethod
    def end_process(span: Span, token: Any) -> None:
        span.end()
        try:
            otel_context.detach(token)
        except Exception:  # pragma: no cover - detached in another context
            log.debug("could not detach the handler's span context", exc_info=True)
