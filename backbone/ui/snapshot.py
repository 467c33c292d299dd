"""What the dashboard shows at one moment, read from Redis without writing.

Streams, groups and consumers come from :mod:`backbone.inspection` (the numbers
of ``backbone inspect``), projections' checkpoints from
:func:`backbone.store.checkpoint.projection_status` (those of ``backbone
projection status``). The archive keeps its checkpoint in PostgreSQL, committed
before it acknowledges, so what it has not archived yet is what its consumer
group has not acknowledged: the group's lag and pending events.

Finding the keys means walking the keyspace (``SCAN``), which holds one key per
event: it is done at start and then every ``rescan`` seconds, not at every
sample; a stream deleted meanwhile drops out at once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import time
from typing import TYPE_CHECKING, Any, Final

from ..errors import BackboneError, ConfigurationError
from ..events import as_text
from ..inspection import (
    GroupInfo,
    NotAStreamError,
    StreamInfo,
    entry_time,
    inspect_stream,
    stream_uris,
)
from ..keys import PREFIX, StreamKeys, validate_aggregate_id
from ..store.checkpoint import ProjectionStatus, projection_status
from .history import History

if TYPE_CHECKING:
    from ..connection import Backbone

__all__ = ["ARCHIVE_GROUP", "Checkpoint", "Reader", "State", "state_document"]

ARCHIVE_GROUP: Final = "archive"
"""The archive sink's consumer group unless told otherwise (ArchiveOptions)."""
PROJECTION_LAG_CAP: Final = 1000
"""A projection's lag is counted up to this (one capped XRANGE per sample)."""
RESCAN: Final = 10.0


@dataclasses.dataclass(frozen=True, slots=True)
class Checkpoint:
    """One projection's checkpoint, or why it cannot be read."""

    uri: str
    name: str
    status: ProjectionStatus | None
    error: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class State:
    """Everything read in one sample."""

    streams: list[StreamInfo]
    projections: list[Checkpoint]
    at: float
    """Wall-clock seconds when the read began."""
    mono: float


class Reader:
    """Reads the state of BACKBONE's environment, one sample at a time."""

    def __init__(
        self,
        backbone: Backbone,
        *,
        rescan: float = RESCAN,
        projection_cap: int = PROJECTION_LAG_CAP,
    ) -> None:
        self.backbone = backbone
        self.rescan = rescan
        self.projection_cap = projection_cap
        self._uris: list[str] = []
        self._projections: list[tuple[str, str]] = []
        self._scanned: float | None = None

    def rescan_soon(self) -> None:
        """Walk the keyspace again at the next sample."""
        self._scanned = None

    async def read(self) -> State:
        at, mono = time.time(), time.monotonic()
        if self._scanned is None or mono - self._scanned >= self.rescan:
            self._uris = await stream_uris(self.backbone)
            self._projections = await projection_names(self.backbone)
            self._scanned = mono
        streams: list[StreamInfo] = []
        for uri in self._uris:
            try:
                info = await inspect_stream(self.backbone, uri)
            except NotAStreamError:
                info = None  # replaced by a key of another type: not a stream now
            if info is None:
                self.rescan_soon()
            else:
                streams.append(info)
        projections = [
            await self._checkpoint(uri, name) for uri, name in self._projections
        ]
        return State(streams, projections, at, mono)

    async def _checkpoint(self, uri: str, name: str) -> Checkpoint:
        try:
            status = await projection_status(
                self.backbone, uri, name, cap=self.projection_cap
            )
        except BackboneError as exc:  # a checkpoint that is not an entry id
            return Checkpoint(uri, name, None, str(exc))
        return Checkpoint(uri, name, status)


async def projection_names(backbone: Backbone) -> list[tuple[str, str]]:
    """(URI, name) of every projection checkpoint of the environment, sorted:
    hashes ``bb:{env:uri}:proj:<name>`` (read-model keys have a further
    ``:<part>`` and are not checkpoints)."""
    environment = backbone.environment
    pattern = re.compile(
        rf"{PREFIX}:\{{{re.escape(environment)}:([^{{}}:]+)\}}:proj:([^:]+)"
    )
    found: set[tuple[str, str]] = set()
    async for raw in backbone.redis.scan_iter(
        match=f"{PREFIX}:{{{environment}:*}}:proj:*", count=1000, _type="hash"
    ):
        match = pattern.fullmatch(as_text(raw))
        if match is None:
            continue
        try:
            StreamKeys(environment, match[1])
            validate_aggregate_id(match[2], "projection name")
        except ConfigurationError:
            continue  # not a name backbone writes
        found.add((match[1], match[2]))
    return sorted(found)


# --- the JSON document the page reads ------------------------------------------------


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.isoformat(timespec="milliseconds") if moment else None


def _age_ms(entry_id: str | None, now: float) -> int | None:
    """Milliseconds since the entry ENTRY_ID was appended (by its id's clock)."""
    moment = entry_time(entry_id)
    if moment is None:
        return None
    return max(0, round(now * 1000 - moment.timestamp() * 1000))


def _rate(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _group(
    stream: StreamInfo, group: GroupInfo, history: History, now: float
) -> dict[str, Any]:
    return {
        "name": group.name,
        "consumers": [
            {
                "name": consumer.name,
                "pending": consumer.pending,
                "idle_ms": consumer.idle_ms,
                "inactive_ms": consumer.inactive_ms,
            }
            for consumer in group.consumers
        ],
        "lag": group.lag,
        "pending": group.pending,
        "entries_read": group.entries_read,
        "last_delivered_id": group.last_delivered_id,
        "oldest_pending_id": group.oldest_pending_id,
        "oldest_pending_age_ms": _age_ms(group.oldest_pending_id, now),
        "oldest_pending_idle_ms": group.oldest_pending_idle_ms,
        "oldest_pending_consumer": group.oldest_pending_consumer,
        "oldest_pending_deliveries": group.oldest_pending_deliveries,
        "rate": _rate(history.group_rate(stream.uri, group.name)),
    }


def _stream(stream: StreamInfo, history: History, now: float) -> dict[str, Any]:
    return {
        "uri": stream.uri,
        "key": stream.key,
        "length": stream.length,
        "first_id": stream.first_id,
        "last_id": stream.last_id,
        "last_time": _iso(stream.last_time),
        "entries_added": stream.entries_added,
        "memory_bytes": stream.memory_bytes,
        "dead_letters": stream.dead_letters,
        "rate": _rate(history.stream_rate(stream.uri)),
        "groups": [_group(stream, group, history, now) for group in stream.groups],
    }


def _projection(checkpoint: Checkpoint) -> dict[str, Any]:
    status = checkpoint.status
    return {
        "uri": checkpoint.uri,
        "name": checkpoint.name,
        "checkpoint": status.checkpoint if status else None,
        "last_id": status.last_id if status else None,
        "lag": status.lag if status else None,
        "lag_exact": status.lag_exact if status else True,
        "applied": status.applied if status else None,
        "skipped": status.skipped if status else None,
        "broken": status.broken if status else None,
        "ahead": status.ahead if status else False,
        "error": checkpoint.error,
    }


def _archives(streams: list[StreamInfo], group_name: str) -> list[dict[str, Any]]:
    found = []
    for stream in streams:
        for group in stream.groups:
            if group.name != group_name:
                continue
            behind = None if group.lag is None else group.lag + group.pending
            found.append(
                {
                    "uri": stream.uri,
                    "group": group.name,
                    "last_delivered_id": group.last_delivered_id,
                    "pending": group.pending,
                    "lag": group.lag,
                    "behind": behind,
                }
            )
    return found


def state_document(
    state: State, history: History, *, archive_group: str = ARCHIVE_GROUP
) -> dict[str, Any]:
    """STATE as the page reads it (JSON-ready)."""
    return {
        "read_at": _iso(dt.datetime.fromtimestamp(state.at, dt.UTC)),
        "streams": [_stream(stream, history, state.at) for stream in state.streams],
        "projections": [_projection(checkpoint) for checkpoint in state.projections],
        "archives": _archives(state.streams, archive_group),
    }
