"""Redis memory per event: backbone's layout (stream entry + payload hash) against
the same bytes inline in the stream entry.

For each layout: start from an empty database (FLUSHALL on the harness's own
server), write one warm-up batch elsewhere and delete it (so client buffers and
the script cache are already counted in the "before" figure), read ``used_memory``,
write N ``order_placed`` events in batches of 1000, read ``used_memory`` again.
The figure is the difference divided by N. The inline layout is one XADD per
event with backbone's metadata fields followed by the three payload fields, with
the exact bytes backbone's codec produces.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

import backbone
from contracts.shipment_tracking_gen import shipment_tracking_producer

from .common import (
    Comparison,
    Section,
    Settings,
    hand_meta,
    identity,
    order_placed_args,
    ratio,
    write_batches,
)
from .server import BenchServer

__all__ = ["run"]

LISTPACK_VALUE = "hash-max-listpack-value"
SAME_WITHIN = 0.02


async def used_memory(client: aioredis.Redis) -> int:
    info: dict[str, Any] = await client.info("memory")
    return int(info["used_memory"])


async def _write_backbone(
    bus: backbone.Backbone, uri: str, events: int, batch: int
) -> None:
    producer = shipment_tracking_producer(bus, uri)
    await write_batches(producer, "order_placed", order_placed_args(), events, batch)


async def stored_payload(server: BenchServer) -> list[bytes]:
    """The payload fields backbone stores for the benchmark's order_placed event
    (``[field, value, ...]``), read back from Redis: the exact bytes, whatever
    backbone's codec does to produce them."""
    bus = backbone.Backbone(server.url, environment=server.environment)
    try:
        producer = shipment_tracking_producer(bus, "memory.sample")
        event = await producer.order_placed(*order_placed_args())
        payload: dict[bytes, bytes] = await bus.redis.hgetall(  # type: ignore[assignment]
            bus.keys("memory.sample").payload(event.id)
        )
    finally:
        await bus.close()
    return [part for pair in payload.items() for part in pair]


async def _write_inline(
    client: aioredis.Redis,
    stream: str,
    events: int,
    batch: int,
    fields: list[bytes],
) -> None:
    writer = identity()
    left = events
    while left > 0:
        n = min(batch, left)
        async with client.pipeline(transaction=False) as pipe:
            for _ in range(n):
                pipe.execute_command(
                    "XADD", stream, "*", *hand_meta("order_placed", writer), *fields
                )
            await pipe.execute()
        left -= n


async def _per_event(
    server: BenchServer,
    client: aioredis.Redis,
    settings: Settings,
    layout: str,
    fields: list[bytes],
) -> float:
    events = settings.memory_events
    batch = settings.batch_size
    await server.clean(client)
    bus = backbone.Backbone(server.url, environment=server.environment)
    try:
        if layout == "backbone":
            await _write_backbone(bus, "memory.warmup", batch, batch)
        else:
            await _write_inline(
                bus.redis, bus.keys("memory.warmup").stream, batch, batch, fields
            )
        await server.clean(client)
        before = await used_memory(client)
        if layout == "backbone":
            await _write_backbone(bus, "memory", events, batch)
        else:
            await _write_inline(
                bus.redis, bus.keys("memory").stream, events, batch, fields
            )
        after = await used_memory(client)
        written = await client.xlen(bus.keys("memory").stream)
        if written != events:
            raise RuntimeError(f"{layout}: {written} entries, not {events}")
    finally:
        await bus.close()
    await server.clean(client)
    return (after - before) / events


async def run(server: BenchServer, settings: Settings) -> Section:
    section = Section(
        "memory",
        f"Redis memory per event ({settings.memory_events} order_placed events)",
    )
    client = server.client()
    original: str | None = None
    try:
        config: dict[Any, Any] = await client.config_get(LISTPACK_VALUE)
        value = config.get(LISTPACK_VALUE, config.get(LISTPACK_VALUE.encode()))
        original = value.decode() if isinstance(value, bytes) else value
        payload = await stored_payload(server)
        largest = max(len(v) for v in payload[1::2])
        hashed = await _per_event(server, client, settings, "backbone", payload)
        inline = await _per_event(server, client, settings, "inline", payload)
        await client.config_set(LISTPACK_VALUE, "256")
        hashed_256 = await _per_event(server, client, settings, "backbone", payload)
        inline_256 = await _per_event(server, client, settings, "inline", payload)
    finally:
        if original is not None:
            await client.config_set(LISTPACK_VALUE, original)
        await client.aclose()

    rows = [
        ("backbone: stream entry + payload hash", hashed, inline, original),
        ("inline: payload fields in the stream entry", inline, inline, original),
        ("backbone: stream entry + payload hash", hashed_256, inline_256, "256"),
        ("inline: payload fields in the stream entry", inline_256, inline_256, "256"),
    ]
    for name, per_event, base, setting in rows:
        section.rows.append(
            {
                "name": name,
                LISTPACK_VALUE: setting,
                "events": settings.memory_events,
                "bytes_per_event": per_event,
                "vs_inline": ratio(per_event, base),
            }
        )
    same = abs(hashed_256 - hashed) <= SAME_WITHIN * hashed
    section.figures.update(
        {
            "backbone_bytes_per_event": hashed,
            "inline_bytes_per_event": inline,
            "ratio": ratio(hashed, inline),
            "backbone_bytes_per_event_listpack_256": hashed_256,
            "inline_bytes_per_event_listpack_256": inline_256,
            "ratio_listpack_256": ratio(hashed_256, inline_256),
            "largest_payload_value_bytes": float(largest),
        }
    )
    section.comparisons += [
        Comparison("backbone layout / inline layout", ratio(hashed, inline)),
        Comparison(
            f"backbone layout / inline layout ({LISTPACK_VALUE} 256)",
            ratio(hashed_256, inline_256),
        ),
        Comparison(
            "backbone layout: extra bytes per event over inline",
            hashed - inline,
            "B",
        ),
    ]
    section.notes.append(
        f"largest payload value is {largest} bytes (default {LISTPACK_VALUE} "
        f"{original}): "
        + (
            f"the hashes stay listpacks, so {LISTPACK_VALUE} 256 changes nothing "
            f"(within {SAME_WITHIN:.0%})"
            if same
            else f"{LISTPACK_VALUE} 256 changes the figure to {hashed_256:.0f} B/event"
        )
    )
    return section
