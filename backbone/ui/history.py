"""The last minutes of an environment's numbers, kept in memory: the rates the
tables show and the points the page's charts draw.

Redis has no rates: a stream only counts the entries ever added to it
(``entries-added``), a group the entries it has read (``entries-read``). A rate
is the difference of two such counters over the time between two samples, so
the dashboard samples them at a steady pace and keeps the samples of the last
``window`` seconds. A counter that goes down (the stream was deleted and written
again) gives no rate for that step rather than a negative one.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any, Final

from ..inspection import StreamInfo

__all__ = ["WINDOW", "GroupPoint", "History", "Sample", "StreamPoint", "sample_of"]

WINDOW: Final = 600.0
"""Seconds of samples kept (the charts' ten minutes)."""
RATE_SPAN: Final = 5.0
"""Seconds a table's rate is averaged over: steadier than one step, still live."""


@dataclasses.dataclass(frozen=True, slots=True)
class StreamPoint:
    added: int
    """Entries ever appended (``entries-added``; the length where Redis cannot
    tell, which trimming makes an underestimate)."""
    length: int


@dataclasses.dataclass(frozen=True, slots=True)
class GroupPoint:
    read: int | None
    """Entries the group has read (``entries-read``; None before Redis 7)."""
    lag: int | None
    pending: int


@dataclasses.dataclass(frozen=True, slots=True)
class Sample:
    """The counters of every stream and group at one moment."""

    seq: int
    at: float
    """Wall-clock seconds (for the page's time axis)."""
    mono: float
    """Monotonic seconds (for rates: the wall clock may jump)."""
    streams: Mapping[str, StreamPoint]
    groups: Mapping[tuple[str, str], GroupPoint]


def sample_of(seq: int, at: float, mono: float, streams: list[StreamInfo]) -> Sample:
    """A sample of the counters of STREAMS, read at AT."""
    return Sample(
        seq=seq,
        at=at,
        mono=mono,
        streams={
            s.uri: StreamPoint(
                added=s.entries_added if s.entries_added is not None else s.length,
                length=s.length,
            )
            for s in streams
        },
        groups={
            (s.uri, g.name): GroupPoint(
                read=g.entries_read, lag=g.lag, pending=g.pending
            )
            for s in streams
            for g in s.groups
        },
    )


def _per_second(now: int | None, then: int | None, seconds: float) -> float | None:
    if now is None or then is None or seconds <= 0 or now < then:
        return None
    return (now - then) / seconds


class History:
    """Samples of the last WINDOW seconds, oldest first."""

    def __init__(self, window: float = WINDOW, rate_span: float = RATE_SPAN) -> None:
        self.window = window
        self.rate_span = rate_span
        self._samples: collections.deque[Sample] = collections.deque()

    def __len__(self) -> int:
        return len(self._samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self._samples)

    @property
    def last(self) -> Sample | None:
        return self._samples[-1] if self._samples else None

    def add(self, sample: Sample) -> None:
        self._samples.append(sample)
        while self._samples and self._samples[0].mono < sample.mono - self.window:
            self._samples.popleft()

    def _span_start(self) -> Sample | None:
        """The oldest sample within RATE_SPAN of the last one (not the last)."""
        if len(self._samples) < 2:
            return None
        last = self._samples[-1]
        chosen = self._samples[-2]
        for sample in reversed(self._samples):
            if sample is last:
                continue
            if sample.mono < last.mono - self.rate_span:
                break
            chosen = sample
        return chosen

    def stream_rate(self, uri: str) -> float | None:
        """Events appended to URI per second, over the last few seconds."""
        start, last = self._span_start(), self.last
        if start is None or last is None:
            return None
        now, then = last.streams.get(uri), start.streams.get(uri)
        return _per_second(
            now.added if now else None,
            then.added if then else None,
            last.mono - start.mono,
        )

    def group_rate(self, uri: str, group: str) -> float | None:
        """Events delivered to GROUP of URI per second, over the last few seconds."""
        start, last = self._span_start(), self.last
        if start is None or last is None:
            return None
        now, then = last.groups.get((uri, group)), start.groups.get((uri, group))
        return _per_second(
            now.read if now else None,
            then.read if then else None,
            last.mono - start.mono,
        )

    def last_point(self) -> dict[str, Any] | None:
        """The chart point of the newest sample."""
        if not self._samples:
            return None
        previous = self._samples[-2] if len(self._samples) > 1 else None
        return point(self._samples[-1], previous)

    def points(self, after: int = -1) -> list[dict[str, Any]]:
        """The chart points of the samples numbered after AFTER, oldest first."""
        found: list[dict[str, Any]] = []
        previous: Sample | None = None
        for sample in self._samples:
            if sample.seq > after:
                found.append(point(sample, previous))
            previous = sample
        return found


def point(sample: Sample, previous: Sample | None) -> dict[str, Any]:
    """One sample as the page draws it: per stream its rate since PREVIOUS and
    length, per group its lag, pending events and delivery rate."""
    seconds = sample.mono - previous.mono if previous else 0.0

    def before_stream(uri: str) -> int | None:
        found = previous.streams.get(uri) if previous else None
        return found.added if found else None

    def before_group(key: tuple[str, str]) -> int | None:
        found = previous.groups.get(key) if previous else None
        return found.read if found else None

    groups: dict[str, dict[str, dict[str, Any]]] = {}
    for (uri, name), values in sample.groups.items():
        groups.setdefault(uri, {})[name] = {
            "lag": values.lag,
            "pending": values.pending,
            "rate": _rounded(
                _per_second(values.read, before_group((uri, name)), seconds)
            ),
        }
    return {
        "seq": sample.seq,
        "t": round(sample.at * 1000),
        "streams": {
            uri: {
                "rate": _rounded(
                    _per_second(values.added, before_stream(uri), seconds)
                ),
                "length": values.length,
            }
            for uri, values in sample.streams.items()
        },
        "groups": groups,
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
