"""What retention keeps: durations such as ``"7d"``, lengths, and the
:class:`RetentionPolicy` a running subscription applies (see
:mod:`backbone.retention` for the trimming itself)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
from typing import Final

from .errors import ConfigurationError

__all__ = [
    "DURATION_FORMS",
    "Duration",
    "RetentionPolicy",
    "check_length",
    "parse_duration",
]

Duration = dt.timedelta | float | int | str
"""A duration: a timedelta, seconds, or text such as ``"7d"``, ``"12h"``,
``"30m"``, ``"45s"``, ``"2w"`` or ``"1h30m"``."""

DURATION_FORMS: Final = (
    "a number and a unit (s, m, h, d or w), e.g. 30m, 12h, 7d or 1h30m, or a "
    "number of seconds"
)
_UNITS: Final = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
_PART: Final = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")
_PARTS: Final = re.compile(r"(?:\d+(?:\.\d+)?[wdhms])+")
_SECONDS: Final = re.compile(r"\d+(?:\.\d+)?")


def parse_duration(value: Duration, what: str = "duration") -> dt.timedelta:
    """VALUE as a positive timedelta; a :class:`ConfigurationError` naming WHAT,
    the bad value and the accepted forms otherwise."""
    seconds: float | None = None
    if isinstance(value, dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if _SECONDS.fullmatch(text):
            seconds = float(text)
        elif _PARTS.fullmatch(text):
            seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))
    if seconds is None:
        raise ConfigurationError(
            f"{what} {value!r} is not a duration; use {DURATION_FORMS}"
        )
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigurationError(
            f"{what} {value!r} must be longer than 0; use {DURATION_FORMS}"
        )
    try:
        return dt.timedelta(seconds=seconds)
    except OverflowError:
        raise ConfigurationError(
            f"{what} {value!r} is too long (at most 999999999 days)"
        ) from None


def check_length(value: int | None, what: str) -> int | None:
    """VALUE when it is None or a whole number >= 0 (entries to keep)."""
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or value < 0
    ):
        raise ConfigurationError(
            f"{what} must be a whole number of entries to keep, 0 or more, not "
            f"{value!r}"
        )
    return value


@dataclasses.dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """What a running subscription keeps of its stream and of its dead letters
    (``SubscriptionOptions(retention=...)``); durations are normalised to
    timedeltas when built.

    max_age / max_len: remove events older than this (a :data:`Duration` such
        as ``"7d"``), or all but the newest ``max_len``; either bound removes.
    dead_letters_max_age / dead_letters_max_len: the same for dead letters.
    every: how often it is applied (5 minutes by default; also at start).
    force: remove even what groups, projections and the event store still
        need (see :func:`trim`); off by default, and rarely what you want.
    """

    max_age: Duration | None = None
    max_len: int | None = None
    dead_letters_max_age: Duration | None = None
    dead_letters_max_len: int | None = None
    every: Duration = 300.0
    force: bool = False

    def __post_init__(self) -> None:
        for name in ("max_age", "dead_letters_max_age", "every"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, parse_duration(value, name))
        check_length(self.max_len, "max_len")
        check_length(self.dead_letters_max_len, "dead_letters_max_len")
        if not (self.trims_events or self.trims_dead_letters):
            raise ConfigurationError(
                "RetentionPolicy needs a bound: max_age, max_len, "
                "dead_letters_max_age or dead_letters_max_len"
            )

    @property
    def trims_events(self) -> bool:
        return self.max_age is not None or self.max_len is not None

    @property
    def trims_dead_letters(self) -> bool:
        return self.dead_letters_max_age is not None or (
            self.dead_letters_max_len is not None
        )

    @property
    def interval(self) -> float:
        """Seconds between two applications."""
        return parse_duration(self.every, "every").total_seconds()
