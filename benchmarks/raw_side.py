"""The strongest hand-written forms of backbone's work, for the baselines.

Every producer here writes backbone's layout: per event a stream entry with the
metadata fields backbone writes (o, v, c, p, t) and a payload hash
``<stream>:p:<entry id>`` with one msgpack field per parameter, both atomically.
Every consumer reads that layout as a consumer group, decodes each value with
msgpack (the datetime extension included), calls a trivial async handler and
acks. None of them validates, retries, dedupes retried batches, dead-letters or
records versions, which backbone does: they are what a careful engineer would
write for this one event, on :mod:`benchmarks.raw` (hiredis on asyncio streams)
or on redis-py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis
import redis.asyncio as aioredis

from .common import (
    BATCH_SIZE,
    CONTRACT,
    EntryIds,
    decode_field,
    fresh_gc,
    hand_fields,
    hand_meta,
    hand_values,
)
from .consumer import CountingHandler, drained
from .raw import RawRedis, RawScript

__all__ = [
    "FIELDS",
    "PUBLISH",
    "READ",
    "GroupCommit",
    "RawProducer",
    "asyncio_multi",
    "consume_lua",
    "consume_pipelined",
    "raw_consume",
    "sync_multi",
]

FIELDS = (b"email", b"product_id", b"time")
Args = tuple[str, int, dt.datetime]

PUBLISH = RawScript("""
-- KEYS[1] stream. ARGV[1] payload key prefix, ARGV[2] M, M metadata field/value
-- strings, then F, F payload field names, then per event its time and F values.
local prefix, m = ARGV[1], tonumber(ARGV[2])
local meta = {}
for j = 1, m do meta[j] = ARGV[2 + j] end
meta[m + 1] = 't'
local f = tonumber(ARGV[m + 3])
local hash = {}
for j = 1, f do hash[2 * j - 1] = ARGV[m + 3 + j] end
local ids, pos = {}, m + f + 4
while pos <= #ARGV do
  meta[m + 2] = ARGV[pos]
  local id = redis.call('XADD', KEYS[1], '*', unpack(meta))
  for j = 1, f do hash[2 * j] = ARGV[pos + j] end
  redis.call('HSET', prefix .. id, unpack(hash))
  ids[#ids + 1] = id
  pos = pos + f + 1
end
return ids
""")

READ = RawScript("""
-- KEYS[1] stream. ARGV[1] group, ARGV[2] consumer, ARGV[3] COUNT, ARGV[4] payload
-- key prefix, ARGV[5] F, F payload field names, then entry ids to ack first.
-- Returns id, operation, {values in field order} per entry read.
local f = tonumber(ARGV[5])
local names = {unpack(ARGV, 6, 5 + f)}
if #ARGV > 5 + f then
  redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 6 + f))
end
local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT',
  ARGV[3], 'STREAMS', KEYS[1], '>')
local out = {}
if not reply then return out end
for _, entry in ipairs(reply[1][2]) do
  local id, fields, op = entry[1], entry[2], false
  for j = 1, #fields, 2 do
    if fields[j] == 'o' then op = fields[j + 1] break end
  end
  out[#out + 1] = id
  out[#out + 1] = op
  out[#out + 1] = redis.call('HMGET', ARGV[4] .. id, unpack(names))
end
return out
""")


# --- producers ---------------------------------------------------------------------


class RawProducer:
    """The packing event written on a :class:`RawRedis` connection."""

    def __init__(self, client: RawRedis, stream: str, prefix: str, writer: str):
        self.client = client
        self.stream = stream
        self.prefix = prefix
        self.writer = writer
        self.ids = EntryIds()
        meta: list[str | bytes] = [b"o", "packing", b"v", b"1", b"c", CONTRACT]
        meta += [b"p", writer]
        self.template: list[str | bytes | int] = [
            prefix,
            len(meta),
            *meta,
            len(FIELDS),
            *FIELDS,
        ]

    async def multi(self, email: str, product_id: int, time_: dt.datetime) -> str:
        """One event, one await: MULTI, HSET, XADD (client-made id), EXEC in one
        write; one writer per stream (see EntryIds)."""
        entry = self.ids.next()
        await self.client.transaction(
            ("HSET", self.prefix + entry, *hand_fields(email, product_id, time_)),
            ("XADD", self.stream, entry, *hand_meta("packing", self.writer)),
        )
        return entry

    def encode(self, args: Args) -> list[bytes | int]:
        """One event's part of PUBLISH's arguments: its time, then its values."""
        return [time.time_ns() // 1_000_000, *hand_values(*args)]

    async def write(self, encoded: Sequence[list[bytes | int]]) -> list[bytes]:
        """Events already encoded, in one EVALSHA; their entry ids."""
        argv: list[str | bytes | int] = list(self.template)
        for event in encoded:
            argv += event
        ids: list[bytes] = await PUBLISH(self.client, (self.stream,), argv)
        return ids

    async def batch(self, events: Sequence[Args]) -> list[bytes]:
        """EVENTS in one EVALSHA of the PUBLISH script."""
        return await self.write([self.encode(args) for args in events])


class GroupCommit:
    """Concurrent callers share script calls: a call waits while one is being
    written, then everything that queued meanwhile (up to LIMIT) goes in the
    next one. Each caller gets its own entry id, or the batch's error."""

    def __init__(self, producer: RawProducer, limit: int = BATCH_SIZE) -> None:
        self.producer = producer
        self.limit = limit
        self.queue: list[tuple[list[bytes | int], asyncio.Future[bytes]]] = []
        self.flusher: asyncio.Task[None] | None = None

    async def publish(self, email: str, product_id: int, time_: dt.datetime) -> bytes:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.queue.append((self.producer.encode((email, product_id, time_)), future))
        if self.flusher is None:
            self.flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            while self.queue:
                batch = self.queue[: self.limit]
                del self.queue[: self.limit]
                try:
                    ids = await self.producer.write([event for event, _ in batch])
                except Exception as exc:  # the callers get it, not this task
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), entry in zip(batch, ids, strict=True):
                    if not future.done():
                        future.set_result(entry)
        finally:
            self.flusher = None


async def asyncio_multi(
    client: aioredis.Redis,
    stream: str,
    prefix: str,
    ids: EntryIds,
    writer: str,
    args: Args,
) -> None:
    """The idiomatic redis.asyncio form, one await per call: HSET + XADD in a
    transaction pipeline."""
    entry = ids.next()
    meta = hand_meta("packing", writer)
    async with client.pipeline(transaction=True) as pipe:
        pipe.hset(prefix + entry, items=hand_fields(*args))
        pipe.xadd(stream, dict(zip(meta[::2], meta[1::2], strict=True)), id=entry)
        await pipe.execute()


def sync_multi(
    client: redis.Redis,
    stream: str,
    prefix: str,
    ids: EntryIds,
    writer: str,
    args: Args,
) -> None:
    """The same with synchronous redis-py."""
    entry = ids.next()
    meta = hand_meta("packing", writer)
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(prefix + entry, items=hand_fields(*args))
        pipe.xadd(stream, dict(zip(meta[::2], meta[1::2], strict=True)), id=entry)
        pipe.execute()


# --- consumers ---------------------------------------------------------------------


def _operation(meta: list[bytes] | None) -> bytes | None:
    """The entry's operation (field o, which backbone writes first)."""
    if not meta:
        return None  # an entry deleted since it was delivered
    if meta[0] == b"o":
        return meta[1]
    for i in range(0, len(meta) - 1, 2):
        if meta[i] == b"o":
            return meta[i + 1]
    return None


async def _handle(handler: CountingHandler, operation: Any, values: list[Any]) -> None:
    if operation == b"packing":
        email, product_id, time_ = values
        await handler.packing(
            decode_field(email), decode_field(product_id), decode_field(time_)
        )


async def consume_pipelined(
    client: RawRedis,
    stream: str,
    prefix: str,
    group: str,
    consumer: str,
    handler: CountingHandler,
    stop: Callable[[], bool],
    count: int = BATCH_SIZE,
    block_ms: int = 100,
) -> None:
    """XREADGROUP COUNT, then one pipelined HMGET per entry (fields in parameter
    order), decode, handle; the XACK of a batch goes in the same write as the
    next XREADGROUP. Until STOP() says so, checked after every read."""
    read = (
        *("XREADGROUP", "GROUP", group, consumer, "COUNT", count),
        *("BLOCK", block_ms, "STREAMS", stream, ">"),
    )
    acks: list[bytes] = []
    while not stop():
        if acks:
            reply = (await client.execute(("XACK", stream, group, *acks), read))[1]
            acks = []
        else:
            reply = await client.call(*read)
        if not reply:
            continue
        entries: list[list[Any]] = reply[0][1]
        payloads = await client.execute(
            *(("HMGET", prefix.encode() + entry[0], *FIELDS) for entry in entries)
        )
        for (entry_id, meta), values in zip(entries, payloads, strict=True):
            await _handle(handler, _operation(meta), values)
            acks.append(entry_id)
    if acks:
        await client.call("XACK", stream, group, *acks)


async def consume_lua(
    client: RawRedis,
    stream: str,
    prefix: str,
    group: str,
    consumer: str,
    handler: CountingHandler,
    stop: Callable[[], bool],
    count: int = BATCH_SIZE,
) -> None:
    """One READ script call per batch: the previous batch's XACK, XREADGROUP and
    every payload's HMGET in one round trip and one reply. Scripts cannot block:
    an empty read waits a millisecond before the next."""
    head: list[str | bytes | int] = [group, consumer, count, prefix, len(FIELDS)]
    head += FIELDS
    acks: list[bytes] = []
    while not stop():
        reply: list[Any] = await READ(client, (stream,), [*head, *acks])
        acks = []
        if not reply:
            await asyncio.sleep(0.001)  # nothing new: poll again shortly
            continue
        for i in range(0, len(reply), 3):
            await _handle(handler, reply[i + 1], reply[i + 2])
            acks.append(reply[i])
    if acks:
        await client.call("XACK", stream, group, *acks)


async def raw_consume(
    raw: RawRedis,
    client: aioredis.Redis,
    stream: str,
    prefix: str,
    events: int,
    lua: bool,
    group: str,
) -> float:
    """Seconds for a raw consumer (a new GROUP from the start of the stream) to
    handle and ack EVENTS events."""
    handler = CountingHandler(events)
    consume = consume_lua if lua else consume_pipelined
    fresh_gc()
    started = time.perf_counter()
    # Inside the clock, as a backbone subscription creates its group inside it.
    await raw.call("XGROUP", "CREATE", stream, group, "0")
    await consume(
        raw,
        stream,
        prefix,
        group,
        f"{group}-1",
        handler,
        lambda: handler.count >= events,
    )
    await drained(client, stream, group, 60)
    seconds = time.perf_counter() - started
    if handler.count != events:
        raise RuntimeError(f"raw consumer handled {handler.count} of {events}")
    return seconds
