"""Payload values as the archive's JSON, and back.

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
import datetime as dt
import decimal
import json
import math
import struct
import uuid
from collections.abc import Mapping
from typing import Any, Final

import msgpack

from ..codec import (
    EXT_DATE,
    EXT_DATETIME,
    EXT_DECIMAL,
    EXT_TIME,
    EXT_TIMEDELTA,
    EXT_UUID,
)
from ..personal import ERASED
from ..sealing import EXT_ERASED, EXT_SEALED

__all__ = [
    "EPOCH",
    "Tag",
    "archived_json",
    "b64",
    "decode_archived",
    "json_object",
    "map_payload",
]

_MICROS: Final = struct.Struct(">q")
EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class Tag(dict[str, Any]):
    """A tag the mapper made (not a map of the payload): passed through as is.
    Hashable, since an extension value may be a map's key (a ``dict[UUID, ...]``
    parameter); never changed once made."""

    __slots__ = ()

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(self.items()))


def b64(data: bytes) -> str:
    """DATA as base64 text."""
    return base64.b64encode(data).decode("ascii")


def _ext_hook(code: int, data: bytes) -> Tag:
    # Each body is checked the way backbone's codec reads it, and written back
    # in the form the codec writes, so the archive never holds what a consumer
    # could not read.
    if code == EXT_DATETIME:
        return Tag({"$datetime": dt.datetime.fromisoformat(data.decode()).isoformat()})
    if code == EXT_DATE:
        return Tag({"$date": dt.date.fromisoformat(data.decode()).isoformat()})
    if code == EXT_TIME:
        return Tag({"$time": dt.time.fromisoformat(data.decode()).isoformat()})
    if code == EXT_UUID:
        return Tag({"$uuid": str(uuid.UUID(bytes=data))})
    if code == EXT_DECIMAL:
        return Tag({"$decimal": str(decimal.Decimal(data.decode()))})
    if code == EXT_TIMEDELTA:
        return Tag({"$timedelta_us": _MICROS.unpack(data)[0]})
    if code == EXT_SEALED:
        return Tag({"$sealed": b64(data)})
    if code == EXT_ERASED:
        return Tag({"$erased": True})
    return Tag({"$ext": code, "base64": b64(data)})


def _json(value: Any) -> Any:
    """VALUE (as msgpack unpacked it, tags already made) as JSON data."""
    kind = type(value)
    if kind is str:
        return value if "\x00" not in value else Tag({"$text": b64(value.encode())})
    if kind is int or kind is bool or value is None or kind is Tag:
        return value
    if kind is float:
        text = repr(value)
        # jsonb keeps a number as numeric, which has no negative zero.
        if math.isfinite(value) and "e" not in text and text != "-0.0":
            return value
        return Tag({"$float": text})
    if kind is bytes:
        return Tag({"$bytes": b64(value)})
    if kind is list:
        return [_json(item) for item in value]
    if kind is dict:
        return json_object(value)
    raise TypeError(f"cannot archive a value of type {kind.__name__}")


def json_object(mapping: dict[Any, Any]) -> dict[str, Any]:
    """MAPPING as a JSON object (its ``$`` keys escaped), or a ``$map`` tag when
    a key is not text."""
    if all(type(key) is str and "\x00" not in key for key in mapping):
        return {
            ("$" + key if key[:1] == "$" else key): _json(item)
            for key, item in mapping.items()
        }
    return Tag({"$map": [[_json(key), _json(item)] for key, item in mapping.items()]})


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
    return json_object(decoded)


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
