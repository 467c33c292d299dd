"""Replaying a contract stream, or a range of it, into a handler.

A replay reads the stream with ``XRANGE`` pages (no consumer group: nothing is
acknowledged, no group sees a difference) and calls the handler through the
contract's generated :class:`Dispatcher`, like a subscription would. Bounds are
entry ids (inclusive), ``"beginning"``/``"end"`` or aware datetimes, which map
to ``<ms>-0`` (a start) and ``<ms>-<max>`` (an end).

An event that cannot be decoded is logged, counted and skipped; an event of an
operation the handler does not implement is counted and skipped. A handler that
raises stops the replay with :class:`ReplayError`, naming the event, so the
replay can be resumed from it once the handler is fixed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from ..dispatch import Dispatcher
from ..errors import BackboneError, ConfigurationError, DecodeError
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
    entry_version,
)
from ..keyring import Keyring, open_payloads
from ..sealing import SealError
from .ranges import Bound, next_id, range_ids

if TYPE_CHECKING:
    from ..connection import Backbone

__all__ = [
    "REPLAY_GROUP",
    "ReplayError",
    "ReplaySummary",
    "as_dispatcher",
    "replay",
]

log = logging.getLogger("backbone.replay")

REPLAY_GROUP: Final = "replay"
"""The ``group`` and ``consumer`` of a replayed event's :class:`EventContext`."""
PAGE: Final = 200


@dataclasses.dataclass(frozen=True, slots=True)
class ReplaySummary:
    """What a replay did (so far, when given to a progress callback)."""

    stream: str
    replayed: int = 0
    """Events the handler handled."""
    skipped: int = 0
    """Events of operations the handler does not implement."""
    undecodable: int = 0
    """Events that could not be decoded (logged and skipped)."""
    first_id: str | None = None
    last_id: str | None = None
    """The last entry read (replayed or skipped): resume after it."""

    @property
    def read(self) -> int:
        """Every entry read: replayed, skipped and undecodable."""
        return self.replayed + self.skipped + self.undecodable

    def __str__(self) -> str:
        text = (
            f"replayed {self.replayed} event{'s' * (self.replayed != 1)} of "
            f"{self.stream} ({self.skipped} skipped: not handled, "
            f"{self.undecodable} undecodable)"
        )
        if self.first_id is not None:
            text += f", {self.first_id} to {self.last_id}"
        return text


class ReplayError(BackboneError):
    """The handler raised on an event: the replay stopped there.

    ``event_id`` is the failed event (resume from it once the handler is fixed),
    ``summary`` what was done before it; the handler's exception is the cause.
    """

    def __init__(self, message: str, event_id: EventId, summary: ReplaySummary):
        super().__init__(message)
        self.event_id = event_id
        self.summary = summary


def _generated() -> list[type[Dispatcher[Any]]]:
    """Every imported dispatcher class that is bound to a contract."""
    found: list[type[Dispatcher[Any]]] = []
    pending: list[type[Dispatcher[Any]]] = list(Dispatcher.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if "contract" in vars(cls):
            found.append(cls)
    return found


def as_dispatcher(target: object, contract: str | None = None) -> Dispatcher[Any]:
    """TARGET when it is a dispatcher; for a handler, the generated dispatcher of
    its contract (among those imported) with ``partial=True``. CONTRACT (a
    contract name, e.g. the stream's) picks one when the handler's methods fit
    several."""
    if isinstance(target, Dispatcher):
        return target
    name = type(target).__qualname__
    fits = [
        cls
        for cls in _generated()
        if (contract is None or cls.contract.name == contract)
        and any(
            callable(getattr(target, op.method, None))
            for op in cls.contract.spec.operations
        )
    ]
    if len({cls.contract.name for cls in fits}) == 1:
        return fits[0](target, partial=True)
    what = f"contract {contract}" if contract else "any contract"
    if not fits:
        raise ConfigurationError(
            f"handler {name} implements no operation of {what} whose generated "
            "code is imported; import the contract's generated module, or pass "
            "its dispatcher, e.g. ShipmentTrackingDispatcher(handler, partial=True)"
        )
    names = ", ".join(sorted({cls.contract.name for cls in fits}))
    raise ConfigurationError(
        f"handler {name} fits several contracts ({names}); pass the dispatcher of "
        "one, e.g. ShipmentTrackingDispatcher(handler, partial=True)"
    )


async def _stream_contract(bus: Backbone, stream: str, first: str, last: str) -> str:
    page: Any = await bus.redis.xrange(stream, first, last, count=1)
    return as_text((page[0][1] or {}).get(F_CONTRACT)) if page else ""


async def replay(
    bus: Backbone,
    uri: str,
    handler: object,
    *,
    start: Bound = "beginning",
    end: Bound = "end",
    count: int | None = None,
    progress: Callable[[ReplaySummary], None] | None = None,
) -> ReplaySummary:
    """Call HANDLER with the events of stream URI from START to END (both
    inclusive), in stream order; at most COUNT entries are read.

    HANDLER is a generated dispatcher, ``ShipmentTrackingDispatcher(handler,
    partial=True)``, or a handler object: it is then routed through the
    generated dispatcher of the stream's contract (its generated module must be
    imported), with ``partial=True``, so it may implement only some
    operations. Methods
    that take ``context`` get an :class:`EventContext` whose ``group`` and
    ``consumer`` are ``"replay"`` and ``delivery_count`` 1. PROGRESS, when given,
    is called with the running summary after each entry.

    Raises :class:`ReplayError` when the handler raises (the replay stops at that
    event), :class:`ConfigurationError` for bad bounds.
    """
    if count is not None and count < 1:
        raise ConfigurationError(f"count must be at least 1, not {count}")
    first, last = range_ids(start, end)
    keys = bus.keys(uri)
    if isinstance(handler, Dispatcher):
        dispatcher: Dispatcher[Any] = handler
    else:
        contract = await _stream_contract(bus, keys.stream, first, last)
        dispatcher = as_dispatcher(handler, contract or None)
    summary = ReplaySummary(keys.stream)
    cursor: str | None = first
    while cursor is not None and (count is None or summary.read < count):
        room = PAGE if count is None else min(PAGE, count - summary.read)
        page: Any = await bus.redis.xrange(keys.stream, cursor, last, count=room)
        if not page:
            break
        entries: list[tuple[str, dict[bytes, bytes]]] = [
            (as_text(entry), fields or {}) for entry, fields in page
        ]
        payloads = await _payloads(bus, uri, dispatcher, entries)
        for (entry_id, fields), payload in zip(entries, payloads, strict=True):
            summary = await _one(dispatcher, summary, entry_id, fields, payload)
            if progress is not None:
                progress(summary)
        if len(page) < room:
            break
        cursor = next_id(entries[-1][0])
    return summary


Payload = dict[bytes, bytes] | Exception | None
"""The payload hash of a handled operation (whole: an older version's fields may
have other names), the error that reading it raised, or None (an operation that
is not handled)."""


async def _payloads(
    bus: Backbone,
    uri: str,
    dispatcher: Dispatcher[Any],
    entries: Sequence[tuple[str, dict[bytes, bytes]]],
) -> list[Payload]:
    keys = bus.keys(uri)
    wanted: list[int] = []
    async with bus.redis.pipeline(transaction=False) as pipe:
        for n, (entry_id, fields) in enumerate(entries):
            found = dispatcher.get(as_text(fields.get(F_OPERATION)))
            if found is not None:
                pipe.hgetall(keys.payload(entry_id))
                wanted.append(n)
        replies = await pipe.execute(raise_on_error=False) if wanted else []
    payloads: list[Payload] = [None] * len(entries)
    for n, reply in zip(wanted, replies, strict=True):
        payloads[n] = reply
    # Personal values: opened (or erased) with one read of the keyring per page.
    opened = await open_payloads(Keyring.of(bus), payloads)
    for n, outcome in enumerate(opened):
        if isinstance(outcome, SealError):
            payloads[n] = DecodeError(
                "undecodable",
                f"a personal value of {keys.payload(entries[n][0])} cannot be "
                f"opened: {outcome}",
            )
    return payloads


async def _one(
    dispatcher: Dispatcher[Any],
    summary: ReplaySummary,
    entry_id: str,
    fields: dict[bytes, bytes],
    payload: Payload,
) -> ReplaySummary:
    first = summary.first_id or entry_id
    operation = as_text(fields.get(F_OPERATION))
    event = EventId(summary.stream, entry_id)
    try:
        version = entry_version(fields.get(F_VERSION))
        args = _decode(dispatcher, event, operation, version, payload)
    except DecodeError as exc:
        log.warning(
            "replay skipped undecodable event %s (%s): %s",
            entry_id,
            exc.reason,
            exc,
            extra={"event_id": entry_id, "stream": summary.stream},
        )
        return dataclasses.replace(
            summary,
            undecodable=summary.undecodable + 1,
            first_id=first,
            last_id=entry_id,
        )
    found = dispatcher.get(operation)
    if found is None:
        return dataclasses.replace(
            summary, skipped=summary.skipped + 1, first_id=first, last_id=entry_id
        )
    keywords = (
        {"context": _context(event, operation, fields)} if found.takes_context else {}
    )
    try:
        await found.method(*args, **keywords)
    except Exception as exc:
        raise ReplayError(
            f"handler {found.handler_name} failed on event {entry_id} ({operation}) "
            f"of {summary.stream}: {type(exc).__name__}: {exc}; the replay stopped "
            f"there after {summary.replayed} events: fix the handler and resume "
            f"from {entry_id}",
            event,
            summary,
        ) from exc
    return dataclasses.replace(
        summary, replayed=summary.replayed + 1, first_id=first, last_id=entry_id
    )


def _decode(
    dispatcher: Dispatcher[Any],
    event: EventId,
    operation: str,
    version: int | None,
    payload: Payload,
) -> list[Any]:
    where = f"{event.stream} {event.id}"
    if not operation:
        raise DecodeError(
            "malformed-entry", f"entry {where} has no operation field ('o')"
        )
    codecs = dispatcher.contract.codecs
    if operation not in codecs:
        raise DecodeError(
            "unknown-operation",
            f"entry {where} is a {operation!r} event, which contract "
            f"{dispatcher.contract_name} does not have",
        )
    if payload is None:
        return []  # an operation the handler does not implement
    if isinstance(payload, DecodeError):
        raise payload
    if isinstance(payload, Exception):
        raise DecodeError(
            "unreadable-payload",
            f"the payload of {where} cannot be read as a hash ({payload})",
        )
    try:
        return codecs[operation].decode(payload, version)
    except DecodeError as exc:
        raise DecodeError(exc.reason, f"{where}: {exc}") from exc


def _context(
    event: EventId, operation: str, fields: dict[bytes, bytes]
) -> EventContext:
    unreadable: list[str] = []
    produced_at: dt.datetime | None = None
    raw_time = fields.get(F_TIME)
    if raw_time:
        try:
            produced_at = dt.datetime.fromtimestamp(int(raw_time) / 1000, tz=dt.UTC)
        except (ValueError, OverflowError, OSError):
            unreadable.append(f"t: producer time {raw_time!r} is not Unix milliseconds")
    version = 1
    raw_version = fields.get(F_VERSION)
    if raw_version:
        try:
            version = int(raw_version)
        except ValueError:
            unreadable.append(f"v: version {raw_version!r} is not a whole number")
    origin = fields.get(F_REDRIVE_ORIGIN)
    aggregate = fields.get(F_AGGREGATE)
    correlation = fields.get(F_CORRELATION)
    causation = fields.get(F_CAUSATION)
    return EventContext(
        id=event,
        operation=operation,
        version=version,
        contract=as_text(fields.get(F_CONTRACT)),
        producer=as_text(fields.get(F_PRODUCER)),
        produced_at=produced_at,
        group=REPLAY_GROUP,
        consumer=REPLAY_GROUP,
        delivery_count=1,
        correlation_id=as_text(correlation) if correlation is not None else None,
        causation_id=as_text(causation) if causation is not None else None,
        original_id=EventId(event.stream, as_text(origin)) if origin else None,
        aggregate_id=as_text(aggregate) if aggregate else None,
        unreadable=tuple(unreadable),
    )
