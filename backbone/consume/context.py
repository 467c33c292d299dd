"""The :class:`EventContext` a handler sees, built from a stream entry's metadata,
and the fields a log line about one event carries.

Metadata is written by producers, by re-drives and, on a bad day, by anyone with
a Redis client. Nothing in it may fail a valid event: a value that cannot be read
(a producer time beyond ``datetime``'s range, a version that is not a number)
reads as None (or version 1), and the context's ``unreadable`` says which field
held what.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..events import (
    F_AGGREGATE,
    F_CAUSATION,
    F_CONTRACT,
    F_CORRELATION,
    F_OPERATION,
    F_PRODUCER,
    F_REDRIVE_ORIGIN,
    F_TIME,
    F_VERSION,
    EventContext,
    EventId,
    as_text,
)
from ..options import AckPolicy

if TYPE_CHECKING:
    from .delivery import Delivery
    from .state import SubscriptionState

__all__ = ["LazyContext", "build_context", "log_fields"]


def _short(value: bytes) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _produced_at(raw: bytes | None, unreadable: list[str]) -> dt.datetime | None:
    if not raw:
        return None
    try:
        return dt.datetime.fromtimestamp(int(raw) / 1000, tz=dt.UTC)
    except (ValueError, OverflowError, OSError):
        unreadable.append(
            f"t: producer time {_short(raw)} is not Unix milliseconds within "
            "datetime's range"
        )
        return None


def _version(raw: bytes | None, unreadable: list[str]) -> int:
    if not raw:
        return 1
    try:
        return int(raw)
    except ValueError:
        unreadable.append(f"v: version {_short(raw)} is not a whole number")
        return 1


def build_context(
    state: SubscriptionState, d: Delivery, operation: str
) -> EventContext:
    """The context of delivery D of OPERATION; never raises for odd metadata."""
    fields = d.fields
    unreadable: list[str] = []
    produced_at = _produced_at(fields.get(F_TIME), unreadable)
    version = _version(fields.get(F_VERSION), unreadable)
    origin = fields.get(F_REDRIVE_ORIGIN)
    aggregate = fields.get(F_AGGREGATE)
    correlation = fields.get(F_CORRELATION)
    causation = fields.get(F_CAUSATION)
    ack: Callable[[], Awaitable[None]] | None = None
    if state.options.ack is AckPolicy.MANUAL:
        ack = _manual_ack(state, d)
    return EventContext(
        id=EventId(state.stream, d.entry_id),
        operation=operation,
        version=version,
        contract=as_text(fields.get(F_CONTRACT)),
        producer=as_text(fields.get(F_PRODUCER)),
        produced_at=produced_at,
        group=state.group,
        consumer=state.consumer,
        delivery_count=d.delivery_count,
        correlation_id=as_text(correlation) if correlation is not None else None,
        causation_id=as_text(causation) if causation is not None else None,
        original_id=EventId(state.stream, as_text(origin)) if origin else None,
        aggregate_id=as_text(aggregate) if aggregate else None,
        unreadable=tuple(unreadable),
        lease=state.lease,
        _ack=ack,
    )


def _manual_ack(state: SubscriptionState, d: Delivery) -> Callable[[], Awaitable[None]]:
    async def ack() -> None:
        state.window.queue_ack(d, noack=state.noack)

    return ack


class LazyContext:
    """Builds a delivery's EventContext on first use, then keeps it (most
    handlers never look at it)."""

    __slots__ = ("_d", "_made", "_operation", "_state")

    def __init__(self, state: SubscriptionState, d: Delivery, operation: str) -> None:
        self._state = state
        self._d = d
        self._operation = operation
        self._made: EventContext | None = None

    def __call__(self) -> EventContext:
        if self._made is None:
            self._made = build_context(self._state, self._d, self._operation)
        return self._made


def log_fields(
    state: SubscriptionState,
    d: Delivery,
    operation: str | None = None,
    handler: str | None = None,
) -> dict[str, Any]:
    """The event's fields for a log record's ``extra`` (for JSON formatters):
    ``event_id`` (the entry id), ``operation``, ``stream``, ``group``,
    ``consumer``, ``delivery_count``, and ``handler`` when known."""
    if operation is None:
        raw = d.op if d.op is not None else d.fields.get(F_OPERATION)
        operation = as_text(raw) if raw is not None else None
    fields: dict[str, Any] = {
        "event_id": d.entry_id,
        "operation": operation,
        "stream": state.stream,
        "group": state.group,
        "consumer": state.consumer,
        "delivery_count": d.delivery_count,
    }
    if handler is not None:
        fields["handler"] = handler
    return fields
