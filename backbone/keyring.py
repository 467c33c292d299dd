"""The keyring of personal data's subjects, and the sealing and opening of whole
batches with it: one round trip per batch, never one per event.

One Redis hash per environment, ``bb:{<env>}:subjects``: key id (hex) -> a
random 32-byte AES-256 key, created on first use by ``lua/keyring.lua`` (every
producer offers a fresh key; the first one written wins, so concurrent producers
agree). Erasing a subject deletes its field (:func:`backbone.erase`). Keys are
never cached across batches: an erasure takes effect at the next read.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Collection, MutableMapping, MutableSequence, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

from .errors import ConfigurationError, PublishError
from .keys import EnvironmentKeys
from .retrying import until_answered
from .script import Script
from .sealing import (
    ERASED_VALUE,
    KEY_SIZE,
    SealError,
    Unsealed,
    collect_key_ids,
    key_id,
    key_tag,
    new_key,
    open_values,
    seal,
    sealed_header,
)

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from .connection import Backbone
    from .writer import Item

__all__ = ["Keyring", "Payload", "open_for_display", "open_payloads", "seal_items"]

log = logging.getLogger("backbone.personal")

_SCRIPT = Script("keyring")

Payload: TypeAlias = (
    MutableSequence[bytes | None] | MutableMapping[bytes, bytes] | Exception | None
)
"""A payload as read: its values in parameter order, the whole hash, the error
that reading it raised, or None (not read)."""


class Keyring:
    """The subjects' keys of ENVIRONMENT, on the Redis of client REDIS."""

    def __init__(self, redis: aioredis.Redis, environment: str) -> None:
        self.redis = redis
        self.keys = EnvironmentKeys(environment)

    @classmethod
    def of(cls, backbone: Backbone) -> Keyring:
        """The keyring of BACKBONE's environment."""
        return cls(backbone.redis, backbone.environment)

    def __repr__(self) -> str:
        return f"<Keyring {self.keys.subjects}>"

    async def fetch(self, ids: Collection[bytes]) -> dict[bytes, bytes | None]:
        """The key of each key id of IDS (None: erased, or never created), in
        one ``HMGET``."""
        if not ids:
            return {}
        order = list(ids)
        found: list[Any] = await self.redis.hmget(
            self.keys.subjects, [kid.hex() for kid in order]
        )
        keys: dict[bytes, bytes | None] = {}
        for kid, key in zip(order, found, strict=True):
            if key is not None and (not isinstance(key, bytes) or len(key) != KEY_SIZE):
                log.warning(
                    "the keyring %s holds %r for key id %s, not a %d-byte key; its "
                    "subject's values read as erased",
                    self.keys.subjects,
                    type(key).__name__,
                    kid.hex(),
                    KEY_SIZE,
                )
                key = None
            keys[kid] = key
        return keys

    async def get_or_create(self, ids: Collection[bytes]) -> dict[bytes, bytes]:
        """The key of each key id of IDS, created when missing (one script
        call)."""
        if not ids:
            return {}
        order = list(ids)
        reply: list[Any] = await _SCRIPT.run(
            self.redis,
            (self.keys.subjects, self.keys.erased),
            ("get", *(kid.hex() for kid in order), *(new_key() for _ in order)),
        )
        keys: dict[bytes, bytes] = {}
        for kid, key in zip(order, reply, strict=True):
            if not isinstance(key, bytes) or len(key) != KEY_SIZE:
                raise PublishError(
                    f"the keyring {self.keys.subjects} holds {len(key or b'')} bytes "
                    f"for key id {kid.hex()}, not a {KEY_SIZE}-byte key; something "
                    "other than backbone wrote it"
                )
            keys[kid] = key
        return keys

    async def erase(self, kid: bytes, now_ms: int) -> tuple[bool, int | None]:
        """Delete the key of KID: (True, NOW_MS) when there was one, else (False,
        the time of an earlier erasure or None)."""
        deleted, at = await _SCRIPT.run(
            self.redis,
            (self.keys.subjects, self.keys.erased),
            ("erase", kid.hex(), now_ms),
        )
        return bool(deleted), _millis(self.keys.erased, kid, at)


def _millis(where: str, kid: bytes, raw: object) -> int | None:
    """The Unix milliseconds of an erasure as recorded in WHERE; None when there
    is no record, or it is not a time (something other than backbone wrote it:
    logged, never raised; the key is gone all the same)."""
    if not isinstance(raw, (bytes, str, int)) or not raw:
        return None
    try:
        at = int(raw)
        dt.datetime.fromtimestamp(at / 1000, dt.UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        log.warning(
            "%s holds %r for key id %s, not a time in Unix milliseconds; ignoring it",
            where,
            raw,
            kid.hex(),
        )
        return None
    return at


# --- sealing what producers write --------------------------------------------------


async def seal_items(
    keyring: Keyring,
    items: Sequence[Item],
    *,
    aggregate_id: str | None,
    timeout: float,
) -> None:
    """Seal, in place, the personal values of ITEMS (the codec's
    :class:`~backbone.sealing.Unsealed` values) with their subjects' keys,
    fetched or created in one round trip (retried like a publish until
    TIMEOUT). A value whose subject is the aggregate id takes AGGREGATE_ID."""
    places: list[tuple[list[bytes], int, bytes]] = []
    for item in items:
        if not item.operation.personal:
            continue
        values = item.values
        for index, value in enumerate(values):
            if type(value) is not Unsealed:
                continue
            subject = value.subject if value.subject is not None else aggregate_id
            if subject is None:
                raise ConfigurationError(aggregate_only(item.operation.operation.name))
            places.append((values, index, key_id(subject)))
    if not places:
        return
    ids = {kid for _, _, kid in places}
    keys = await until_answered(
        lambda _remaining: keyring.get_or_create(ids),
        timeout=timeout,
        what=lambda: (
            f"get the keys of {len(ids)} subject(s) from {keyring.keys.subjects}"
        ),
        where=keyring,
        refused=lambda exc: PublishError(
            f"Redis refused the keyring {keyring.keys.subjects}: {exc}"
        ),
        log_extra={"events": len(items)},
    )
    for values, index, kid in places:
        values[index] = seal(values[index], kid, keys[kid])


def aggregate_only(operation: str) -> str:
    return (
        f"operation {operation} has a parameter marked Personal without a subject "
        "parameter, so its subject is the aggregate id: record it on an aggregate "
        "and save it through a Repository, or name the subject's parameter, e.g. "
        "Annotated[str, Personal('customer_id')]"
    )


# --- opening what readers read -----------------------------------------------------


async def open_payloads(
    keyring: Keyring, payloads: Sequence[Payload]
) -> list[SealError | frozenset[bytes]]:
    """Open, in place, the sealed values of each of PAYLOADS (a batch read
    together) with one ``HMGET`` of the keyring: a value whose key is there
    becomes its plaintext encoding, one whose key is gone the erased marker.

    Per payload: the key ids of the values opened (a snapshot of what was built
    from them needs them all), or the :class:`SealError` of a damaged value
    (the event is undecodable; its other values stay sealed)."""
    wanted: set[bytes] = set()
    for payload in payloads:
        if isinstance(payload, MutableMapping):
            collect_key_ids(payload.values(), wanted)
        elif isinstance(payload, MutableSequence):
            collect_key_ids(payload, wanted)
    outcome: list[SealError | frozenset[bytes]] = [frozenset()] * len(payloads)
    if not wanted:
        return outcome
    keys = await keyring.fetch(wanted)
    for n, payload in enumerate(payloads):
        if not isinstance(payload, (MutableMapping, MutableSequence)):
            continue
        opened: set[bytes] = set()
        try:
            open_values(payload, keys, opened)
        except SealError as exc:
            outcome[n] = exc
            continue
        if opened:
            outcome[n] = frozenset(opened)
    return outcome


async def open_for_display(
    keyring: Keyring, payloads: Sequence[MutableMapping[bytes, bytes]]
) -> None:
    """For tools that show payloads: replace, in place, each sealed value whose
    key is gone with the erased marker (it then reads as ``<erased>``); the
    others stay sealed and read as ``<personal>``, never as plaintext."""
    wanted: set[bytes] = set()
    for payload in payloads:
        collect_key_ids(payload.values(), wanted)
    if not wanted:
        return
    keys = await keyring.fetch(wanted)
    for payload in payloads:
        for name, raw in list(payload.items()):
            header = sealed_header(raw)
            if header is None:
                continue
            kid, tag = header
            key = keys.get(kid)
            if key is None or key_tag(key) != tag:
                payload[name] = ERASED_VALUE
