"""Edge cases of delivery: lost replies, outages at start, shared producer
identities, concurrent claims, refused dead letters, long-running scripts."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
import redis.exceptions as rex

import backbone
from backbone.connection import is_transient
from conftest import eventually
from contracts.shipment_tracking_gen import (
    shipment_tracking_producer,
    subscribe_shipment_tracking,
)
from helpers import Flaky, moment
from proxy import FlakyProxy
from typed_contracts.all_types_gen import all_types_producer

URI = "edges"
BEGINNING = backbone.StartFrom.BEGINNING


async def publish(bus: backbone.Backbone, count: int, start: int = 0) -> list[str]:
    producer = shipment_tracking_producer(bus, URI)
    ids = [
        await producer.packing(f"u{i}@example.com", i, moment())
        for i in range(start, start + count)
    ]
    return [event_id.id for event_id in ids]


async def test_lost_read_reply_is_recovered_at_once(
    proxy: FlakyProxy, real_bus: backbone.Backbone, environment: str
) -> None:
    """read.lua ran, its reply was lost: what it delivered is pending with this
    consumer, and the consumer takes it back right away, not after claim_idle."""
    ids = await publish(real_bus, 3)
    proxy.drop_reply_containing(b"u0@example.com")
    handler = Flaky()
    options = backbone.SubscriptionOptions(claim_idle=60.0)
    bus = backbone.Backbone(proxy.url, environment=environment)
    async with (
        bus,
        subscribe_shipment_tracking(
            bus, URI, handler, group="g", start=BEGINNING, options=options
        ) as sub,
    ):
        await eventually(lambda: handler.count() == 3, timeout=10)
        assert proxy.dropped == 1
        assert sub.stats.recovered == 3
    assert sorted(handler.ids) == sorted(ids)
    assert {c.delivery_count for _, _, c in handler.calls} == {2}


async def test_start_during_an_outage_keeps_the_requested_start(
    proxy: FlakyProxy, real_bus: backbone.Backbone, environment: str
) -> None:
    """A group first created after an outage starts where it was asked to (here:
    new events only), not at the beginning of the stream."""
    await publish(real_bus, 3)
    proxy.refuse(True)
    handler = Flaky()
    async with backbone.Backbone(proxy.url, environment=environment) as bus:
        sub = subscribe_shipment_tracking(
            bus, URI, handler, group="late", start=backbone.StartFrom.NEW
        )
        await sub.start()
        await eventually(lambda: proxy.refused >= 2, message="a refused retry")
        proxy.refuse(False)
        await eventually(
            lambda: real_bus.redis.exists(real_bus.keys(URI).stream),
            message="stream",
        )

        async def group_exists() -> bool:
            groups = await real_bus.redis.xinfo_groups(real_bus.keys(URI).stream)
            return any(g["name"] == b"late" for g in groups)

        await eventually(group_exists, message="group created")
        (new,) = await publish(real_bus, 1, start=3)
        await eventually(lambda: handler.count() == 1)
        await sub.stop()
    assert handler.ids == [new]


async def test_producers_sharing_an_identity_keep_their_own_events(
    proxy: FlakyProxy, real_bus: backbone.Backbone, environment: str
) -> None:
    """Two producers configured with one identity: a retried batch of one must
    never be answered with the other's entries."""
    options = backbone.ProducerOptions(identity="billing", publish_timeout=10)
    async with backbone.Backbone(proxy.url, environment=environment) as bus:
        first = shipment_tracking_producer(bus, URI, options=options)
        second = shipment_tracking_producer(bus, URI, options=options)
        a = await first.packing("a@example.com", 1, moment())
        proxy.refuse(True)
        pending = asyncio.ensure_future(second.packing("b@example.com", 2, moment()))
        await eventually(lambda: proxy.refused >= 1, message="a refused attempt")
        proxy.refuse(False)
        b = await pending
    assert a != b
    entries = await real_bus.redis.xrange(real_bus.keys(URI).stream)
    assert [e[0].decode() for e in entries] == [a.id, b.id]
    payload = await real_bus.redis.hgetall(real_bus.keys(URI).payload(b.id))
    assert backbone.codec.unpack_value(payload[b"email"]) == "b@example.com"


async def test_claims_and_reads_together_stay_within_max_in_flight(
    bus: backbone.Backbone,
) -> None:
    stream = bus.keys(URI).stream
    await publish(bus, 10)
    await bus.redis.xgroup_create(stream, "g", id="0")
    await bus.redis.xreadgroup(
        "g", "dead", {stream: ">"}
    )  # ten idle with a dead member
    gate = asyncio.Event()
    handler = Flaky(gate=gate)
    options = backbone.SubscriptionOptions(
        max_in_flight=10, concurrency=10, claim_idle=0.05, claim_interval=0.01
    )
    async with subscribe_shipment_tracking(
        bus, URI, handler, group="g", consumer="c1", start=BEGINNING, options=options
    ) as sub:
        await publish(bus, 10, start=10)  # ten new ones for the reader
        highest = 0
        full_samples = 0
        deadline = asyncio.get_running_loop().time() + 20
        while full_samples < 50:
            info = await bus.redis.xpending(stream, "g")
            mine = {c["name"]: c["pending"] for c in info["consumers"]}.get(b"c1", 0)
            highest = max(highest, mine, sub.in_flight)
            if sub.in_flight >= 10:
                full_samples += 1
            assert asyncio.get_running_loop().time() < deadline, "never full"
            await asyncio.sleep(0.005)  # the sampling period of this observer
        gate.set()
        await eventually(lambda: handler.count() == 20, timeout=20)
    assert highest <= 10
    assert sub.stats.max_in_flight_seen <= 10


async def test_claimed_events_keep_their_delivery_counts(
    bus: backbone.Backbone,
) -> None:
    """Counts come per claimed id, whatever else this consumer has pending."""
    stream = bus.keys(URI).stream
    ids = await publish(bus, 3)
    await bus.redis.xgroup_create(stream, "g", id="0")
    await bus.redis.xreadgroup("g", "c1", {stream: ">"})
    await bus.redis.xclaim(stream, "g", "c1", 0, [ids[0], ids[2]], retrycount=8)
    sub = subscribe_shipment_tracking(bus, URI, Flaky(), group="g", consumer="c1")
    entries = [(ids[0].encode(), {}), (ids[2].encode(), {})]
    counts = await sub._reader.fetcher.delivery_counts(entries)
    assert counts == {ids[0]: 8, ids[2]: 8}


async def test_a_refused_dead_letter_leaves_the_event_pending(
    bus: backbone.Backbone,
) -> None:
    """When the dead letter cannot be written, the event is not acked: it stays
    pending and is dead-lettered once the dead-letter stream works again."""
    await bus.redis.set(bus.keys(URI).dead_letters, "not a stream")
    handler = Flaky(failures=99)
    await publish(bus, 1)
    options = backbone.SubscriptionOptions(
        retry=backbone.RetryPolicy(max_deliveries=1),
        claim_idle=0.1,
        claim_interval=0.02,
    )
    async with subscribe_shipment_tracking(
        bus, URI, handler, group="g", start=BEGINNING, options=options
    ) as sub:
        await eventually(lambda: handler.attempts.total() >= 1)
        info = await bus.redis.xpending(bus.keys(URI).stream, "g")
        assert info["pending"] == 1
        await bus.redis.delete(bus.keys(URI).dead_letters)
        await eventually(lambda: sub.stats.dead_lettered == 1, timeout=10)
    info = await bus.redis.xpending(bus.keys(URI).stream, "g")
    assert info["pending"] == 0
    assert await backbone.DeadLetters(bus, URI).count() == 1


def test_busy_server_is_a_passing_condition() -> None:
    busy = rex.ResponseError(
        "BUSY Redis is busy running a script. You can only call ..."
    )
    assert is_transient(busy)
    assert not is_transient(rex.ResponseError("WRONGTYPE Operation against a key"))


async def test_out_of_range_values_are_validation_errors(
    bus: backbone.Backbone,
) -> None:
    producer = all_types_producer(bus, URI)
    with pytest.raises(backbone.ValidationError) as caught:
        await producer.times(
            moment(),
            dt.datetime(2000, 1, 1),
            dt.date(2000, 1, 1),
            dt.time(0),
            dt.timedelta(days=999_999_999),
        )
    assert caught.value.parameter == "span"


async def test_claim_scans_never_leave_the_reader_waiting(
    bus: backbone.Backbone,
) -> None:
    """A claim scan holds the free room while it runs; giving it back must wake a
    reader that found no room meanwhile, or the reader waits for ever."""
    handler = Flaky()
    options = backbone.SubscriptionOptions(
        max_in_flight=8, claim_idle=60.0, claim_interval=0.001
    )
    async with subscribe_shipment_tracking(
        bus, URI, handler, group="g", start=BEGINNING, options=options
    ) as sub:
        for round_ in range(40):
            await publish(bus, 10, start=10 * round_)
            await eventually(
                lambda round_=round_: handler.count() == 10 * (round_ + 1),
                timeout=10,
                message=f"round {round_} handled",
            )
        assert sub.stats.claim_scans > 0
