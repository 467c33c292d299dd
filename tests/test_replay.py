"""Replaying a stream, or a range of it, into a handler (no consumer group)."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

import backbone
from backbone.codec import pack_value
from backbone.store.ranges import count_range, next_id, range_ids
from contracts.shipment_tracking import ShipmentTracking
from contracts.shipment_tracking_gen import ShipmentTrackingDispatcher
from helpers import Recorder, moment, product, user, write_bad_inputs
from store_helpers import Shipment

URI = "parcels"
UTC = dt.UTC
CONTRACT = backbone.bind(ShipmentTracking)
PACKING = CONTRACT.operation("packing")
PLACED = CONTRACT.operation("order_placed")


async def publish(bus: backbone.Backbone, count: int, first: int = 0) -> list[str]:
    """COUNT packing events, product ids FIRST, FIRST + 1, ...; their entry ids."""
    producer = bus.producer(URI)
    return [
        (await producer.publish(PACKING, (f"u{i}@x", i, moment()))).id
        for i in range(first, first + count)
    ]


async def stream_ids(bus: backbone.Backbone) -> list[str]:
    return [e[0].decode() for e in await bus.redis.xrange(bus.keys(URI).stream)]


async def raw_packing(bus: backbone.Backbone, entry_id: str, product_id: int) -> None:
    """A packing event at ENTRY_ID (chosen, so that its time is known)."""
    keys = bus.keys(URI)
    meta = {"o": "packing", "v": "1", "c": "ShipmentTracking", "t": "5", "p": "t"}
    await bus.redis.xadd(keys.stream, meta, id=entry_id)
    await bus.redis.hset(
        keys.payload(entry_id),
        mapping={
            "email": pack_value("a@x"),
            "product_id": pack_value(product_id),
            "time": pack_value(moment()),
        },
    )


class Packings:
    """Implements packing only."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.products: list[int] = []
        self.fail_on = fail_on

    async def packing(self, email: str, product_id: int, time: dt.datetime) -> None:
        if product_id == self.fail_on:
            raise RuntimeError(f"product {product_id} is cursed")
        self.products.append(product_id)


async def test_an_id_range_in_stream_order_with_contexts(
    bus: backbone.Backbone,
) -> None:
    ids = await publish(bus, 6)
    recorder = Recorder()
    summary = await backbone.replay(bus, URI, recorder, start=ids[1], end=ids[4])
    assert recorder.ids == ids[1:5]
    assert [args[1] for _, args, _ in recorder.calls] == [1, 2, 3, 4]
    assert (summary.replayed, summary.skipped, summary.undecodable) == (4, 0, 0)
    assert (summary.first_id, summary.last_id) == (ids[1], ids[4])
    context = recorder.calls[0][2]
    assert (context.group, context.consumer, context.delivery_count) == (
        "replay",
        "replay",
        1,
    )
    assert context.id == backbone.EventId(bus.keys(URI).stream, ids[1])
    assert (context.operation, context.contract, context.version) == (
        "packing",
        "ShipmentTracking",
        1,
    )
    assert context.produced_at is not None
    assert context.aggregate_id is None
    assert str(summary).startswith(f"replayed 4 events of {bus.keys(URI).stream}")
    # Nothing is consumed: no consumer group exists afterwards.
    assert await bus.redis.xinfo_groups(bus.keys(URI).stream) == []


async def test_the_whole_stream_across_pages_and_a_count(
    bus: backbone.Backbone,
) -> None:
    producer = bus.producer(URI)
    for start in range(0, 450, 50):
        async with backbone.Batch(producer) as batch:
            for i in range(start, start + 50):
                batch.add(PACKING, (f"u{i}@x", i, moment()))
    everything = await stream_ids(bus)
    recorder = Recorder()
    seen: list[int] = []
    summary = await backbone.replay(
        bus, URI, recorder, progress=lambda s: seen.append(s.read)
    )
    assert recorder.ids == everything
    assert summary.replayed == 450
    assert seen == list(range(1, 451))

    limited = Recorder()
    summary = await backbone.replay(bus, URI, limited, start=everything[10], count=3)
    assert limited.ids == everything[10:13]
    assert summary.last_id == everything[12]
    assert await count_range(bus, URI) == 450
    assert await count_range(bus, URI, everything[5], everything[9]) == 5
    assert await count_range(bus, URI, everything[5], cap=100) is None


async def test_a_time_range_maps_to_ms_0_and_ms_max(bus: backbone.Backbone) -> None:
    for n, entry in enumerate(
        ("999-7", "1000-0", "1000-1", "2000-0", "2000-9", "2001-0")
    ):
        await raw_packing(bus, entry, n)
    recorder = Recorder()
    since = dt.datetime.fromtimestamp(1, UTC)
    until = dt.datetime.fromtimestamp(2, UTC)
    summary = await backbone.replay(bus, URI, recorder, start=since, end=until)
    assert recorder.ids == ["1000-0", "1000-1", "2000-0", "2000-9"]
    assert summary.replayed == 4
    recorder = Recorder()
    await backbone.replay(bus, URI, recorder, start="2000-9", end="end")
    assert recorder.ids == ["2000-9", "2001-0"]
    recorder = Recorder()
    await backbone.replay(bus, URI, recorder, end=backbone.EventId("s", "1000-0"))
    assert recorder.ids == ["999-7", "1000-0"]


async def test_a_handler_of_some_operations_skips_the_others(
    bus: backbone.Backbone,
) -> None:
    producer = bus.producer(URI)
    await producer.publish(PLACED, (user(1), product(1), moment()))
    await publish(bus, 2, first=7)
    await producer.publish(PLACED, (user(2), product(2), moment()))
    packings = Packings()
    summary = await backbone.replay(bus, URI, packings)
    assert packings.products == [7, 8]
    assert (summary.replayed, summary.skipped, summary.undecodable) == (2, 2, 0)
    explicit = Packings()
    dispatcher = ShipmentTrackingDispatcher(explicit, partial=True)  # type: ignore[arg-type]
    assert (await backbone.replay(bus, URI, dispatcher)).replayed == 2
    assert explicit.products == [7, 8]


async def test_bad_events_are_logged_counted_and_skipped(
    bus: backbone.Backbone, caplog: pytest.LogCaptureFixture
) -> None:
    [before] = await publish(bus, 1)
    bad = await write_bad_inputs(bus, URI)
    [after] = await publish(bus, 1, first=1)
    recorder = Recorder()
    with caplog.at_level(logging.WARNING, logger="backbone.replay"):
        summary = await backbone.replay(bus, URI, recorder)
    assert recorder.ids == [before, after]
    assert (summary.replayed, summary.undecodable) == (2, len(bad))
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for reason, entry in bad.items():
        assert f"undecodable event {entry} ({reason})" in logged


async def test_a_failing_handler_stops_the_replay_naming_the_event(
    bus: backbone.Backbone,
) -> None:
    ids = await publish(bus, 5)
    packings = Packings(fail_on=2)
    with pytest.raises(backbone.ReplayError) as caught:
        await backbone.replay(bus, URI, packings)
    error = caught.value
    assert packings.products == [0, 1]
    assert error.event_id.id == ids[2]
    assert error.summary.replayed == 2
    assert error.summary.last_id == ids[1]
    assert f"failed on event {ids[2]} (packing)" in str(error)
    assert "RuntimeError: product 2 is cursed" in str(error)
    assert isinstance(error.__cause__, RuntimeError)
    packings.fail_on = None  # fixed: resume from the failed event
    summary = await backbone.replay(bus, URI, packings, start=error.event_id)
    assert packings.products == [0, 1, 2, 3, 4]
    assert summary.replayed == 3


async def test_bad_bounds_and_handlers_are_refused(bus: backbone.Backbone) -> None:
    await publish(bus, 1)
    recorder = Recorder()
    cases: list[tuple[dict[str, object], str]] = [
        ({"start": "abc"}, "start 'abc' is not an entry id"),
        ({"end": "1-x"}, "end '1-x' is not an entry id"),
        ({"start": "5-0", "end": "4-9"}, "start 5-0 is after end 4-9"),
        ({"start": dt.datetime(2026, 1, 1)}, "has no time zone"),
        ({"count": 0}, "count must be at least 1"),
    ]
    for options, message in cases:
        with pytest.raises(backbone.ConfigurationError, match=message):
            await backbone.replay(bus, URI, recorder, **options)  # type: ignore[arg-type]
    with pytest.raises(backbone.ConfigurationError, match="implements no operation"):
        await backbone.replay(bus, URI, object())
    assert recorder.calls == []


async def test_an_event_store_stream_gives_the_aggregate_id(
    bus: backbone.Backbone,
) -> None:
    shipments = bus.aggregates(URI, Shipment)
    order = await shipments.load("order-7")
    order.place(user(1), product(1), moment())
    [saved] = await shipments.save(order)
    recorder = Recorder()
    assert (await backbone.replay(bus, URI, recorder)).replayed == 1
    [(operation, _, context)] = recorder.calls
    assert (operation, context.id, context.aggregate_id) == (
        "order_placed",
        saved,
        "order-7",
    )


def test_range_ids_and_next_id() -> None:
    assert range_ids("beginning", "end") == ("0-0", f"{2**64 - 1}-{2**64 - 1}")
    moment_ = dt.datetime(2026, 11, 23, 12, 0, 0, 5000, tzinfo=UTC)
    ms = int(moment_.timestamp() * 1000)
    assert range_ids(moment_, moment_) == (f"{ms}-0", f"{ms}-{2**64 - 1}")
    assert next_id("5-1") == "5-2"
    assert next_id(f"5-{2**64 - 1}") == "6-0"
    assert next_id(f"{2**64 - 1}-{2**64 - 1}") is None
