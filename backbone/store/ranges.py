"""Bounds of a stream range: entry ids (inclusive), ``beginning``/``end`` and
aware datetimes, mapped to the ids ``XRANGE`` takes (a time maps to ``<ms>-0``
as a start and ``<ms>-<max>`` as an end)."""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING, Any, Final

from ..errors import ConfigurationError
from ..events import EventId, as_text

if TYPE_CHECKING:
    from ..connection import Backbone

__all__ = ["MAX_PART", "Bound", "count_range", "next_id", "range_ids"]

MAX_PART: Final = 2**64 - 1
_ENTRY_ID: Final = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")

Bound = str | EventId | dt.datetime
"""An entry id (``"<ms>-<seq>"`` or an :class:`EventId`), ``"beginning"``,
``"end"``, or an aware datetime."""


def _parse_id(text: str, what: str) -> tuple[int, int]:
    match = _ENTRY_ID.fullmatch(text)
    if match is None or max(int(match[1]), int(match[2])) > MAX_PART:
        raise ConfigurationError(
            f"{what} {text!r} is not an entry id, beginning, end or a time: an "
            "entry id is <ms>-<seq>, two numbers below 2^64, e.g. 1764000000000-0"
        )
    return int(match[1]), int(match[2])


def _bound(value: Bound, what: str, *, end: bool) -> tuple[int, int]:
    if isinstance(value, EventId):
        value = value.id
    if isinstance(value, dt.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ConfigurationError(
                f"{what} {value.isoformat()} has no time zone; give an aware "
                "datetime (e.g. with tzinfo=datetime.UTC)"
            )
        millis = int(value.timestamp() * 1000) if value.timestamp() >= 0 else -1
        if millis < 0:
            raise ConfigurationError(f"{what} {value.isoformat()} is before 1970")
        return (millis, MAX_PART) if end else (millis, 0)
    if value == "beginning":
        return (0, 0)
    if value == "end":
        return (MAX_PART, MAX_PART)
    if not isinstance(value, str):
        raise ConfigurationError(
            f"{what} {value!r} is not an entry id, beginning, end or a datetime"
        )
    return _parse_id(value, what)


def range_ids(start: Bound, end: Bound) -> tuple[str, str]:
    """The inclusive XRANGE ids of START..END; raises :class:`ConfigurationError`
    for a bound that is none of the accepted forms, or a start after the end."""
    first = _bound(start, "start", end=False)
    last = _bound(end, "end", end=True)
    if first > last:
        raise ConfigurationError(
            f"start {_text(first)} is after end {_text(last)}: nothing to replay"
        )
    return _text(first), _text(last)


def _text(entry: tuple[int, int]) -> str:
    return f"{entry[0]}-{entry[1]}"


def next_id(entry_id: str) -> str | None:
    """The smallest entry id after ENTRY_ID (None after the last possible one)."""
    millis, sequence = _parse_id(entry_id, "entry id")
    if sequence < MAX_PART:
        return f"{millis}-{sequence + 1}"
    if millis < MAX_PART:
        return f"{millis + 1}-0"
    return None


async def count_range(
    bus: Backbone,
    uri: str,
    start: Bound = "beginning",
    end: Bound = "end",
    *,
    cap: int = 100_000,
) -> int | None:
    """How many entries START..END holds (XLEN for the whole stream, else
    counted by pages of ids); None when there are more than CAP to count."""
    first, last = range_ids(start, end)
    stream = bus.keys(uri).stream
    if (first, last) == ("0-0", _text((MAX_PART, MAX_PART))):
        return int(await bus.redis.xlen(stream))
    counted = 0
    cursor: str | None = first
    while cursor is not None:
        page: Any = await bus.redis.xrange(stream, cursor, last, count=1000)
        counted += len(page)
        if counted > cap:
            return None
        if len(page) < 1000:
            break
        cursor = next_id(as_text(page[-1][0]))
    return counted
