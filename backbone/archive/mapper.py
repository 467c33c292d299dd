"""From a stream entry and its payload hash to an archive row, and back.

A payload value is msgpack with backbone's extension types; the archive keeps it
as JSON (``jsonb``) that SQL can query and that :func:`decode_archived` turns
back into the same Python values. What JSON has no word for becomes an object
with one key that starts with a single ``$`` (a *tag*):

==================================  ===========================================
value                               archived as
==================================  ===========================================
``datetime``, ``date``, ``time``    ``{"$datetime": "2026-11-25T10:00:00+00:00"}``
                                    (``$date``, ``$time``; ``isoformat()`` text)
``UUID``                            ``{"$uuid": "0b7c...-..."}``
``Decimal``                         ``{"$decimal": "12.30"}`` (exact text)
``timedelta``                       ``{"$timedelta_us": 90000000}``
``bytes``                           ``{"$bytes": "<base64>"}``
a float JSON cannot hold exactly    ``{"$float": "nan"}``, ``"inf"``, ``"1e+300"``,
                                    ``"-0.0"``
text holding a NUL character        ``{"$text": "<base64 of UTF-8>"}``
a map with a key that is not text   ``{"$map": [[key, value], ...]}``
a sealed personal value (ext 7)     ``{"$sealed": "<base64 of the ext body>"}``
an erased personal value (ext 8)    ``{"$erased": true}``
any other extension type            ``{"$ext": 9, "base64": "<body>"}``
==================================  ===========================================

A map's own keys that start with ``$`` get one more ``$`` (``"$ref"`` is stored
as ``"$$ref"``), so a key with a single leading ``$`` is always a tag and a
stored map is never mistaken for one. Sealed values stay sealed: the archive
never opens them, so erasing a subject's key makes the archived copy unreadable
too. PostgreSQL's ``jsonb`` holds no NUL character and turns a number written
with an exponent into plain digits (a float would come back as an int) and
``-0.0`` into ``0.0``: hence ``$text`` and ``$float``.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import json
import math
import struct
import uuid
from collections.abc import Mapping
from typing import Any, Final, NamedTuple

import msgpack

from ..codec import (
    EXT_DATE,
    EXT_DATETIME,
    EXT_DECIMAL,
    EXT_TIME,
    EXT_TIMEDELTA,
    EXT_UUID,
)
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
from ..personal import ERASED
from ..sealing import EXT_ERASED, EXT_SEALED

__all__ = [
    "ArchiveRow",
    "Rejected",
    "archived_json",
    "decode_archived",
    "map_entry",
    "map_payload",
]

_MICROS: Final = struct.Struct(">q")
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class _Tag(dict[str, Any]):
    """A tag the mapper made (not a map of the payload): passed through as is.
    Hashable, since an extension value may be a map's key (a ``dict[UUID, ...]``
    parameter); never changed once made."""

    __slots__ = ()

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(self.items()))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _ext_hook(code: int, data: bytes) -> _Tag:
    # Each body is checked the way backbone's codec reads it, and written back
    # in the form the codec writes, so the archive never holds what a consumer
    # could not read.
    if code == EXT_DATETIME:
        return _Tag({"$datetime": dt.datetime.fromisoformat(data.decode()).isoformat()})
    if code == EXT_DATE:
        return _Tag({"$date": dt.date.fromisoformat(data.decode()).isoformat()})
    if code == EXT_TIME:
        return _Tag({"$time": dt.time.fromisoformat(data.decode()).isoformat()})
    if code == EXT_UUID:
        return _Tag({"$uuid": str(uuid.UUID(bytes=data))})
    if code == EXT_DECIMAL:
        return _Tag({"$decimal": str(decimal.Decimal(data.decode()))})
    if code == EXT_TIMEDELTA:
        return _Tag({"$timedelta_us": _MICROS.unpack(data)[0]})
    if code == EXT_SEALED:
        return _Tag({"$sealed": _b64(data)})
    if code == EXT_ERASED:
        return _Tag({"$erased": True})
    return _Tag({"$ext": code, "base64": _b64(data)})


def _json(value: Any) -> Any:
    """VALUE (as msgpack unpacked it, tags already made) as JSON data."""
    kind = type(value)
    if kind is str:
        return value if "\x00" not in value else _Tag({"$text": _b64(value.encode())})
    if kind is int or kind is bool or value is None or kind is _Tag:
        return value
    if kind is float:
        text = repr(value)
        # jsonb keeps a number as numeric, which has no negative zero.
        if math.isfinite(value) and "e" not in text and text != "-0.0":
            return value
        return _Tag({"$float": text})
    if kind is bytes:
        return _Tag({"$bytes": _b64(value)})
    if kind is list:
        return [_json(item) for item in value]
    if kind is dict:
        return _object(value)
    raise TypeError(f"cannot archive a value of type {kind.__name__}")


def _object(mapping: dict[Any, Any]) -> dict[str, Any]:
    if all(type(key) is str and "\x00" not in key for key in mapping):
        return {
            ("$" + key if key[:1] == "$" else key): _json(item)
            for key, item in mapping.items()
        }
    return _Tag({"$map": [[_json(key), _json(item)] for key, item in mapping.items()]})


def map_payload(payload: Mapping[bytes, bytes]) -> dict[str, Any]:
    """A payload hash (field -> msgpack) as the archive's JSON data.

    Raises :class:`ValueError` naming the field whose value is not valid msgpack
    (or holds an extension body backbone's codec cannot read)."""
    decoded: dict[Any, Any] = {}
    for name, raw in payload.items():
        try:
            key: Any = name.decode()
        except UnicodeDecodeError:
            key = name
        try:
            decoded[key] = msgpack.unpackb(
                raw, raw=False, ext_hook=_ext_hook, strict_map_key=False
            )
        except Exception as exc:
            raise ValueError(
                f"field {key!r} is not valid msgpack ({type(exc).__name__}: {exc})"
            ) from None
    return _object(decoded)


_ENCODER: Final = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False
)


def archived_json(data: Any) -> str:
    """DATA (JSON data the mapper made) as the text PostgreSQL reads as jsonb."""
    return _ENCODER.encode(data)


# --- back from the archive ------------------------------------------------------


def decode_archived(value: Any) -> Any:
    """The Python value archived JSON data (as ``json.loads`` or psycopg reads a
    ``jsonb`` column) stands for: tags become ``datetime``, ``Decimal``,
    ``bytes``... again, escaped keys lose their extra ``$``. A sealed value reads
    as ``msgpack.ExtType(7, body)``, still sealed; an erased one as
    ``backbone.ERASED``.
    """
    if isinstance(value, list):
        return [decode_archived(item) for item in value]
    if not isinstance(value, dict):
        return value
    for key in value:
        if key[:1] == "$" and key[1:2] != "$":
            return _untag(key, value)
    return {
        (key[1:] if key[:2] == "$$" else key): decode_archived(item)
        for key, item in value.items()
    }


def _untag(tag: str, value: dict[str, Any]) -> Any:
    body = value[tag]
    if tag == "$datetime":
        return dt.datetime.fromisoformat(body)
    if tag == "$date":
        return dt.date.fromisoformat(body)
    if tag == "$time":
        return dt.time.fromisoformat(body)
    if tag == "$uuid":
        return uuid.UUID(body)
    if tag == "$decimal":
        return decimal.Decimal(body)
    if tag == "$timedelta_us":
        return dt.timedelta(microseconds=body)
    if tag == "$bytes":
        return base64.b64decode(body)
    if tag == "$float":
        return float(body)
    if tag == "$text":
        return base64.b64decode(body).decode()
    if tag == "$map":
        return {decode_archived(key): decode_archived(item) for key, item in body}
    if tag == "$sealed":
        return msgpack.ExtType(EXT_SEALED, base64.b64decode(body))
    if tag == "$erased":
        return ERASED
    if tag == "$ext":
        return msgpack.ExtType(int(body), base64.b64decode(value["base64"]))
    raise ValueError(
        f"{tag!r} is not a tag of the archive (a map's own keys starting with $ "
        "are stored with one more $); was this data written by backbone's archive?"
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
    return _Tag({"$bytes": _b64(raw)}) if text is None else text


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
        metadata["fields"] = _object(other)
    return metadata


def _created_at(raw: bytes | None, entry_id: str) -> dt.datetime:
    """The producer's time (``t``), or when it is missing or out of range the time
    Redis appended the entry (its id's milliseconds)."""
    for text in (raw, entry_id.partition("-")[0].encode()):
        if text and text.isdigit() and len(text) < 16:
            try:
                return _EPOCH + dt.timedelta(milliseconds=int(text))
            except OverflowError:
                continue
    return _EPOCH
