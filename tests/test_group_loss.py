"""A vanished consumer group is recreated where it cannot skip an event, also when
the stream came back with ids lower than the ones the consumer saw (a server that
restarted empty with its clock behind, a replica that lagged)."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import pytest

import backbone
from backbone.codec import pack_value
from conftest import RedisServer, eventually, free_port
from contracts.shipment_tracking_gen import (
    shipment_tracking_producer,
    subscribe_shipment_tracking,
)
from helpers import Flaky, moment

URI = "loss"
BEGINNING = backbone.StartFrom.BEGINNING
# Short blocks: a consumer waiting on a stream that was replaced notices soon.
OPTIONS = backbone.SubscriptionOptions(block=0.2, claim_idle=30.0)

# Replace the stream at once, as a server coming back empty would, with one entry
# (explicit id ARGV[1], fields ARGV[5..]) and its payload (ARGV[2..4]): nothing
# can see the stream in between.
REPLACE = """
redis.call('DEL', KEYS[1])
local id = redis.call('XADD', KEYS[1], ARGV[1], unpack(ARGV, 5))
redis.call('HSET', KEYS[2] .. id, 'email', ARGV[2], 'product_id', ARGV[3],
  'time', ARGV[4])
return id
"""


def future_id(hours: int = 1) -> str:
    return f"{int(time.time() * 1000) + hours * 3_600_000}-0"


async def write_raw(bus: backbone.Backbone, entry_id: str, product_id: int) -> str:
    """An event written with an explicit id (the old stream's, ahead of the
    clock), with its payload."""
    keys = bus.keys(URI)
    fields = {"o": "packing", "v": "1", "c": "ShipmentTracking", "t": "1", "p": "x"}
    written = (await bus.redis.xadd(keys.stream, fields, id=entry_id)).decode()
    await bus.redis.hset(
        keys.payload(written),
        mapping={
            "email": pack_value(f"old{product_id}@example.com"),
            "product_id": pack_value(product_id),
            "time": pack_value(moment()),
        },
    )
    return written


async def replace_stream(bus: backbone.Backbone, entry_id: str, product_id: int) -> str:
    keys = bus.keys(URI)
    written = await bus.redis.eval(
        REPLACE,
        2,
        keys.stream,
        keys.payload_prefix,
        entry_id,
        pack_value("new@example.com"),
        pack_value(product_id),
        pack_value(moment()),
        *("o", "packing", "v", "1", "c", "ShipmentTracking", "t", "2", "p", "new"),
    )
    return str(written.decode())


async def publish(bus: backbone.Backbone, count: int, start: int) -> list[str]:
    producer = shipment_tracking_producer(bus, URI)
    return [
        (await producer.packing(f"u{i}@example.com", i, moment())).id
        for i in range(start, start + count)
    ]


async def test_a_stream_back_with_lower_ids_skips_no_event(
    bus: backbone.Backbone,
) -> None:
    old = await write_raw(bus, future_id(), 1)
    handler = Flaky()
    async with subscribe_shipment_tracking(
        bus, URI, handler, group="g", start=BEGINNING, options=OPTIONS
    ) as sub:
        await eventually(lambda: handler.ids == [old], message="old event handled")
        # The server comes back empty; its clock is behind the old ids.
        first = await replace_stream(bus, "1000-0", 2)
        later = await publish(bus, 3, start=3)
        await eventually(lambda: handler.count() == 5, message="new events handled")
        assert sub.stats.groups_recreated == 1
    assert handler.ids == [old, first, *later]


async def test_an_entry_with_the_last_seen_id_but_other_fields_is_not_the_same(
    bus: backbone.Backbone,
) -> None:
    """At high rates a new stream easily has an entry with the very id the
    consumer saw last: its fields tell it apart."""
    seen = future_id()
    old = await write_raw(bus, seen, 1)
    handler = Flaky()
    async with subscribe_shipment_tracking(
        bus, URI, handler, group="g", start=BEGINNING, options=OPTIONS
    ) as sub:
        await eventually(lambda: handler.ids == [old], message="old event handled")
        same_id = await replace_stream(bus, seen, 2)
        assert same_id == old
        await eventually(lambda: handler.count() == 2, message="new entry handled")
        assert sub.stats.groups_recreated == 1
    assert [args[1] for _, args, _ in handler.calls] == [1, 2]


async def test_a_destroyed_group_goes_on_after_the_last_entry_seen(
    bus: backbone.Backbone,
) -> None:
    """The stream is still the one read: nothing is delivered twice."""
    first = await publish(bus, 3, start=0)
    handler = Flaky()
    async with subscribe_shipment_tracking(
        bus, URI, handler, group="g", start=BEGINNING, options=OPTIONS
    ) as sub:
        await eventually(lambda: handler.count() == 3)
        await eventually(lambda: sub.in_flight == 0, message="acks written")
        await bus.redis.xgroup_destroy(bus.keys(URI).stream, "g")
        later = await publish(bus, 2, start=3)
        await eventually(lambda: handler.count() == 5, message="later events")
    assert handler.ids == first + later
    assert sub.stats.groups_recreated == 1


async def test_a_group_gone_before_any_read_goes_on_from_where_it_was(
    bus: backbone.Backbone,
) -> None:
    """A consumer that never read knows the group's position from Redis: the
    entry there is still in the stream, so the group goes on after it."""
    first = await publish(bus, 3, start=0)
    handler = Flaky()
    await bus.redis.xgroup_create(bus.keys(URI).stream, "g", id=first[-1])
    async with subscribe_shipment_tracking(
        bus, URI, handler, group="g", start=BEGINNING, options=OPTIONS
    ) as sub:
        await bus.redis.xgroup_destroy(bus.keys(URI).stream, "g")
        later = await publish(bus, 2, start=3)
        await eventually(lambda: handler.count() == 2, message="later events")
    assert handler.ids == later
    assert sub.stats.groups_recreated == 1


@pytest.mark.slow
async def test_a_real_restart_without_persistence_with_lower_ids_skips_nothing(
    real_url: str, environment: str
) -> None:
    """The literal case: a redis-server without persistence is killed and comes
    back empty; the stream's new ids are below the ones seen before it."""
    with tempfile.TemporaryDirectory(prefix="backbone-loss-") as tmp:
        server = RedisServer(free_port(), Path(tmp))
        server.start()
        try:
            bus = backbone.Backbone(server.url, environment=environment)
            async with bus:
                old = await write_raw(bus, future_id(), 1)
                handler = Flaky()
                async with subscribe_shipment_tracking(
                    bus, URI, handler, group="g", start=BEGINNING, options=OPTIONS
                ) as sub:
                    await eventually(lambda: handler.ids == [old], message="old")
                    await eventually(lambda: sub.in_flight == 0, message="acked")
                    server.stop(kill=True)
                    server.start()
                    later = await publish(bus, 5, start=10)
                    assert all(i < old for i in later)
                    await eventually(
                        lambda: handler.count() == 6, timeout=20, message="new events"
                    )
                    assert sub.stats.groups_recreated == 1
                    assert sub.running
                assert handler.ids == [old, *later]
        finally:
            server.stop()


async def test_events_held_when_the_group_vanishes_are_pending_again(
    bus: backbone.Backbone,
) -> None:
    """The vanished group's pending list is gone: the recreated group must hold
    the events this consumer had read and not yet acked, or a crash (here: a
    stop that cuts the handler short) would lose them."""
    held = await publish(bus, 5, start=0)
    stuck = Flaky(gate=asyncio.Event())
    options = backbone.SubscriptionOptions(
        block=0.2, claim_idle=30.0, shutdown_timeout=0.05
    )
    sub = await subscribe_shipment_tracking(
        bus, URI, stuck, group="g", consumer="c1", start=BEGINNING, options=options
    )
    await eventually(lambda: stuck.running == 1 and sub.in_flight == 5)
    await bus.redis.xgroup_destroy(bus.keys(URI).stream, "g")
    (late,) = await publish(bus, 1, start=5)
    await eventually(lambda: sub.stats.groups_recreated == 1, message="recreated")
    await eventually(lambda: sub.in_flight == 6, message="the late event read")
    await sub.stop()
    info = await bus.redis.xpending(bus.keys(URI).stream, "g")
    assert info["pending"] == 6
    handler = Flaky()
    async with subscribe_shipment_tracking(
        bus, URI, handler, group="g", consumer="c1", options=options
    ) as again:
        await eventually(lambda: handler.count() == 6, message="all handled")
        await eventually(lambda: again.in_flight == 0, message="acked")
    assert sorted(handler.ids) == sorted([*held, late])
