"""Payload size: the same comparisons at about 200 B, 2 KB and 20 KB per event.

The event is the packing event with its ``email`` argument padded so that the
three encoded payload values take the given size. At each size, in interleaved
rounds: ``producer.batch()`` of 1,000 against the raw Lua batch script (each
on a clean server), then a backbone subscription (default options) against the
raw XREADGROUP + pipelined HMGET loop and the raw one-call Lua read (each with
a new group from the start of one stream, written by backbone). Larger events
are fewer, so that no stream holds much more than ``size_budget_bytes``.
"""

from __future__ import annotations

import functools
import time

import redis.asyncio as aioredis

import backbone
from contracts.shipment_tracking_gen import shipment_tracking_producer

from . import raw_side
from .common import (
    PRODUCT_ID,
    Comparison,
    Run,
    Section,
    Settings,
    event_time,
    fresh_gc,
    identity,
    interleave,
    measurement,
    padded_email,
    ratio,
    write_batches,
)
from .consumer import backbone_consume
from .raw import RawRedis
from .server import BenchServer

__all__ = ["events_at", "run"]

BB_BATCH = "backbone: producer.batch()"
RAW_BATCH = "raw hiredis: Lua script per batch"
BB_SUB = "backbone subscription (default options)"
RAW_READ = "raw hiredis: XREADGROUP + pipelined HMGET + XACK"
RAW_LUA_READ = "raw hiredis: one-call Lua read"
KEYS = {
    BB_BATCH: "backbone_batch",
    RAW_BATCH: "raw_lua_batch",
    BB_SUB: "backbone_subscription",
    RAW_READ: "raw_xreadgroup_hmget",
    RAW_LUA_READ: "raw_lua_read",
}


def events_at(settings: Settings, size: int) -> int:
    """How many events of SIZE bytes each variant writes or reads."""
    return max(1, min(settings.size_events, settings.size_budget_bytes // size))


async def _producers(
    server: BenchServer,
    client: aioredis.Redis,
    bus: backbone.Backbone,
    raw: RawRedis,
    settings: Settings,
    size: int,
) -> dict[str, list[Run]]:
    events, batch = events_at(settings, size), settings.batch_size
    args = (padded_email(size), PRODUCT_ID, event_time())
    uri = f"sizes.producer.{size}"
    keys = bus.keys(uri)
    producer = shipment_tracking_producer(bus, uri)
    by_hand = raw_side.RawProducer(raw, keys.stream, keys.payload_prefix, identity())

    async def once(name: str) -> Run:
        await server.clean(client)
        await producer.packing(*args)  # warm: connection, script, version marks
        await by_hand.batch([args])
        fresh_gc()
        started = time.perf_counter()
        if name == BB_BATCH:
            await write_batches(producer, "packing", args, events, batch)
        else:
            for first in range(0, events, batch):
                await by_hand.batch([args] * min(batch, events - first))
        seconds = time.perf_counter() - started
        length = await client.xlen(keys.stream)
        if length != events + 2:
            raise RuntimeError(f"{name} at {size} B: {length - 2} of {events} written")
        return Run(seconds)

    return await interleave(
        settings, [(n, functools.partial(once, n)) for n in (BB_BATCH, RAW_BATCH)]
    )


async def _consumers(
    server: BenchServer,
    client: aioredis.Redis,
    bus: backbone.Backbone,
    raw: RawRedis,
    settings: Settings,
    size: int,
) -> dict[str, list[Run]]:
    events = events_at(settings, size)
    uri = f"sizes.consumer.{size}"
    keys = bus.keys(uri)
    await server.clean(client)
    producer = shipment_tracking_producer(bus, uri)
    args = (padded_email(size), PRODUCT_ID, event_time())
    await write_batches(producer, "packing", args, events, settings.batch_size)
    timeout = max(60.0, events / 200)
    groups = iter(range(1, 1_000_000))

    async def bb() -> Run:
        group = f"g{next(groups)}"
        return Run(
            await backbone_consume(bus, client, uri, events, None, timeout, group)
        )

    async def by_hand(lua: bool) -> Run:
        group = f"g{next(groups)}"
        return Run(
            await raw_side.raw_consume(
                raw, client, keys.stream, keys.payload_prefix, events, lua, group
            )
        )

    runs = await interleave(
        settings,
        [
            (BB_SUB, bb),
            (RAW_READ, functools.partial(by_hand, False)),
            (RAW_LUA_READ, functools.partial(by_hand, True)),
        ],
    )
    await server.clean(client)
    return runs


async def run(server: BenchServer, settings: Settings) -> Section:
    section = Section("sizes", "Payload size: backbone against the raw baselines")
    client = server.client()
    await server.clean(client)
    bus = backbone.Backbone(server.url, environment=server.environment)
    raw = await RawRedis.connect(server.url)
    try:
        for size in settings.payload_sizes:
            produced = await _producers(server, client, bus, raw, settings, size)
            consumed = await _consumers(server, client, bus, raw, settings, size)
            _summarise(section, settings, size, produced | consumed)
    finally:
        await raw.close()
        await bus.close()
        await client.aclose()
    section.notes += [
        f"payload: the packing event, email padded so the encoded values take "
        f"the size; events per variant: at most {settings.size_events:,} and "
        f"{settings.size_budget_bytes / 1e6:.0f} MB of values",
        "producers on a clean server, consumers with a new group each from the "
        "start of one stream written by backbone; interleaved rounds, best kept",
    ]
    return section


def _summarise(
    section: Section, settings: Settings, size: int, results: dict[str, list[Run]]
) -> None:
    events = events_at(settings, size)
    rates = {
        name: measurement(name, events, runs).rate for name, runs in results.items()
    }
    raw_reads = [r for r in (rates[RAW_READ], rates[RAW_LUA_READ]) if r is not None]
    best_read = max(raw_reads) if raw_reads else None
    for name, runs in results.items():
        m = measurement(name, events, runs, group=f"{size:,} B")
        row = m.as_dict()
        row["size"] = size
        row["mb_per_s"] = m.rate * size / 1e6 if m.rate is not None else None
        best = rates[RAW_BATCH] if name in (BB_BATCH, RAW_BATCH) else best_read
        row["vs_best_raw"] = ratio(m.rate, best)
        section.rows.append(row)
        section.figures[f"{KEYS[name]}_{size}"] = m.rate
    section.figures[f"raw_consumer_best_{size}"] = best_read
    section.comparisons += [
        Comparison(
            f"{size:,} B: backbone batch / raw Lua batch",
            ratio(rates[BB_BATCH], rates[RAW_BATCH]),
        ),
        Comparison(
            f"{size:,} B: backbone subscription / best raw consumer",
            ratio(rates[BB_SUB], best_read),
        ),
    ]
