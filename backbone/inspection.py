"""The state of an environment's streams: lengths, memory, dead letters, consumer
groups, their consumers, lag and pending events.

Read-only: nothing here writes to Redis or joins a group. What a server cannot
tell (``MEMORY USAGE`` on a server without it, the lag of a group on Redis
before 7, or when Redis itself cannot compute it) reads as None rather than
failing the whole report.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import TYPE_CHECKING, Any

from .errors import BackboneError, ConfigurationError
from .events import as_text
from .keys import PREFIX, StreamKeys

if TYPE_CHECKING:
    from .connection import Backbone

__all__ = [
    "ConsumerInfo",
    "GroupInfo",
    "NotAStreamError",
    "StreamInfo",
    "entry_time",
    "inspect_stream",
    "inspect_streams",
    "stream_uris",
]


class NotAStreamError(BackboneError):
    """A stream's key holds something else than a stream."""

    def __init__(self, key: str, kind: str) -> None:
        self.key = key
        self.kind = kind
        super().__init__(
            f"{key} holds a {kind}, not a stream, so backbone did not write it; "
            f"check the URI and --environment, or look at the key with: "
            f"redis-cli TYPE {key!r}"
        )


def entry_time(entry_id: str | None) -> dt.datetime | None:
    """When Redis appended the entry ENTRY_ID (UTC), from its ``<ms>`` part."""
    if not entry_id:
        return None
    millis = entry_id.partition("-")[0]
    if not millis.isdigit():
        return None
    try:
        return dt.datetime.fromtimestamp(int(millis) / 1000, tz=dt.UTC)
    except (OverflowError, OSError, ValueError):
        return None


@dataclasses.dataclass(frozen=True, slots=True)
class ConsumerInfo:
    """One member of a consumer group (``XINFO CONSUMERS``)."""

    name: str
    pending: int
    """Entries delivered to this consumer and not acknowledged yet."""
    idle_ms: int | None
    """Milliseconds since the consumer last read, claimed or acknowledged."""
    inactive_ms: int | None = None
    """Milliseconds since its last successful read or claim (Redis 7.2 and
    later; None before, and for a consumer that never read anything)."""


@dataclasses.dataclass(frozen=True, slots=True)
class GroupInfo:
    """One consumer group of a stream (``XINFO GROUPS`` and ``XPENDING``)."""

    name: str
    consumers: tuple[ConsumerInfo, ...]
    pending: int
    """Entries delivered to the group's consumers and not acknowledged yet."""
    last_delivered_id: str
    entries_read: int | None
    """Entries the group has read (Redis 7 and later)."""
    lag: int | None
    """Entries of the stream not yet delivered to the group; None when Redis
    cannot tell (before Redis 7, or after deletions in the unread part)."""
    oldest_pending_id: str | None = None
    """The smallest entry id still pending in the group."""
    oldest_pending_idle_ms: int | None = None
    """Milliseconds since that entry was last delivered."""
    oldest_pending_consumer: str | None = None
    oldest_pending_deliveries: int | None = None

    @property
    def oldest_pending_time(self) -> dt.datetime | None:
        """When the oldest pending entry was appended to the stream."""
        return entry_time(self.oldest_pending_id)


@dataclasses.dataclass(frozen=True, slots=True)
class StreamInfo:
    """One backbone stream (``XINFO STREAM``, ``MEMORY USAGE``) and its groups."""

    uri: str
    key: str
    length: int
    first_id: str | None
    last_id: str | None
    last_generated_id: str | None
    entries_added: int | None
    """Entries ever appended, trimmed and deleted ones too (Redis 7 and later)."""
    memory_bytes: int | None
    """``MEMORY USAGE`` of the stream key alone (Redis' estimate): the entries'
    metadata, the groups and their pending lists. Payload hashes are one key per
    event and dead letters another stream; neither is counted. None when the
    server has no ``MEMORY`` command."""
    dead_letters: int | None
    groups: tuple[GroupInfo, ...]

    @property
    def first_time(self) -> dt.datetime | None:
        return entry_time(self.first_id)

    @property
    def last_time(self) -> dt.datetime | None:
        return entry_time(self.last_id)


async def stream_uris(backbone: Backbone) -> list[str]:
    """The URIs of every backbone stream of BACKBONE's environment, sorted.

    Keys are found with ``SCAN ... TYPE stream``, which walks the keyspace in
    small steps without blocking the server; dead-letter streams and other keys
    of a stream (``bb:{env:uri}:<suffix>``) are not streams of their own.
    """
    pattern = f"{PREFIX}:{{{backbone.environment}:*"
    uris: set[str] = set()
    async for key in backbone.redis.scan_iter(
        match=pattern, count=1000, _type="stream"
    ):
        try:
            keys = StreamKeys.from_stream_key(as_text(key))
        except ConfigurationError:
            continue  # a suffixed key (":dlq") or a name backbone cannot write
        if keys.environment == backbone.environment:
            uris.add(keys.name)  # a partition as ``orders#3``
    return sorted(uris)


async def inspect_streams(
    backbone: Backbone, uri: str | None = None
) -> list[StreamInfo]:
    """Every stream of the environment (or only URI), sorted by URI; streams
    deleted while they are read are left out."""
    uris = [uri] if uri is not None else await stream_uris(backbone)
    found: list[StreamInfo] = []
    for name in uris:
        info = await inspect_stream(backbone, name)
        if info is not None:
            found.append(info)
    return found


async def inspect_stream(backbone: Backbone, uri: str) -> StreamInfo | None:
    """Stream URI's state, or None when it does not exist.

    Raises :class:`NotAStreamError` when its key holds another type.
    """
    keys = backbone.keys(uri)
    async with backbone.redis.pipeline(transaction=False) as pipe:
        pipe.type(keys.stream)
        pipe.xinfo_stream(keys.stream)
        pipe.xinfo_groups(keys.stream)
        pipe.xlen(keys.dead_letters)
        pipe.memory_usage(keys.stream)
        kind, info, groups, dead, memory = await pipe.execute(raise_on_error=False)
    if isinstance(kind, Exception):
        raise kind
    kind = as_text(kind)
    if kind == "none":
        return None
    if kind != "stream":
        raise NotAStreamError(keys.stream, kind)
    if isinstance(info, Exception):
        # Deleted and written again as another type between the two replies.
        return None
    first, last = info.get("first-entry"), info.get("last-entry")
    return StreamInfo(
        uri=uri,
        key=keys.stream,
        length=int(info.get("length") or 0),
        first_id=as_text(first[0]) if first else None,
        last_id=as_text(last[0]) if last else None,
        last_generated_id=_text_or_none(info.get("last-generated-id")),
        entries_added=_int_or_none(info.get("entries-added")),
        memory_bytes=_int_or_none(memory),
        dead_letters=_int_or_none(dead),
        groups=await _groups(backbone, keys.stream, groups),
    )


async def _groups(backbone: Backbone, stream: str, reply: Any) -> tuple[GroupInfo, ...]:
    if isinstance(reply, Exception) or not reply:
        return ()
    rows = [{as_text(k): v for k, v in row.items()} for row in reply]
    names = [as_text(row.get("name")) for row in rows]
    async with backbone.redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.xinfo_consumers(stream, name)
            pipe.xpending_range(stream, name, min="-", max="+", count=1)
        replies = await pipe.execute(raise_on_error=False)
    groups: list[GroupInfo] = []
    for index, (row, name) in enumerate(zip(rows, names, strict=True)):
        consumers, oldest = replies[2 * index], replies[2 * index + 1]
        first = oldest[0] if isinstance(oldest, list) and oldest else None
        groups.append(
            GroupInfo(
                name=name,
                consumers=_consumers(consumers),
                pending=int(row.get("pending") or 0),
                last_delivered_id=as_text(row.get("last-delivered-id")),
                entries_read=_int_or_none(row.get("entries-read")),
                lag=_int_or_none(row.get("lag")),
                oldest_pending_id=_text_or_none(first and first.get("message_id")),
                oldest_pending_idle_ms=_int_or_none(
                    first and first.get("time_since_delivered")
                ),
                oldest_pending_consumer=_text_or_none(first and first.get("consumer")),
                oldest_pending_deliveries=_int_or_none(
                    first and first.get("times_delivered")
                ),
            )
        )
    return tuple(sorted(groups, key=lambda group: group.name))


def _consumers(reply: Any) -> tuple[ConsumerInfo, ...]:
    if isinstance(reply, Exception) or not reply:
        return ()
    found = []
    for raw in reply:
        row = {as_text(k): v for k, v in raw.items()}
        found.append(
            ConsumerInfo(
                name=as_text(row.get("name")),
                pending=int(row.get("pending") or 0),
                idle_ms=_int_or_none(row.get("idle")),
                inactive_ms=_inactive(row.get("inactive")),
            )
        )
    return tuple(sorted(found, key=lambda consumer: consumer.name))


def _inactive(value: Any) -> int | None:
    number = _int_or_none(value)
    # Redis answers -1 for a consumer that never read or claimed anything.
    return None if number is None or number < 0 else number


def _int_or_none(value: Any) -> int | None:
    if value is None or isinstance(value, (Exception, bool)):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _text_or_none(value: Any) -> str | None:
    if value is None or value is False or isinstance(value, Exception):
        return None
    return as_text(value) or None
