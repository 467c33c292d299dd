"""The Redis layout, read back with plain Redis commands, and the atomic write."""

from __future__ import annotations

import asyncio

import msgpack
import pytest

import backbone
from backbone.codec import unpack_value
from contracts.shipment_tracking_gen import shipment_tracking_producer
from helpers import moment, product, user

URI = "hello.event-sourcing"


async def test_stream_entry_holds_metadata_and_hash_holds_payload(
    bus: backbone.Backbone,
) -> None:
    producer = shipment_tracking_producer(bus, URI)
    event_id = await producer.order_placed(user(1), product(1), moment(5))

    stream = f"bb:{{{bus.environment}:{URI}}}"
    assert event_id.stream == stream
    entries = await bus.redis.xrange(stream)
    assert len(entries) == 1
    entry_id, fields = entries[0]
    assert entry_id.decode() == event_id.id
    assert fields[b"o"] == b"order_placed"
    assert fields[b"v"] == b"1"
    assert fields[b"c"] == b"ShipmentTracking"
    assert int(fields[b"t"]) > 0
    assert fields[b"p"].decode() == producer.producer.identity
    # Metadata only: no parameter travels in the stream entry.
    assert not {b"user", b"product", b"time"} & set(fields)

    payload_key = f"{stream}:p:{event_id.id}"
    assert await bus.redis.type(payload_key) == b"hash"
    payload = await bus.redis.hgetall(payload_key)
    assert set(payload) == {b"user", b"product", b"time"}
    # Each field is plain msgpack: a map for models, an extension type for datetime.
    raw_user = msgpack.unpackb(payload[b"user"], raw=False)
    assert raw_user == {
        "id": 1,
        "name": "User 1",
        "email": "user1@example.com",
        "tier": "standard",
    }
    raw_product = unpack_value(payload[b"product"])
    assert raw_product["price"] == product(1).price
    assert unpack_value(payload[b"time"]) == moment(5)


async def test_keys_share_one_hash_tag(bus: backbone.Backbone) -> None:
    keys = bus.keys(URI)
    tag = f"{{{bus.environment}:{URI}}}"
    for key in (
        keys.stream,
        keys.payload("1-0"),
        keys.dead_letters,
        keys.dead_letter_payload("g", "1-0"),
        keys.writer("p"),
        keys.done("g"),
    ):
        assert key.count("{") == 1
        assert tag in key


async def test_failing_write_leaves_neither_part(bus: backbone.Backbone) -> None:
    """Redis refuses the hash write: the stream entry written just before is rolled
    back, so neither part exists, and the error names the stream."""
    stream = bus.keys(URI).stream
    # Fix the stream's next id, then occupy that id's payload key with a string.
    await bus.redis.xadd(stream, {"o": "seed"}, id="9999999999990-0")
    await bus.redis.xdel(stream, "9999999999990-0")
    await bus.redis.set(bus.keys(URI).payload("9999999999990-1"), "in the way")

    producer = shipment_tracking_producer(bus, URI)
    with pytest.raises(backbone.PublishError, match=r"WRONGTYPE|wrong kind"):
        await producer.packing("a@example.com", 1, moment())
    assert await bus.redis.xlen(stream) == 0
    assert (
        await bus.redis.get(bus.keys(URI).payload("9999999999990-1")) == b"in the way"
    )


async def test_failing_event_in_atomic_batch_rolls_back_all(
    bus: backbone.Backbone,
) -> None:
    stream = bus.keys(URI).stream
    await bus.redis.xadd(stream, {"o": "seed"}, id="9999999999990-0")
    await bus.redis.xdel(stream, "9999999999990-0")
    # The third event of the batch will collide.
    await bus.redis.set(bus.keys(URI).payload("9999999999990-3"), "in the way")

    producer = shipment_tracking_producer(bus, URI)
    batch = producer.batch()
    for i in range(5):
        batch.packing(f"u{i}@example.com", i, moment())
    with pytest.raises(backbone.PublishError):
        await batch.__aexit__(None, None, None)
    assert await bus.redis.xlen(stream) == 0
    for seq in (1, 2, 4, 5):
        assert (
            await bus.redis.exists(bus.keys(URI).payload(f"9999999999990-{seq}")) == 0
        )


async def test_refused_coalesced_batch_falls_back_to_single_writes(
    bus: backbone.Backbone,
) -> None:
    """Concurrent calls share one round trip; when Redis refuses that batch, each
    event is sent on its own, so one bad write cannot fail its neighbours."""
    stream = bus.keys(URI).stream
    await bus.redis.xadd(stream, {"o": "seed"}, id="9999999999990-0")
    await bus.redis.xdel(stream, "9999999999990-0")
    # The first call goes out alone (-1); the five queued behind it share a batch
    # whose first event lands on -2 and collides.
    blocker = bus.keys(URI).payload("9999999999990-2")
    await bus.redis.set(blocker, "in the way")
    # One batch in flight, so that the five calls behind the first are coalesced.
    options = backbone.ProducerOptions(pipeline=1)
    producer = shipment_tracking_producer(bus, URI, options=options)
    results = await asyncio.gather(
        *(producer.packing(f"u{i}@example.com", i, moment()) for i in range(6))
    )
    ids = [r.id for r in results]
    assert len(set(ids)) == 6
    assert "9999999999990-2" not in ids
    entries = await bus.redis.xrange(stream)
    assert [e[0].decode() for e in entries] == ids
    for event_id, i in zip(ids, range(6), strict=True):
        payload = await bus.redis.hgetall(bus.keys(URI).payload(event_id))
        assert unpack_value(payload[b"product_id"]) == i
    assert await bus.redis.get(blocker) == b"in the way"


async def test_atomic_batch_writes_in_order(bus: backbone.Backbone) -> None:
    producer = shipment_tracking_producer(bus, URI)
    async with producer.batch() as batch:
        for i in range(10):
            batch.packing(f"u{i}@example.com", i, moment())
        assert len(batch) == 10
    assert len(batch.event_ids) == 10
    entries = await bus.redis.xrange(bus.keys(URI).stream)
    assert [e[0].decode() for e in entries] == [e.id for e in batch.event_ids]


async def test_batch_discarded_on_exception_and_validated_on_add(
    bus: backbone.Backbone,
) -> None:
    producer = shipment_tracking_producer(bus, URI)
    batch = producer.batch()
    batch.packing("a@example.com", 1, moment())
    await batch.__aexit__(RuntimeError, RuntimeError("changed my mind"), None)
    assert batch.event_ids == []
    with pytest.raises(backbone.ValidationError, match="product_id"):
        batch.packing("a@example.com", "one", moment())  # type: ignore[arg-type]
    assert await bus.redis.exists(bus.keys(URI).stream) == 0
