"""Snapshots: an aggregate's state at a version, so loading skips its first events.

One hash per aggregate, ``<stream>:snap:<id>``, in the stream's hash tag:

=====  ==============================================================
field  value
=====  ==============================================================
v      the aggregate's version the state is at (decimal)
s      the state's schema version (``Aggregate.snapshot_schema``)
d      msgpack (backbone's types) of pydantic's ``dump_python`` of the state
=====  ==============================================================

A snapshot is a cache: one of another schema, or one that cannot be read, is
ignored (the aggregate is loaded from all its events) and logged, never
misread. ``snapshot.lua`` stores one unless a later one is there.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pydantic
import redis.exceptions as rex

from ..codec import pack_value, unpack_value
from ..events import as_text

if TYPE_CHECKING:
    from ..connection import Backbone

__all__ = ["load_snapshot", "store_snapshot"]

log = logging.getLogger("backbone.store")


async def load_snapshot(
    backbone: Backbone, key: str, adapter: pydantic.TypeAdapter[Any], schema: int
) -> tuple[Any, int] | None:
    """(state, version) of the snapshot at KEY, or None when there is none or it
    cannot be used (another schema, unreadable): then the caller replays all."""
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
        data: Any = unpack_value(stored[b"d"])
        state = adapter.validate_python(data)
    except Exception as exc:
        log.warning(
            "snapshot %s is unreadable (%s: %s); loading all events",
            key,
            type(exc).__name__,
            exc,
        )
        return None
    return state, version


async def store_snapshot(
    backbone: Backbone,
    key: str,
    adapter: pydantic.TypeAdapter[Any],
    state: object,
    version: int,
    schema: int,
) -> None:
    """Store STATE as the snapshot at VERSION, unless a later one is there. A
    failure is logged, not raised: the events are saved, the snapshot is a cache."""
    try:
        data = pack_value(adapter.dump_python(state, mode="python"))
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
