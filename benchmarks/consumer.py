"""Consumer throughput: pre-written events read, decoded, handled and acked by a
consumer group, with backbone, by hand, and with FastStream.

Each variant gets its own stream, written before its clock starts, and its own
group created at the beginning of that stream. The clock runs from starting the
consumer (connection already open) until the last event was handled and the
group has nothing pending (all acked).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

import backbone
from contracts.shipment_tracking import Product, User
from contracts.shipment_tracking_gen import (
    shipment_tracking_producer,
    subscribe_shipment_tracking,
)

from . import faststream_side as fs
from .common import (
    Comparison,
    Measurement,
    Section,
    Settings,
    decode_field,
    fresh_gc,
    identity,
    packing_args,
    ratio,
    repeat_count,
    write_batches,
)
from .server import BenchServer

__all__ = ["CountingHandler", "backbone_consume", "drained", "prewrite", "run"]

BB_DEFAULT = "backbone subscription (default options)"
BB_WIDE = "backbone subscription (max_in_flight=1000)"
HAND = "hand-written XREADGROUP+HGETALL+XACK"
FS_SINGLE = "FastStream StreamSub group: one message per call"
FS_BATCH = "FastStream StreamSub group: batch"
READ_COUNT = 1000


class CountingHandler:
    """A trivial ShipmentTracking handler: counts calls, signals the last one."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.done = asyncio.Event()

    def _hit(self) -> None:
        self.count += 1
        if self.count >= self.expected:
            self.done.set()

    async def order_placed(
        self, user: User, product: Product, time: dt.datetime
    ) -> None:
        self._hit()

    async def packing(self, email: str, product_id: int, time: dt.datetime) -> None:
        self._hit()

    async def on_delivery(self, email: str, product_id: int, time: dt.datetime) -> None:
        self._hit()

    async def on_received(self, email: str, product_id: int, time: dt.datetime) -> None:
        self._hit()


async def prewrite(bus: backbone.Backbone, uri: str, events: int, batch: int) -> None:
    """EVENTS packing events written by backbone's producer (the real layout)."""
    producer = shipment_tracking_producer(bus, uri)
    await write_batches(producer, "packing", packing_args(), events, batch)


async def _pending(client: aioredis.Redis, stream: str, group: str) -> int:
    summary: dict[str, Any] = await client.xpending(stream, group)
    return int(summary["pending"])


async def drained(
    client: aioredis.Redis, stream: str, group: str, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while await _pending(client, stream, group):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{stream} group {group}: acks still pending")
        await asyncio.sleep(0.001)


async def backbone_consume(
    bus: backbone.Backbone,
    client: aioredis.Redis,
    uri: str,
    events: int,
    options: backbone.SubscriptionOptions | None,
    timeout: float,
    group: str = "bench",
) -> float:
    """Seconds for a backbone subscription (a new GROUP, from the beginning of the
    stream) to handle and ack EVENTS events."""
    handler = CountingHandler(events)
    stream = bus.keys(uri).stream
    fresh_gc()
    started = time.perf_counter()
    async with subscribe_shipment_tracking(
        bus,
        uri,
        handler,
        group=group,
        consumer=f"{group}-1",
        start=backbone.StartFrom.BEGINNING,
        options=options,
    ):
        await asyncio.wait_for(handler.done.wait(), timeout)
        await drained(client, stream, group, timeout)
        elapsed = time.perf_counter() - started
    if handler.count != events:
        raise RuntimeError(f"backbone handled {handler.count} of {events} events")
    return elapsed


async def hand_consume(
    client: aioredis.Redis,
    stream: str,
    payload_prefix: str,
    events: int,
    timeout: float,
    group: str = "hand",
) -> float:
    """A hand-written group consumer: XREADGROUP COUNT 1000, one pipeline of
    HGETALLs for the payloads, msgpack decode (no pydantic), a trivial async
    handler per event, one XACK per read."""
    handler = CountingHandler(events)
    prefix = payload_prefix.encode()
    consumer = f"{group}-1"
    await client.xgroup_create(stream, group, id="0")
    fresh_gc()
    started = time.perf_counter()
    deadline = time.monotonic() + timeout
    while handler.count < events:
        if time.monotonic() > deadline:
            raise RuntimeError(f"hand-written consumer handled {handler.count}")
        response: Any = await client.xreadgroup(
            group, consumer, {stream: ">"}, count=READ_COUNT, block=1000
        )
        if not response:
            continue
        entries: list[tuple[bytes, dict[bytes, bytes]]] = response[0][1]
        async with client.pipeline(transaction=False) as pipe:
            for entry_id, _ in entries:
                pipe.hgetall(prefix + entry_id)
            payloads: list[dict[bytes, bytes]] = await pipe.execute()
        for (_, meta), payload in zip(entries, payloads, strict=True):
            operation = meta[b"o"]
            if operation == b"packing":
                await handler.packing(
                    decode_field(payload[b"email"]),
                    decode_field(payload[b"product_id"]),
                    decode_field(payload[b"time"]),
                )
        await client.xack(stream, group, *(entry_id for entry_id, _ in entries))
    await drained(client, stream, group, timeout)
    return time.perf_counter() - started


async def run(server: BenchServer, settings: Settings) -> Section:
    section = Section("consumer", "Consumer throughput (events/s)")
    events = settings.consumer_events
    timeout = max(60.0, events / 500)
    measurements: list[Measurement] = []
    client = server.client()
    await server.clean(client)
    bus = backbone.Backbone(server.url, environment=server.environment)
    try:
        # The three variants run in interleaved rounds (default, wide, hand-written,
        # then again), each round from a new group, so that a noisy moment of the
        # machine does not favour one of them; each keeps its best round.
        hand_keys = bus.keys("consumer.hand")
        variants: list[tuple[str, Callable[[str], Awaitable[float]]]] = []
        for name, options in (
            (BB_DEFAULT, None),
            (BB_WIDE, backbone.SubscriptionOptions(max_in_flight=1000)),
        ):
            uri = "consumer." + ("default" if options is None else "wide")
            await prewrite(bus, uri, events, settings.batch_size)
            variants.append(
                (
                    name,
                    functools.partial(
                        backbone_consume, bus, client, uri, events, options, timeout
                    ),
                )
            )
        await prewrite(bus, "consumer.hand", events, settings.batch_size)
        variants.append(
            (
                f"{HAND} (COUNT {READ_COUNT})",
                functools.partial(
                    hand_consume,
                    client,
                    hand_keys.stream,
                    hand_keys.payload_prefix,
                    events,
                    timeout,
                ),
            )
        )
        runs: dict[str, list[float]] = {name: [] for name, _ in variants}
        for name, consume in variants:
            runs[name].append(await consume("g0"))
        rounds = repeat_count(settings, min(r[0] for r in runs.values()))
        for i in range(rounds):
            for name, consume in variants:
                runs[name].append(await consume(f"g{i + 1}"))
        for name, _ in variants:
            measurements.append(
                Measurement(name, events, min(runs[name]), runs=runs[name])
            )
        await server.clean(client)

        if fs.AVAILABLE:
            stream = f"fs:{{{server.environment}:consumer}}"
            writer = identity()
            for name, batch in ((FS_SINGLE, False), (FS_BATCH, True)):
                broker = fs.broker(server.url)
                fs_client = await broker.connect()
                try:
                    await fs.publish_pipelined(
                        broker, fs_client, stream, events, writer, settings.batch_size
                    )
                finally:
                    await broker.stop()

                async def fs_run(group: str, batch: bool = batch) -> float:
                    handled, seconds = await fs.consume(
                        server.url,
                        stream,
                        events,
                        batch=batch,
                        max_records=READ_COUNT,
                        timeout=timeout,
                        group=group,
                    )
                    left = await _pending(client, stream, group)
                    if handled != events or left:
                        raise RuntimeError(
                            f"FastStream: handled {handled} of {events}, {left} "
                            "left pending"
                        )
                    return seconds

                fs_runs = await _repeated(settings, fs_run)
                label = f"{name} (max_records={READ_COUNT})"
                measurements.append(
                    Measurement(label, events, min(fs_runs), runs=fs_runs)
                )
                await server.clean(client)
        else:
            for name in (FS_SINGLE, FS_BATCH):
                measurements.append(
                    Measurement(name, events, None, note="faststream missing")
                )
    finally:
        await bus.close()
        await client.aclose()

    _summarise(section, measurements)
    return section


async def _repeated(
    settings: Settings, consume: Callable[[str], Awaitable[float]]
) -> list[float]:
    """Seconds of each run of CONSUME: one run, more when it is short; each run
    reads the whole stream again with a new consumer group."""
    runs = [await consume("g0")]
    for i in range(repeat_count(settings, runs[0])):
        runs.append(await consume(f"g{i + 1}"))
    return runs


NOTES = [
    "clock: from starting the consumer (connection open, stream pre-written) until "
    "the last event was handled and the group has nothing pending (all acked)",
    "each variant reads its own stream; backbone and hand-written variants run "
    "in interleaved rounds (three when short, a new group from the start of the "
    "same stream each time) and each keeps its best round",
    "backbone and the hand-written loop read backbone's layout (written by "
    "backbone's producer); FastStream reads its own messages (written by its "
    "pipelined publisher) and validates them into a pydantic model",
]


def _rate(measurements: list[Measurement], prefix: str) -> float | None:
    for m in measurements:
        if m.name.startswith(prefix):
            return m.rate
    return None


def _summarise(section: Section, measurements: list[Measurement]) -> None:
    hand = _rate(measurements, HAND)
    section.notes += NOTES
    for m in measurements:
        row = m.as_dict()
        row["vs_hand_written"] = ratio(m.rate, hand)
        section.rows.append(row)
    default = _rate(measurements, BB_DEFAULT)
    wide = _rate(measurements, BB_WIDE)
    candidates = [r for r in (default, wide) if r is not None]
    best = max(candidates) if candidates else None
    fs_single = _rate(measurements, FS_SINGLE)
    fs_batch = _rate(measurements, FS_BATCH)
    section.figures.update(
        {
            "backbone_default": default,
            "backbone_max_in_flight_1000": wide,
            "backbone_best": best,
            "hand_written": hand,
            "faststream_single": fs_single,
            "faststream_batch": fs_batch,
        }
    )
    for label, a, b in (
        ("backbone default / hand-written loop", default, hand),
        ("backbone max_in_flight=1000 / hand-written loop", wide, hand),
        ("backbone best / hand-written loop", best, hand),
        ("backbone default / FastStream one-by-one", default, fs_single),
        ("backbone best / FastStream batch", best, fs_batch),
        ("FastStream batch / hand-written loop", fs_batch, hand),
    ):
        section.comparisons.append(Comparison(label, ratio(a, b)))
