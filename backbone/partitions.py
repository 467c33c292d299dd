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

_AGREE: Final = """
-- KEYS[1] the partition count record, KEYS[2] the whole stream (unpartitioned)
-- ARGV[1] the count the caller declares
local recorded = redis.call('GET', KEYS[1])
if recorded then return tonumber(recorded) end
local wanted = tonumber(ARGV[1])
if wanted == 1 then return 1 end  -- an unpartitioned stream needs no record
if redis.call('EXISTS', KEYS[2]) == 1 then
  return -redis.call('XLEN', KEYS[2]) - 1
end
redis.call('SET', KEYS[1], wanted)
return wanted
"""


async def agree(backbone: Backbone, keys: StreamKeys, declared: int) -> int:
    """Record DECLARED as the partition count of stream KEYS, or check that it is
    the one recorded; once per connection and stream. Raises ConfigurationError
    naming both counts when they differ."""
    check_count(declared)
    base = keys.base
    known = _agreed.setdefault(backbone, {})
    if known.get(base.stream) == declared:
        return declared
    recorded = int(
        await backbone.redis.eval(_AGREE, 2, base.partitions, base.stream, declared)
    )
    if recorded < 0:
        raise ConfigurationError(
            f"stream {base.uri!r} holds {-recorded - 1} event(s) written without "
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
