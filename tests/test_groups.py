"""Consumer groups: every group sees every event; members of a group share it."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

import backbone
from conftest import eventually
from contracts.shipment_tracking_gen import (
    shipment_tracking_producer,
    subscribe_shipment_tracking,
)
from helpers import Recorder, moment

URI = "orders"
BEGINNING = backbone.StartFrom.BEGINNING


async def publish(bus: backbone.Backbone, count: int, start: int = 0) -> list[str]:
    producer = shipment_tracking_producer(bus, URI)
    ids = await asyncio.gather(
        *(
            producer.packing(f"u{i}@example.com", i, moment())
            for i in range(start, start + count)
        )
    )
    return [event_id.id for event_id in ids]


async def test_every_group_receives_every_event(bus: backbone.Backbone) -> None:
    first, second = Recorder("first"), Recorder("second")
    async with (
        subscribe_shipment_tracking(bus, URI, first, group="one", start=BEGINNING),
        subscribe_shipment_tracking(bus, URI, second, group="two", start=BEGINNING),
    ):
        ids = await publish(bus, 200)
        await eventually(lambda: first.count() == 200 and second.count() == 200)
    assert first.ids == ids
    assert second.ids == ids
    assert first.duplicates() == second.duplicates() == 0


async def test_three_consumers_split_the_work_without_loss_or_duplicate(
    bus: backbone.Backbone,
) -> None:
    options = backbone.SubscriptionOptions(max_in_flight=20)
    members = [Recorder(f"c{i}") for i in range(3)]
    subscriptions = [
        subscribe_shipment_tracking(
            bus,
            URI,
            member,
            group="workers",
            consumer=member.name,
            start=BEGINNING,
            options=options,
        )
        for member in members
    ]
    for sub in subscriptions:
        await sub
    try:
        ids = await publish(bus, 3000)
        await eventually(
            lambda: sum(m.count() for m in members) >= 3000, timeout=30, message="3000"
        )
    finally:
        for sub in subscriptions:
            await sub.stop()
    seen = Counter(i for m in members for i in m.ids)
    assert set(seen) == set(ids), "every event handled"
    assert max(seen.values()) == 1, "no event handled twice"
    assert all(m.count() > 0 for m in members), [m.count() for m in members]
    # Each member saw its share in stream order.
    order = {event_id: n for n, event_id in enumerate(ids)}
    for m in members:
        positions = [order[i] for i in m.ids]
        assert positions == sorted(positions)
    groups = await bus.redis.xinfo_groups(bus.keys(URI).stream)
    assert groups[0]["pending"] == 0


async def test_new_group_starts_at_beginning_new_or_given_id(
    bus: backbone.Backbone,
) -> None:
    before = await publish(bus, 5)
    from_start, from_new, from_id = Recorder(), Recorder(), Recorder()
    async with (
        subscribe_shipment_tracking(
            bus, URI, from_start, group="start", start=BEGINNING
        ),
        subscribe_shipment_tracking(
            bus, URI, from_new, group="new", start=backbone.StartFrom.NEW
        ),
        subscribe_shipment_tracking(bus, URI, from_id, group="at", start=before[2]),
    ):
        after = await publish(bus, 3, start=5)
        await eventually(
            lambda: (
                from_start.count() == 8
                and from_new.count() == 3
                and from_id.count() == 6
            )
        )
    assert from_start.ids == before + after
    assert from_new.ids == after
    assert from_id.ids == before[2:] + after


async def test_event_id_as_start_and_existing_group_keeps_its_place(
    bus: backbone.Backbone,
) -> None:
    ids = await publish(bus, 4)
    first = Recorder()
    async with subscribe_shipment_tracking(
        bus, URI, first, group="g", start=backbone.EventId(bus.keys(URI).stream, ids[1])
    ):
        await eventually(lambda: first.count() == 3)
    assert first.ids == ids[1:]
    # The group exists now: START is ignored, reading goes on where it stopped.
    more = await publish(bus, 2, start=4)
    second = Recorder()
    async with subscribe_shipment_tracking(
        bus, URI, second, group="g", start=BEGINNING
    ):
        await eventually(lambda: second.count() == 2)
    assert second.ids == more


async def test_group_creation_is_idempotent_and_makes_the_stream(
    bus: backbone.Backbone,
) -> None:
    stream = bus.keys(URI).stream
    assert await bus.redis.exists(stream) == 0
    for _ in range(2):
        async with subscribe_shipment_tracking(bus, URI, Recorder(), group="g"):
            pass
    assert await bus.redis.exists(stream) == 1
    groups = await bus.redis.xinfo_groups(stream)
    assert [g["name"] for g in groups] == [b"g"]


def test_bad_names_and_starts_are_refused(url: str) -> None:
    bus = backbone.Backbone(url)
    with pytest.raises(backbone.ConfigurationError, match="group"):
        subscribe_shipment_tracking(bus, URI, Recorder(), group="has space")
    with pytest.raises(backbone.ConfigurationError, match="start"):
        subscribe_shipment_tracking(bus, URI, Recorder(), group="g", start="yesterday")
    with pytest.raises(backbone.ConfigurationError, match="concurrency"):
        backbone.SubscriptionOptions(concurrency=10, max_in_flight=5)
