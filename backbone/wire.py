"""The msgpack of payload values: backbone's extension types.

Every payload value is msgpack. The Python types msgpack has no word for travel
as msgpack extension types, so that they come back as the same type:

====  ==========  =========================================
code  type        body
====  ==========  =========================================
1     datetime    ``isoformat()`` text (naive stays naive)
2     date        ``isoformat()`` text
3     time        ``isoformat()`` text
4     UUID        16 raw bytes
5     Decimal     ``str()`` text
6     timedelta   signed 8-byte big-endian microseconds
7     (sealed)    a personal value, sealed (:mod:`backbone.sealing`)
8     (erased)    empty: a personal value whose subject was erased (also
                  :data:`~backbone.ERASED` kept in a snapshot's state)
====  ==========  =========================================

Enums travel as their value, sets as sorted arrays, tuples as arrays, pydantic
models as maps. :func:`pack_value` and :func:`unpack_value` read and write any
value; the codec (:mod:`backbone.codec`) adds validation per parameter.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import functools
import struct
import uuid
from collections.abc import Callable
from typing import Any, Final

import msgpack
import pydantic

from .personal import ERASED, SEALED
from .sealing import EXT_ERASED, EXT_SEALED

__all__ = [
    "DIRECT",
    "EXT_DATE",
    "EXT_DATETIME",
    "EXT_DECIMAL",
    "EXT_ERASED",
    "EXT_SEALED",
    "EXT_TIME",
    "EXT_TIMEDELTA",
    "EXT_UUID",
    "PLAIN_TYPES",
    "default",
    "pack_value",
    "reader_for",
    "unpack",
    "unpack_value",
]

EXT_DATETIME: Final = 1
EXT_DATE: Final = 2
EXT_TIME: Final = 3
EXT_UUID: Final = 4
EXT_DECIMAL: Final = 5
EXT_TIMEDELTA: Final = 6

_MICROS: Final = struct.Struct(">q")


def default(obj: object) -> object:
    """msgpack's hook for the types it lacks (see the table above)."""
    # Order matters: datetime is a subclass of date.
    if isinstance(obj, dt.datetime):
        return msgpack.ExtType(EXT_DATETIME, obj.isoformat().encode())
    if isinstance(obj, dt.date):
        return msgpack.ExtType(EXT_DATE, obj.isoformat().encode())
    if isinstance(obj, dt.time):
        return msgpack.ExtType(EXT_TIME, obj.isoformat().encode())
    if isinstance(obj, uuid.UUID):
        return msgpack.ExtType(EXT_UUID, obj.bytes)
    if isinstance(obj, decimal.Decimal):
        return msgpack.ExtType(EXT_DECIMAL, str(obj).encode())
    if isinstance(obj, dt.timedelta):
        micros = (obj.days * 86_400 + obj.seconds) * 1_000_000 + obj.microseconds
        return msgpack.ExtType(EXT_TIMEDELTA, _MICROS.pack(micros))
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (set, frozenset)):
        try:
            return sorted(obj)
        except TypeError:
            return list(obj)
    if isinstance(obj, pydantic.BaseModel):
        return obj.model_dump(mode="python")
    if obj is ERASED:
        # A state folded from erased values keeps the marker (snapshots).
        return msgpack.ExtType(EXT_ERASED, b"")
    raise TypeError(f"cannot encode a value of type {type(obj).__qualname__}")


def ext_hook(code: int, data: bytes) -> object:
    """msgpack's hook reading backbone's extension types back."""
    if code == EXT_DATETIME:
        return dt.datetime.fromisoformat(data.decode())
    if code == EXT_DATE:
        return dt.date.fromisoformat(data.decode())
    if code == EXT_TIME:
        return dt.time.fromisoformat(data.decode())
    if code == EXT_UUID:
        return uuid.UUID(bytes=data)
    if code == EXT_DECIMAL:
        return decimal.Decimal(data.decode())
    if code == EXT_TIMEDELTA:
        return dt.timedelta(microseconds=_MICROS.unpack(data)[0])
    if code == EXT_ERASED:
        return ERASED
    if code == EXT_SEALED:
        return SEALED  # not opened: shown as <personal>, never valid
    return msgpack.ExtType(code, data)


def _ext(code: int, data: bytes) -> bytes:
    """The msgpack encoding of extension CODE with body DATA."""
    size = len(data)
    fixed = _FIXEXT.get(size)
    if fixed is not None:
        return bytes((fixed, code)) + data
    if size < 0x100:
        return bytes((0xC7, size, code)) + data
    if size < 0x10000:
        return b"\xc8" + size.to_bytes(2, "big") + bytes((code,)) + data
    return b"\xc9" + size.to_bytes(4, "big") + bytes((code,)) + data


_FIXEXT: Final = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}


# Headers of EXT_DATETIME bodies of each short size, as _ext writes them.
_DATETIME_HEADERS: Final = tuple(
    _ext(EXT_DATETIME, b"\0" * n)[: -n or None] for n in range(256)
)


def _pack_datetime(value: dt.datetime) -> bytes:
    text = value.isoformat().encode()
    if len(text) < 256:
        return _DATETIME_HEADERS[len(text)] + text
    return _ext(EXT_DATETIME, text)


def _pack_uuid(value: uuid.UUID) -> bytes:
    return _ext(EXT_UUID, value.bytes)


# Exact-type values with a direct encoding (no msgpack default hook), for the
# codec's fast path.
DIRECT: Final[dict[type, Callable[[Any], bytes]]] = {
    dt.datetime: _pack_datetime,
    uuid.UUID: _pack_uuid,
}


def pack_value(value: object) -> bytes:
    """msgpack VALUE with backbone's extension types (no validation)."""
    packed: bytes = msgpack.packb(value, default=default, use_bin_type=True)
    return packed


def unpack_value(data: bytes) -> Any:
    """Read one msgpack value written by :func:`pack_value`."""
    return msgpack.unpackb(data, raw=False, ext_hook=ext_hook, strict_map_key=False)


unpack: Final = functools.partial(
    msgpack.unpackb, raw=False, ext_hook=ext_hook, strict_map_key=False
)

# --- fast reads of one exact type --------------------------------------------------
#
# Passing unpack's keywords costs more than reading a scalar. A value whose
# parameter is exactly str, int, float, bool or bytes is first read by msgpack
# without them: a result of exactly that type can only have come from that
# type's own encoding (extension types, backbone's personal values among them,
# come back as ExtType there), so it is what unpack gives. Anything else is read
# again by unpack. A datetime's extension body is read directly.

_unpackb: Final = msgpack.unpackb
_fromisoformat: Final = dt.datetime.fromisoformat


def _plain_reader(exact: type) -> Callable[[bytes], Any]:
    def read(raw: bytes) -> Any:
        try:
            value = _unpackb(raw)
        except Exception:
            return unpack(raw)  # raises the error unpack finds, if any
        if type(value) is exact:
            return value
        return unpack(raw)

    return read


def _read_datetime(raw: bytes) -> Any:
    # ext 8 (0xc7), size, EXT_DATETIME, isoformat text: what _pack_datetime
    # writes for the lengths isoformat gives (never a fixext size).
    if (
        len(raw) > 3
        and raw[0] == 0xC7
        and raw[2] == EXT_DATETIME
        and raw[1] == len(raw) - 3
    ):
        try:
            return _fromisoformat(raw[3:].decode())
        except ValueError:
            pass  # unpack says what is wrong with it
    return unpack(raw)


PLAIN_TYPES: Final = (str, int, float, bool, bytes)
"""Exact parameter types msgpack gives back as they were (see _plain_reader)."""


def reader_for(exact: type | None) -> Callable[[bytes], Any]:
    """How to read one value of a parameter whose annotation is exactly EXACT
    (None: any other): :func:`unpack`, or a faster read that gives the same."""
    if exact is dt.datetime:
        return _read_datetime
    if exact in PLAIN_TYPES:
        return _plain_reader(exact)
    return unpack
