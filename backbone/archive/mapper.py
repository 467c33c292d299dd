"""From a stream entry and its payload hash to an archive row.

The payload becomes JSON through :mod:`backbone.archive.values` (tagged types
JSON lacks, reversible by ``decode_archived``); the entry's other fields become
the row's columns and its metadata.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import Any, Final, NamedTuple

from ..deadletters import DeadLetterReason
from ..events import (
    F_AGGREGATE,
    F_CAUSATION,
    F_CONTRACT,
    F_CORRELATION,
    F_OPERATION,
    F_PRODUCER,
    F_REDRIVE_GROUP,
    F_REDRIVE_ORIGIN,
    F_TIME,
    F_TRACE,
    F_VERSION,
    EventId,
    entry_version,
)
from ..keys import StreamKeys

__all__ = [
    "ArchiveRow",
    "Rejected",
    "archived_json",
    "decode_archived",
    "map_entry",
    "map_payload",
]

from .values import (
    EPOCH,
    Tag,
    archived_json,
    b64,
    decode_archived,
    json_object,
    map_payload,
)

# --- one entry ------------------------------------------------------------------


class ArchiveRow(NamedTuple):
    """One row of the ``events`` table (JSON columns as text)."""

    event_id: str
    stream_id: str
    stream_type: str
    event_type: str
    event_data: str
    metadata: str
    version: int | None
    created_at: dt.datetime


@dataclasses.dataclass(frozen=True, slots=True)
class Rejected:
    """An entry that cannot be archived, and why (its dead letter's reason)."""

    reason: DeadLetterReason
    message: str


# The entry's fields under the names the archive's metadata gives them.
_NAMES: Final = {
    F_CONTRACT: "contract",
    F_PRODUCER: "producer",
    F_TRACE: "trace_context",
    F_REDRIVE_GROUP: "redrive_group",
    F_REDRIVE_ORIGIN: "original_entry_id",
    F_AGGREGATE: "aggregate_id",
}


def map_entry(
    keys: StreamKeys,
    entry_id: str,
    fields: Mapping[bytes, bytes],
    payload: Mapping[bytes, bytes] | str | None,
    version: int | None,
    *,
    parameterless: bool = False,
) -> ArchiveRow | Rejected:
    """The archive row of one entry, or why it cannot be archived.

    PAYLOAD is the payload hash (empty or None when the key does not exist), or
    the text of the error Redis gave reading it. VERSION is the aggregate version
    the reader found for an aggregate's event. PARAMETERLESS: the entry's
    operation is known to take no parameters, so it has no payload hash.
    """
    operation = fields.get(F_OPERATION)
    if not operation:
        return Rejected(
            DeadLetterReason.MALFORMED_ENTRY,
            "the stream entry has no operation field 'o'",
        )
    event_type = _clean(operation)
    if event_type is None:
        return Rejected(
            DeadLetterReason.MALFORMED_ENTRY,
            f"the operation field 'o' is not text ({operation[:60]!r})",
        )
    aggregate = fields.get(F_AGGREGATE)
    aggregate_id = _clean(aggregate) if aggregate is not None else None
    if aggregate is not None and aggregate_id is None:
        return Rejected(
            DeadLetterReason.MALFORMED_ENTRY,
            f"the aggregate id field 'a' is not text ({aggregate[:60]!r})",
        )
    if isinstance(payload, str):
        return Rejected(
            DeadLetterReason.UNREADABLE_PAYLOAD,
            f"the payload key {keys.payload(entry_id)} cannot be read as a hash: "
            f"{payload}",
        )
    if not payload and not parameterless:
        return Rejected(
            DeadLetterReason.MISSING_PAYLOAD,
            f"the payload hash {keys.payload(entry_id)} does not exist; when "
            f"operation {event_type!r} takes no parameters, give the archive its "
            "contract (ArchiveOptions.contracts, backbone archive --contracts) and "
            "re-drive this dead letter (backbone dlq retry)",
        )
    try:
        data = archived_json(map_payload(payload or {}))
    except ValueError as exc:
        return Rejected(DeadLetterReason.UNDECODABLE, str(exc))
    except RecursionError:
        return Rejected(
            DeadLetterReason.UNDECODABLE, "a payload value is nested too deeply"
        )
    stream_type = f"{keys.environment}:{keys.uri}"
    origin = _clean(fields.get(F_REDRIVE_ORIGIN) or b"")
    own_id = origin if origin and fields.get(F_REDRIVE_GROUP) else entry_id
    metadata = _metadata(fields, entry_id)
    return ArchiveRow(
        event_id=f"{stream_type}/{own_id}",
        stream_id=(
            stream_type if aggregate_id is None else f"{stream_type}/{aggregate_id}"
        ),
        stream_type=stream_type,
        event_type=event_type,
        event_data=data,
        metadata=archived_json(metadata),
        version=version,
        created_at=_created_at(fields.get(F_TIME), entry_id),
    )


def _clean(raw: bytes) -> str | None:
    """RAW as text PostgreSQL can store (UTF-8, no NUL), or None."""
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return None
    return None if "\x00" in text else text


def _text(raw: bytes) -> Any:
    text = _clean(raw)
    return Tag({"$bytes": b64(raw)}) if text is None else text


def _event_ref(raw: bytes) -> Any:
    """A correlation or causation id (``bb:{env:uri}/<id>``) in the archive's
    event id form (``env:uri/<id>``), so it joins with ``events.event_id``."""
    text = _clean(raw)
    if text is None:
        return _text(raw)
    try:
        ref = EventId.parse(text)
        keys = StreamKeys.from_stream_key(ref.stream)
    except Exception:
        return text
    return f"{keys.environment}:{keys.uri}/{ref.id}"


def _metadata(fields: Mapping[bytes, bytes], entry_id: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"entry_id": entry_id}
    other: dict[Any, Any] = {}
    for name, raw in fields.items():
        if name == F_OPERATION:
            continue
        if name == F_VERSION:
            number = entry_version(raw)
            metadata["operation_version"] = number if number else _text(raw)
        elif name == F_TIME:
            metadata["produced_at_ms"] = int(raw) if raw.isdigit() else _text(raw)
        elif name in (F_CORRELATION, F_CAUSATION):
            key = "correlation_id" if name == F_CORRELATION else "causation_id"
            metadata[key] = _event_ref(raw)
        elif name in _NAMES:
            metadata[_NAMES[name]] = _text(raw)
        else:
            other[_clean(name) or name] = _text(raw)
    metadata.setdefault("operation_version", 1)
    if other:
        metadata["fields"] = json_object(other)
    return metadata


def _created_at(raw: bytes | None, entry_id: str) -> dt.datetime:
    """The producer's time (``t``), or when it is missing or out of range the time
    Redis appended the entry (its id's milliseconds)."""
    for text in (raw, entry_id.partition("-")[0].encode()):
        if text and text.isdigit() and len(text) < 16:
            try:
                return EPOCH + dt.timedelta(milliseconds=int(text))
            except OverflowError:
                continue
    return EPOCH
