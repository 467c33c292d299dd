"""Sealing personal values: AES-256-GCM under a per-subject key (crypto-shredding).

Pure bytes in, bytes out; the keys come from the keyring
(:mod:`backbone.keyring`). A personal parameter's value is stored as msgpack
extension type 7 whose body is::

    format (1 byte, 1) | key id (16) | key tag (4) | nonce (12) | AES-GCM(value)

where *value* is the parameter's normal msgpack encoding, the key id is the
first 16 bytes of SHA-256 of a fixed prefix and the subject (so the subject
itself is never stored), the key tag the first 4 bytes of SHA-256 of a prefix
and the key (it tells a value sealed under an older key of the subject, erased
since, from a damaged one), and the associated data is the header (format, key
id, key tag), not the field name, which upcasters may change.

Opening replaces a sealed value by its plaintext encoding when the subject's key
is there, by extension type 8 (empty body, read as :data:`~backbone.ERASED`)
when it is not, so the codec decodes the result like any payload. A value whose
body is damaged raises :class:`SealError`.

A snapshot's state, built from opened values of several subjects, is sealed as
extension type 9 under a key derived (HKDF-SHA256) from *all* their keys, so
erasing any one of them makes it unreadable::

    format (1) | count (2) | count x (key id (16) | key tag (4)) | salt (16)
        | nonce (12) | AES-GCM(state)
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterable, Mapping, MutableMapping, MutableSequence
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "ERASED_VALUE",
    "EXT_ERASED",
    "EXT_SEALED",
    "EXT_SEALED_STATE",
    "SealError",
    "Unsealed",
    "collect_key_ids",
    "key_id",
    "key_tag",
    "new_key",
    "open_state",
    "open_value",
    "open_values",
    "seal",
    "seal_state",
    "sealed_header",
    "sealed_key_id",
    "state_key_ids",
]

EXT_SEALED: Final = 7
EXT_ERASED: Final = 8
EXT_SEALED_STATE: Final = 9
ERASED_VALUE: Final = b"\xc7\x00\x08"
"""The msgpack encoding of extension type 8 with an empty body."""

FORMAT: Final = 1
KEY_SIZE: Final = 32
KEY_ID_SIZE: Final = 16
TAG_SIZE: Final = 4
NONCE_SIZE: Final = 12
_GCM_TAG: Final = 16
_HEADER: Final = 1 + KEY_ID_SIZE + TAG_SIZE
_SMALLEST: Final = _HEADER + NONCE_SIZE + _GCM_TAG
_SUBJECT_PREFIX: Final = b"backbone/subject/v1\x00"
_TAG_PREFIX: Final = b"backbone/key-tag/v1\x00"
_STATE_INFO: Final = b"backbone/snapshot/v1"
_COUNT: Final = struct.Struct(">H")
# The first byte of a msgpack ext8/16/32 and where its type code sits. Sealed
# bodies are never 1, 2, 4, 8 or 16 bytes long, so never a fixext.
_EXT_HEADS: Final = {0xC7: 2, 0xC8: 3, 0xC9: 5}


class SealError(ValueError):
    """A sealed value (or state) is damaged: it cannot be opened with its key.
    ``field`` is where it was met: a payload's field name, or a position."""

    field: bytes | int | None = None


class Unsealed(bytes):
    """A personal parameter's plaintext encoding waiting to be sealed with its
    subject's key (the codec makes these; producers seal them before writing).
    ``subject`` is None when the subject is the aggregate id."""

    subject: str | None

    def __new__(cls, data: bytes, subject: str | None) -> Unsealed:
        value = super().__new__(cls, data)
        value.subject = subject
        return value


def key_id(subject: str) -> bytes:
    """The 16-byte key id of SUBJECT (the keyring stores it, hex, never the
    subject)."""
    return hashlib.sha256(_SUBJECT_PREFIX + subject.encode()).digest()[:KEY_ID_SIZE]


def key_tag(key: bytes) -> bytes:
    """4 bytes naming one key of a subject (a subject erased and seen again gets
    a new key: values sealed under the old one read as erased)."""
    return hashlib.sha256(_TAG_PREFIX + key).digest()[:TAG_SIZE]


def new_key() -> bytes:
    return os.urandom(KEY_SIZE)


def _ext(code: int, body: bytes) -> bytes:
    size = len(body)
    if size < 0x100:
        return bytes((0xC7, size, code)) + body
    if size < 0x10000:
        return b"\xc8" + size.to_bytes(2, "big") + bytes((code,)) + body
    return b"\xc9" + size.to_bytes(4, "big") + bytes((code,)) + body


def _body(raw: bytes, code: int) -> bytes | None:
    """The body of RAW when it is one whole msgpack extension value of CODE."""
    at = _EXT_HEADS.get(raw[0]) if raw else None
    if at is None or len(raw) <= at or raw[at] != code:
        return None
    size = int.from_bytes(raw[1:at], "big")
    if len(raw) != at + 1 + size:
        return None
    return raw[at + 1 :]


def seal(plain: bytes, kid: bytes, key: bytes) -> bytes:
    """PLAIN (a value's msgpack encoding) sealed under subject key KEY (id KID)."""
    header = bytes((FORMAT,)) + kid + key_tag(key)
    nonce = os.urandom(NONCE_SIZE)
    return _ext(EXT_SEALED, header + nonce + AESGCM(key).encrypt(nonce, plain, header))


def sealed_key_id(raw: bytes | None) -> bytes | None:
    """The key id of a sealed value, or None when RAW is not one. A sealed value
    too short to hold a key id answers its first bytes (opening names it
    damaged)."""
    if not raw:
        return None
    body = _body(raw, EXT_SEALED)
    if body is None:
        return None
    return bytes(body[1 : 1 + KEY_ID_SIZE])


def sealed_header(raw: bytes | None) -> tuple[bytes, bytes] | None:
    """(key id, key tag) of a sealed value, or None when RAW is not one (or is
    too short to hold them)."""
    body = _body(raw, EXT_SEALED) if raw else None
    if body is None or len(body) < _HEADER:
        return None
    return bytes(body[1 : 1 + KEY_ID_SIZE]), bytes(body[1 + KEY_ID_SIZE : _HEADER])


def collect_key_ids(values: Iterable[bytes | None], into: set[bytes]) -> None:
    """Add the key id of every sealed value among VALUES to INTO."""
    for raw in values:
        if raw and raw[0] in _EXT_HEADS:
            kid = sealed_key_id(raw)
            if kid is not None:
                into.add(kid)


def open_value(raw: bytes, keys: Mapping[bytes, bytes | None]) -> tuple[bytes, bool]:
    """The plaintext encoding of sealed value RAW and True, or
    :data:`ERASED_VALUE` and False when its key is gone (or was replaced since).
    KEYS maps key ids to keys (None: erased). Raises :class:`SealError` when
    RAW is damaged."""
    body = _body(raw, EXT_SEALED)
    if body is None:
        raise SealError("not a sealed value")
    if len(body) < _SMALLEST or body[0] != FORMAT:
        raise SealError(
            f"the sealed value is damaged (format {body[:1].hex() or 'none'}, "
            f"{len(body)} bytes; at least {_SMALLEST} of format {FORMAT} expected)"
        )
    header = body[:_HEADER]
    key = keys.get(bytes(header[1 : 1 + KEY_ID_SIZE]))
    if key is None or key_tag(key) != header[1 + KEY_ID_SIZE :]:
        return ERASED_VALUE, False
    nonce = body[_HEADER : _HEADER + NONCE_SIZE]
    try:
        return AESGCM(key).decrypt(nonce, body[_HEADER + NONCE_SIZE :], header), True
    except InvalidTag:
        raise SealError(
            "the sealed value is damaged: it does not authenticate under its "
            "subject's key"
        ) from None


def open_values(
    values: MutableSequence[bytes | None] | MutableMapping[bytes, bytes],
    keys: Mapping[bytes, bytes | None],
    opened: set[bytes] | None = None,
) -> None:
    """Open every sealed value of VALUES in place (a list of raw values, or a
    payload hash). Adds the key ids of the values opened (not erased) to
    OPENED. Raises :class:`SealError` naming the field of a damaged one."""
    pairs: Iterable[tuple[int | bytes, bytes | None]]
    if isinstance(values, MutableMapping):
        pairs = list(values.items())
    else:
        pairs = list(enumerate(values))
    for where, raw in pairs:
        if not raw or raw[0] not in _EXT_HEADS:
            continue
        kid = sealed_key_id(raw)
        if kid is None:
            continue
        try:
            plain, found = open_value(raw, keys)
        except SealError as exc:
            if isinstance(where, bytes):
                exc = SealError(f"field {where.decode(errors='replace')!r}: {exc}")
            exc.field = where
            raise exc from None
        values[where] = plain  # type: ignore[index]
        if found and opened is not None:
            opened.add(kid)


# --- snapshots ---------------------------------------------------------------------


def _state_key(keys: Iterable[bytes], salt: bytes, ids: bytes) -> bytes:
    hkdf = HKDF(
        algorithm=hashes.SHA256(), length=KEY_SIZE, salt=salt, info=_STATE_INFO + ids
    )
    return hkdf.derive(b"".join(keys))


def seal_state(plain: bytes, keys: Mapping[bytes, bytes]) -> bytes:
    """PLAIN (a state's msgpack) sealed under every key of KEYS (key id ->
    key): opening it needs them all."""
    ids = sorted(keys)
    listed = b"".join(kid + key_tag(keys[kid]) for kid in ids)
    salt = os.urandom(16)
    header = bytes((FORMAT,)) + _COUNT.pack(len(ids)) + listed + salt
    key = _state_key((keys[kid] for kid in ids), salt, listed)
    nonce = os.urandom(NONCE_SIZE)
    return _ext(
        EXT_SEALED_STATE, header + nonce + AESGCM(key).encrypt(nonce, plain, header)
    )


def state_key_ids(raw: bytes) -> list[tuple[bytes, bytes]] | None:
    """(key id, key tag) of each subject a sealed state needs, or None when RAW
    is not a sealed state. Raises :class:`SealError` when it is damaged."""
    body = _body(raw, EXT_SEALED_STATE)
    if body is None:
        return None
    if len(body) < 3 or body[0] != FORMAT:
        raise SealError("the sealed state is damaged (no header)")
    (count,) = _COUNT.unpack_from(body, 1)
    end = 3 + count * (KEY_ID_SIZE + TAG_SIZE)
    if len(body) < end + 16 + NONCE_SIZE + _GCM_TAG:
        raise SealError("the sealed state is damaged (too short)")
    step = KEY_ID_SIZE + TAG_SIZE
    return [
        (bytes(body[at : at + KEY_ID_SIZE]), bytes(body[at + KEY_ID_SIZE : at + step]))
        for at in range(3, end, step)
    ]


def open_state(raw: bytes, keys: Mapping[bytes, bytes | None]) -> bytes | None:
    """The state sealed in RAW, or None when a key it needs is gone (a subject
    was erased). Raises :class:`SealError` when it is damaged."""
    needed = state_key_ids(raw)
    body = _body(raw, EXT_SEALED_STATE)
    if needed is None or body is None:
        raise SealError("not a sealed state")
    found: list[bytes] = []
    for kid, tag in needed:
        key = keys.get(kid)
        if key is None or key_tag(key) != tag:
            return None
        found.append(key)
    end = 3 + len(needed) * (KEY_ID_SIZE + TAG_SIZE)
    header = body[: end + 16]
    key = _state_key(found, body[end : end + 16], body[3:end])
    nonce = body[end + 16 : end + 16 + NONCE_SIZE]
    try:
        return AESGCM(key).decrypt(nonce, body[end + 16 + NONCE_SIZE :], header)
    except InvalidTag:
        raise SealError(
            "the sealed state is damaged: it does not authenticate"
        ) from None
