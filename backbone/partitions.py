"""Partitioned streams: one contract stream split into N streams.

On a Redis Cluster one stream lives in one slot, so one node; a contract whose
traffic outgrows a node is split into N partitions, ``<uri>#0`` to
``<uri>#<N-1>``, each a complete stream with its own hash tag, so partitions
spread over the slots and the nodes (docs/scaling.md)::

    @contract(name="Orders", partitions=8)
    class Orders(Protocol):
        async def placed(self, order_id: Annotated[str, PartitionKey()], ...) -> None:
            ...

The producer puts each event in the partition of its **partition key**: the
parameter marked :class:`PartitionKey`, or the key given explicitly with
``producer.keyed(key)``. The partition of a key is ``crc32(text of the key) mod
N``, stable across processes, machines and Python versions, so every event of
one key lands in one partition, in the order it was written. Events without a
key are spread round-robin. Aggregates live in the partition of their id.

N is recorded in Redis (``bb:{env:uri}:partitions``) by the first producer,
repository or subscription that uses the stream with N > 1; every later one,
N = 1 included, compares its own N with the record and refuses to start on a
difference, rather than silently sending a key to another partition (which
would reorder its events). A stream that already holds unpartitioned events
cannot be declared partitioned. Changing N means a new stream (or a migration
that re-partitions in order).
"""

from __future__ import annotations

import uuid
import weakref
import zlib
from typing import TYPE_CHECKING, Any, Final

import redis.exceptions as rex

from .errors import ConfigurationError
from .keys import MAX_PARTITIONS

if TYPE_CHECKING:
    from .connection import Backbone
    from .keys import StreamKeys

__all__ = ["PartitionKey", "agree", "check_count", "key_text", "partition_for"]

KEY_TYPES: Final = (str, int, uuid.UUID)


class PartitionKey:
    """Marks the parameter whose value is an event's partition key:
    ``order_id: Annotated[str, PartitionKey()]``. Its type must be ``str``, ``int``
    or ``UUID`` (one value, one spelling, so one partition)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "PartitionKey()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PartitionKey)

    def __hash__(self) -> int:
        return hash(PartitionKey)


def check_count(partitions: int, what: str = "partitions") -> int:
    """PARTITIONS when it is a valid partition count; else a ConfigurationError."""
    if (
        not isinstance(partitions, int)
        or isinstance(partitions, bool)
        or not 1 <= partitions <= MAX_PARTITIONS
    ):
        raise ConfigurationError(
            f"{what} must be a whole number from 1 to {MAX_PARTITIONS}, not "
            f"{partitions!r}"
        )
    return partitions


def key_text(key: Any) -> bytes:
    """The bytes a partition key is hashed by: the text of a str, an int in
    decimal, a UUID in its canonical lowercase form."""
    if isinstance(key, bool) or not isinstance(key, KEY_TYPES):
        raise ConfigurationError(
            f"partition key {key!r} is a {type(key).__name__}; use a str, int or "
            "UUID (one value, one spelling)"
        )
    return str(key).encode()


def partition_for(key: Any, partitions: int) -> int:
    """The partition of KEY among PARTITIONS: ``crc32(key_text(key)) % partitions``."""
    return zlib.crc32(key_text(key)) % partitions


# What each connection has agreed with Redis: base stream key -> count.
_agreed: weakref.WeakKeyDictionary[Backbone, dict[str, int]] = (
    weakref.WeakKeyDictionary()
)


async def agree(backbone: Backbone, keys: StreamKeys, declared: int) -> int:
    """Record DECLARED as the partition count of stream KEYS, or check that it is
    the one recorded; once per connection and stream. Raises ConfigurationError
    naming both counts when they differ."""
    check_count(declared)
    base = keys.base
    known = _agreed.setdefault(backbone, {})
    if known.get(base.stream) == declared:
        return declared
    try:
        reply = await backbone.scripts.partitions.run(
            backbone.redis, (base.partitions, base.stream), (declared,)
        )
    except rex.ResponseError as exc:
        if "WRONGTYPE" not in str(exc):
            raise
        raise ConfigurationError(
            f"{base.partitions} (the partition count of stream {base.uri!r}) or "
            f"{base.stream} holds another type of value than backbone writes there "
            f"({exc}); look at them with redis-cli TYPE and restore or remove them"
        ) from None
    recorded = int(reply)
    if recorded == -1:
        raise ConfigurationError(
            f"the partition count of stream {base.uri!r} in {base.partitions} is "
            "not a whole number; it is written by backbone only: restore it (the "
            "count the stream was created with) or delete it if the stream holds "
            "no partitioned events"
        )
    if recorded < 0:
        raise ConfigurationError(
            f"stream {base.uri!r} holds {-recorded - 2} event(s) written without "
            f"partitions; it cannot become {declared} partitions in place (events "
            "of one key would change order): use a new stream URI, or keep "
            "partitions=1"
        )
    if recorded != declared:
        raise ConfigurationError(
            f"stream {base.uri!r} has {recorded} partition(s), recorded in Redis "
            f"({base.partitions}), but this code declares {declared}: declare "
            f"partitions={recorded} (changing the count would send keys to other "
            "partitions and reorder their events; use a new stream URI instead)"
        )
    known[base.stream] = declared
    return declared


async def recorded_count(backbone: Backbone, keys: StreamKeys) -> int | None:
    """The partition count recorded for the stream of KEYS (None: none recorded,
    the stream is not partitioned)."""
    raw = await backbone.redis.get(keys.base.partitions)
    if raw is None:
        return None
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    if not text.isdigit() or not 1 <= int(text) <= MAX_PARTITIONS:
        raise ConfigurationError(
            f"the partition count of stream {keys.uri!r} in {keys.base.partitions} "
            f"is {text!r}, not a whole number; it is written by backbone only: "
            "restore it (the count the stream was created with)"
        )
    return int(text)


async def check_named(backbone: Backbone, keys: StreamKeys) -> int | None:
    """For a URI that names one stream as a whole (``orders``) or one partition
    (``orders#3``), check that it is one that exists in this layout: a
    ConfigurationError for the whole of a partitioned stream (name a partition)
    and for a partition beyond the count, or of a stream not partitioned. The
    recorded count, or None."""
    count = await recorded_count(backbone, keys)
    if keys.partition is None:
        if count is not None and count > 1:
            raise ConfigurationError(
                f"stream {keys.uri!r} is split into {count} partitions; name one: "
                f"{keys.uri}#0 to {keys.uri}#{count - 1}"
            )
        return count
    if count is None:
        raise ConfigurationError(
            f"stream {keys.uri!r} is not partitioned (no partition count is "
            f"recorded in {keys.partitions}), so {keys.name!r} names nothing; use "
            f"{keys.uri!r}"
        )
    if keys.partition >= count:
        raise ConfigurationError(
            f"stream {keys.uri!r} has {count} partition(s), {keys.uri}#0 to "
            f"{keys.uri}#{count - 1}; {keys.name!r} does not exist"
        )
    return count
