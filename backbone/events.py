"""Event identity and the metadata a handler can see.

The stream entry of an event holds its metadata under short field names (they are
repeated in every entry, so short names keep the stream small):

=====  ===================================================  ===========
field  meaning                                              written by
=====  ===================================================  ===========
o      operation name                                       producer
v      operation version                                    producer
c      contract name                                        producer
t      producer time, Unix milliseconds                     producer
p      producer identity (host:pid:random)                  producer
co     correlation id (the first event of a causal chain)   producer
ca     causation id (the event being handled when sent)     producer
tp     W3C trace context, when traced (see telemetry)       producer
rg     only this consumer group handles the entry           dead-letter retry
ri     the original event id of a re-driven entry           dead-letter retry
a      the aggregate id of an aggregate's event             aggregate save
=====  ===================================================  ===========

The entry id Redis assigns (``<ms>-<seq>``) is the event's id and its position.
"""

from __future__ import annotations

import contextvars
import dataclasses
import datetime as dt
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from .consume.leases import Lease

__all__ = [
    "NO_CONTEXT",
    "EventContext",
    "EventId",
    "current_event",
]

F_OPERATION: Final = b"o"
F_VERSION: Final = b"v"
F_CONTRACT: Final = b"c"
F_TIME: Final = b"t"
F_PRODUCER: Final = b"p"
F_CORRELATION: Final = b"co"
F_CAUSATION: Final = b"ca"
F_REDRIVE_GROUP: Final = b"rg"
F_REDRIVE_ORIGIN: Final = b"ri"
F_TRACE: Final = b"tp"
F_AGGREGATE: Final = b"a"


@dataclasses.dataclass(frozen=True, slots=True, order=True)
class EventId:
    """An event's unique id: its stream and its entry id (also its position).

    ``str(event_id)`` gives ``<stream key>/<entry id>``, the form used for
    correlation and causation ids.
    """

    stream: str
    id: str

    def __str__(self) -> str:
        return f"{self.stream}/{self.id}"

    @property
    def millis(self) -> int:
        """Milliseconds since the Unix epoch at which Redis appended the event."""
        return int(self.id.split("-", 1)[0])

    @property
    def sequence(self) -> int:
        return int(self.id.split("-", 1)[1])

    @property
    def timestamp(self) -> dt.datetime:
        """When Redis appended the event (UTC)."""
        return dt.datetime.fromtimestamp(self.millis / 1000, tz=dt.UTC)

    @classmethod
    def parse(cls, text: str) -> EventId:
        """Inverse of ``str()``."""
        stream, sep, entry = text.rpartition("/")
        if not sep or not stream or "-" not in entry:
            raise ValueError(f"{text!r} is not an event id (<stream key>/<ms>-<seq>)")
        return cls(stream, entry)


def event_ids(stream: str, entry_ids: Iterable[str]) -> list[EventId]:
    """The ids of the entries ENTRY_IDS of STREAM, made without the frozen
    dataclass's ``__init__`` (which sets each field through
    ``object.__setattr__``): a batch's thousand ids cost a third less."""
    ids = []
    for entry_id in entry_ids:
        event_id = _new(EventId)
        _set_stream(event_id, stream)
        _set_id(event_id, entry_id)
        ids.append(event_id)
    return ids


_new: Final = object.__new__
_set_stream: Final = EventId.__dict__["stream"].__set__
_set_id: Final = EventId.__dict__["id"].__set__


@dataclasses.dataclass(frozen=True, slots=True)
class EventContext:
    """What a handler may know about the event it handles.

    A handler method receives it when it declares a keyword-only parameter named
    ``context``: ``async def packing(self, ..., *, context: EventContext =
    NO_CONTEXT) -> None``.
    """

    id: EventId
    operation: str
    version: int
    contract: str
    producer: str
    produced_at: dt.datetime | None
    group: str
    consumer: str
    delivery_count: int
    correlation_id: str | None = None
    causation_id: str | None = None
    original_id: EventId | None = None
    aggregate_id: str | None = None
    """The aggregate an event-store event belongs to (None for other events)."""
    unreadable: tuple[str, ...] = ()
    """What of the entry's metadata could not be read (a producer time out of
    range, a version that is not a number): one line each, naming the field. The
    event itself is still handled; the unreadable values read as None or 1."""
    lease: Lease | None = None
    """In an ordered subscription, the holding of the event's partition:
    ``lease.partition``, ``lease.token`` (the fencing token, which grows with
    every new holder of the partition) and ``lease.held``. A handler writing
    elsewhere can pass the token along and have the store refuse a write whose
    token is lower than one it has seen for the partition: a member that lost
    the partition (paused, cut off) cannot overwrite its successor's work. None
    in other subscriptions."""
    _ack: Callable[[], Awaitable[None]] | None = dataclasses.field(
        default=None, repr=False, compare=False
    )

    @property
    def event_id(self) -> EventId:
        """The event's own id: the original one for an entry re-driven from the DLQ."""
        return self.original_id or self.id

    async def ack(self) -> None:
        """Acknowledge the event now (for subscriptions with ``AckPolicy.MANUAL``).

        Acking twice, or acking under another policy, does nothing more.
        """
        if self._ack is not None:
            await self._ack()


def id_key(entry_id: str) -> tuple[int, int]:
    """An entry id (``<ms>-<seq>``) as a pair that sorts as Redis orders ids."""
    ms, _, seq = entry_id.partition("-")
    return int(ms or 0), int(seq or 0)


def entry_version(raw: bytes | None) -> int | None:
    """The operation version a stream entry records in ``v``: 1 when absent (the
    first producers wrote none), None when it is not a whole number >= 1 (the
    payload is then read as the current version)."""
    if raw is None:
        return 1
    if raw.isdigit() and len(raw) < 10 and int(raw) >= 1:
        return int(raw)
    return None


def as_text(value: bytes | str | None) -> str:
    """A Redis reply value as text (bytes that are not UTF-8 are replaced)."""
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


class _NoContext:
    """Default for a handler's ``context`` parameter when called outside a
    subscription; any use names the mistake."""

    __slots__ = ()

    def __getattr__(self, name: str) -> object:
        raise RuntimeError(
            f"no event context (reading .{name}): this handler was called directly, "
            "not by a subscription; pass context=... when calling it yourself"
        )

    def __repr__(self) -> str:
        return "NO_CONTEXT"


NO_CONTEXT: Final[EventContext] = _NoContext()  # type: ignore[assignment]

# The event being handled: a context, or a function that builds it on first use
# (most handlers never look at it, so the consumer does not build it up front).
_Current = EventContext | Callable[[], EventContext] | None
_current: contextvars.ContextVar[_Current] = contextvars.ContextVar(
    "backbone_current_event", default=None
)


def current_event() -> EventContext | None:
    """The event being handled by this task, or None outside a handler.

    Producers use it to fill in correlation and causation ids.
    """
    value = _current.get()
    if value is None or isinstance(value, EventContext):
        return value
    return value()


# The context variable's own methods (set once per event handled; read for
# every event published: None outside a handler).
current_event_or_none: Final[Callable[[], _Current]] = _current.get
set_current_event: Final[Callable[[_Current], contextvars.Token[_Current]]] = (
    _current.set
)
reset_current_event: Final[Callable[[contextvars.Token[_Current]], None]] = (
    _current.reset
)
