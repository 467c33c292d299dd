"""Snapshots: an aggregate's state at a version, so loading skips its first events.

One hash per aggregate, ``<stream>:snap:<id>``, in the stream's hash tag:

=====  ==============================================================
field  value
=====  ==============================================================
v      the aggregate's version the state is at (decimal)
s      the state's schema version (``Aggregate.snapshot_schema``)
d      msgpack (backbone's types) of pydantic's ``dump_python`` of the state;
       sealed (msgpack extension 9) when the state was built from personal
       values
=====  ==============================================================

A snapshot is a cache: one of another schema, or one that cannot be read, is
ignored (the aggregate is loaded from all its events) and logged, never
misread. ``snapshot.lua`` stores one unless a later one is there.

A state built from opened personal values would hold them in plaintext, out of
reach of an erasure. Such a state is sealed with a key derived from the keys
of *all* those subjects (:func:`backbone.sealing.seal_state`; their key ids are
in ``d``): once any of them is erased the snapshot cannot be opened, and the
aggregate is loaded from its events, where it sees ``ERASED``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pydantic
import redis.exceptions as rex

from ..codec import pack_value, unpack_value
from ..events import as_text
from ..keyring import Keyring
from ..sealing import open_state, seal_state, state_key_ids

if TYPE_CHECKING:
    from ..connection import Backbone

__all__ = ["load_snapshot", "store_snapshot"]

log = logging.getLogger("backbone.store")


async def load_snapshot(
    backbone: Backbone, key: str, adapter: pydantic.TypeAdapter[Any], schema: int
) -> tuple[Any, int, frozenset[bytes]] | None:
    """(state, version, key ids of the subjects it was sealed for) of the
    snapshot at KEY, or None when there is none or it cannot be used (another
    schema, unreadable, a subject erased): then the caller replays all."""
    try:
        stored: dict[Any, Any] = await backbone.redis.hgetall(key)
    except rex.ResponseError as exc:
        log.warning("snapshot %s is unreadable (%s); loading all events", key, exc)
        return None
    if not stored:
        return None
    found = as_text(stored.get(b"s"))
    if found != str(schema):
        log.info(
            "snapshot %s has schema %r, not %d; loading all events", key, found, schema
        )
        return None
    try:
        version = int(stored[b"v"])
        if version < 1:
            raise ValueError(f"version {version}")
        raw: bytes = stored[b"d"]
        needed = state_key_ids(raw)
        if needed is not None:
            keys = await Keyring.of(backbone).fetch({kid for kid, _ in needed})
            opened = open_state(raw, keys)
            if opened is None:
                log.info(
                    "snapshot %s holds personal data of an erased subject; "
                    "loading all events",
                    key,
                )
                return None
            raw = opened
        data: Any = unpack_value(raw)
        state = adapter.validate_python(data)
    except Exception as exc:
        log.warning(
            "snapshot %s is unreadable (%s: %s); loading all events",
            key,
            type(exc).__name__,
            exc,
        )
        return None
    return state, version, frozenset(kid for kid, _ in needed or ())


async def store_snapshot(
    backbone: Backbone,
    key: str,
    adapter: pydantic.TypeAdapter[Any],
    state: object,
    version: int,
    schema: int,
    key_ids: frozenset[bytes] = frozenset(),
) -> None:
    """Store STATE as the snapshot at VERSION, unless a later one is there;
    sealed with the keys of KEY_IDS when the state was built from personal
    values of those subjects (none stored when one of them is erased). A
    failure is logged, not raised: the events are saved, the snapshot is a cache."""
    try:
        data = pack_value(adapter.dump_python(state, mode="python"))
        if key_ids:
            keys = await Keyring.of(backbone).fetch(key_ids)
            present = {kid: k for kid, k in keys.items() if k is not None}
            if len(present) < len(key_ids):
                log.info(
                    "not storing snapshot %s at version %d: it holds personal data "
                    "of an erased subject",
                    key,
                    version,
                )
                return
            data = seal_state(data, present)
        await backbone.scripts.snapshot.store(
            backbone.redis, key=key, version=version, schema=schema, data=data
        )
    except Exception as exc:
        log.warning(
            "could not store snapshot %s at version %d (%s: %s); loading will "
            "read more events until the next one",
            key,
            version,
            type(exc).__name__,
            exc,
        )
