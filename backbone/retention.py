"""Retention: removing a stream's oldest events, by length or by age, with their
payload hashes in the same atomic step.

Each step is one call of ``lua/trim.lua`` on at most ``chunk`` entries (1,000
by default), so no call holds Redis for long; the client calls again until the
bounds are met or something holds the rest. The script computes, in the same
step as it deletes, the first entry anything still needs:

* a consumer group: its first unread entry (after ``last-delivered-id``) and
  its oldest pending one (``XPENDING``), whichever comes first;
* a projection: the first entry after its checkpoint (all of them when it is
  broken or being rebuilt);
* the event store: the first event of an aggregate (field ``a``).

Nothing from that entry on is removed unless ``force`` is given; the report
names what held entries back, and from which entry. Redis' own trimming
(``XTRIM``, ``XADD MAXLEN``) would delete pending entries and leave payload
hashes behind; Redis 8.2's ``ACKED`` option knows the groups but not the
projections nor the event store, so the bound is computed here on every
version. A run removes only entries that were in the stream when it began,
so it ends even while producers keep writing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import TYPE_CHECKING, Final, Literal

from .errors import ConfigurationError
from .events import as_text, id_key
from .retention_policy import (
    DURATION_FORMS,
    Duration,
    RetentionPolicy,
    check_length,
    parse_duration,
)

if TYPE_CHECKING:
    from .connection import Backbone
    from .keys import StreamKeys
    from .trim_script import TrimHold, TrimReply

__all__ = [
    "DURATION_FORMS",
    "Duration",
    "RetentionHold",
    "RetentionPolicy",
    "TrimReport",
    "check_length",
    "parse_duration",
    "trim",
    "trim_dead_letters",
    "trim_keys",
]

MAX_CHUNK: Final = 1000

HoldKind = Literal["group", "projection", "aggregates"]


@dataclasses.dataclass(frozen=True, slots=True)
class RetentionHold:
    """Something that still needs entries retention would otherwise remove:
    a consumer ``group``, a ``projection``, or the event store's
    ``aggregates``; ``entry_id`` is the first entry it needs."""

    kind: HoldKind
    name: str
    entry_id: str
    reason: str

    def __str__(self) -> str:
        who = "aggregates" if self.kind == "aggregates" else f"{self.kind} {self.name}"
        return f"{who} from {self.entry_id} ({self.reason})"


@dataclasses.dataclass(frozen=True, slots=True)
class TrimReport:
    """What one trim did (or, with ``dry_run``, would do)."""

    stream: str
    """The key of the stream trimmed (the dead-letter stream's, for dead letters)."""
    dead_letters: bool
    dry_run: bool
    removed: int
    """Entries removed (dry run: that would be)."""
    payloads_removed: int
    """Their payload hashes (dead letters: payload copies) removed; entries
    without one (an operation without parameters) count none."""
    first_kept: str | None
    """The stream's first entry after the trim (dry run: the first that stays);
    None when none is left."""
    age_cutoff: str | None
    """With ``max_age``: entries before this id were old enough to go."""
    bound: str | None
    """The first entry a hold kept (None: nothing was held back)."""
    held: tuple[RetentionHold, ...] = ()
    """What held back entries the bounds would remove, each from its first entry."""
    forced: tuple[RetentionHold, ...] = ()
    """With ``force``: the holds whose entries were removed all the same."""

    def lines(self, label: str | None = None) -> list[str]:
        """The report as lines, each starting with LABEL (default: the key)."""
        label = label or self.stream
        verb = "would remove" if self.dry_run else "removed"
        entries, payloads = (
            ("dead letters", "payload copies")
            if self.dead_letters
            else ("entries", "payload hashes")
        )
        first = (
            f"{label}: {verb} {_count(self.removed, entries)} and "
            f"{_count(self.payloads_removed, payloads)}"
        )
        first += f", first kept {self.first_kept}" if self.first_kept else ", none kept"
        return [
            first,
            *(f"{label}: held back by {hold}" for hold in self.held),
            *(f"{label}: forced past {hold}" for hold in self.forced),
        ]

    def __str__(self) -> str:
        text = self.lines()[0]
        if self.held:
            text += "; held back by " + ", ".join(str(hold) for hold in self.held)
        if self.forced:
            text += "; forced past " + ", ".join(str(hold) for hold in self.forced)
        return text


_SINGULAR: Final = {
    "entries": "entry",
    "dead letters": "dead letter",
    "payload hashes": "payload hash",
    "payload copies": "payload copy",
}


def _count(number: int, things: str) -> str:
    return f"{number} {_SINGULAR[things] if number == 1 else things}"


async def trim(
    backbone: Backbone,
    uri: str,
    *,
    max_len: int | None = None,
    max_age: Duration | None = None,
    force: bool = False,
    dry_run: bool = False,
    chunk: int = MAX_CHUNK,
) -> TrimReport:
    """Remove the oldest events of stream URI with their payload hashes: all
    but the newest MAX_LEN, and those older than MAX_AGE (``"7d"``, a
    timedelta, seconds). Entries a consumer group has not read or not
    acknowledged, that a projection has not applied, and events of aggregates
    stay unless FORCE; the report names what held them back. DRY_RUN counts
    what would go and removes nothing. Each call of the script handles at most
    CHUNK entries; what was removed stays removed if a later call fails."""
    return await trim_keys(
        backbone,
        backbone.keys(uri),
        dead_letters=False,
        max_len=max_len,
        max_age=max_age,
        force=force,
        dry_run=dry_run,
        chunk=chunk,
    )


async def trim_dead_letters(
    backbone: Backbone,
    uri: str,
    *,
    max_len: int | None = None,
    max_age: Duration | None = None,
    force: bool = False,
    dry_run: bool = False,
    chunk: int = MAX_CHUNK,
) -> TrimReport:
    """Remove the oldest dead letters of stream URI with their payload copies,
    as :func:`trim` does (a dead letter's age counts from when it was written)."""
    return await trim_keys(
        backbone,
        backbone.keys(uri),
        dead_letters=True,
        max_len=max_len,
        max_age=max_age,
        force=force,
        dry_run=dry_run,
        chunk=chunk,
    )


async def trim_keys(
    backbone: Backbone,
    keys: StreamKeys,
    *,
    dead_letters: bool,
    max_len: int | None,
    max_age: Duration | None,
    force: bool,
    dry_run: bool,
    chunk: int = MAX_CHUNK,
) -> TrimReport:
    """:func:`trim` (or, with DEAD_LETTERS, :func:`trim_dead_letters`) of the
    stream KEYS names."""
    check_length(max_len, "max_len")
    age = None if max_age is None else parse_duration(max_age, "max_age")
    if max_len is None and age is None:
        raise ConfigurationError(
            "trimming needs a bound: max_len (entries to keep) or max_age (e.g. '7d')"
        )
    if isinstance(chunk, bool) or not isinstance(chunk, int):
        raise ConfigurationError(f"chunk must be a whole number, not {chunk!r}")
    if not 1 <= chunk <= MAX_CHUNK:
        raise ConfigurationError(f"chunk must be from 1 to {MAX_CHUNK}, not {chunk}")
    stream = keys.dead_letters if dead_letters else keys.stream
    projections = [] if dead_letters else await _projections(backbone, keys)
    age_ms = None if age is None else max(1, int(age / dt.timedelta(milliseconds=1)))
    script = backbone.scripts.trim
    removed = payloads = 0
    upto = after = ""
    first_seen: dict[tuple[str, str], TrimHold] = {}
    while True:
        reply = await script.trim(
            backbone.redis,
            stream=stream,
            payload_prefix=(
                keys.dead_letter_payload_prefix if dead_letters else keys.payload_prefix
            ),
            dead_letters=dead_letters,
            count=chunk,
            max_len=max_len,
            max_age_ms=age_ms,
            force=force,
            dry_run=dry_run,
            upto=upto,
            after=after,
            counted=removed,
            projections=projections,
        )
        removed += reply.removed
        payloads += reply.payloads
        upto = upto or reply.last_id
        after = reply.last_taken or after
        for hold in reply.holds:
            first_seen.setdefault((hold.kind, hold.name), hold)
        if reply.stop != "chunk" or not reply.removed:
            break
    return _report(
        reply, stream, dead_letters, dry_run, force, removed, payloads, first_seen
    )


def _report(
    last: TrimReply,
    stream: str,
    dead_letters: bool,
    dry_run: bool,
    force: bool,
    removed: int,
    payloads: int,
    first_seen: dict[tuple[str, str], TrimHold],
) -> TrimReport:
    """The report of a run whose last call answered LAST."""
    held: list[RetentionHold] = []
    forced: list[RetentionHold] = []
    kept = last.first_kept or None
    if force:
        # A hold was forced past when entries it needed are gone: it needed
        # entries from before the first one kept (or the stream is empty now).
        forced = [
            _hold(hold)
            for hold in first_seen.values()
            if kept is None or id_key(hold.entry_id) < id_key(kept)
        ]
    elif last.stop == "held":
        # Every hold at or before where the run stopped held entries back; by
        # age, also those later but still among the entries old enough to go.
        stop = id_key(last.stop_id)
        cutoff = int(last.cutoff) if last.cutoff else None
        upto = id_key(last.last_id) if last.last_id else None
        for hold in last.holds:
            at = id_key(hold.entry_id)
            old = cutoff is not None and at[0] < cutoff and (upto is None or at <= upto)
            if at <= stop or old:
                held.append(_hold(hold))
    return TrimReport(
        stream=stream,
        dead_letters=dead_letters,
        dry_run=dry_run,
        removed=removed,
        payloads_removed=payloads,
        first_kept=kept,
        age_cutoff=f"{last.cutoff}-0" if last.cutoff else None,
        bound=last.stop_id if held else None,
        held=tuple(sorted(held, key=lambda h: (id_key(h.entry_id), h.kind, h.name))),
        forced=tuple(
            sorted(forced, key=lambda h: (id_key(h.entry_id), h.kind, h.name))
        ),
    )


def _hold(hold: TrimHold) -> RetentionHold:
    kind: HoldKind = (
        "group"
        if hold.kind == "group"
        else "projection"
        if hold.kind == "projection"
        else "aggregates"
    )
    return RetentionHold(kind, hold.name, hold.entry_id, hold.reason)


async def _projections(backbone: Backbone, keys: StreamKeys) -> list[tuple[str, str]]:
    """(name, checkpoint key) of every projection of the stream that has a
    checkpoint; read-model keys (``...:proj:<name>:<part>``) are not ones."""
    prefix = f"{keys.stream}:proj:"
    found: set[tuple[str, str]] = set()
    async for raw in backbone.redis.scan_iter(match=f"{prefix}*", count=10_000):
        key = as_text(raw)
        name = key[len(prefix) :]
        if name and ":" not in name:
            found.add((name, key))
    return sorted(found)
