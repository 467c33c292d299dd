"""Producer behaviour under lost replies and outages (real Redis behind a proxy)."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

import pytest
import redis.asyncio

import backbone
from conftest import RedisServer, eventually, free_port
from contracts.shipment_tracking_gen import shipment_tracking_producer
from helpers import moment
from proxy import FlakyProxy

URI = "orders"


async def test_lost_reply_is_retried_without_duplicate(
    proxy: FlakyProxy, real_bus: backbone.Backbone, environment: str
) -> None:
    async with backbone.Backbone(proxy.url, environment=environment) as bus:
        producer = shipment_tracking_producer(bus, URI)
        await producer.packing("warm@example.com", 0, moment())  # connection is open
        proxy.drop_replies(1)
        event_id = await producer.packing("a@example.com", 1, moment())
        assert proxy.dropped == 1
    entries = await real_bus.redis.xrange(real_bus.keys(URI).stream)
    assert [e[0].decode() for e in entries][1:] == [event_id.id]
    assert await real_bus.redis.exists(real_bus.keys(URI).payload(event_id.id)) == 1


async def test_lost_reply_of_a_coalesced_batch_is_not_duplicated(
    proxy: FlakyProxy, real_bus: backbone.Backbone, environment: str
) -> None:
    async with backbone.Backbone(proxy.url, environment=environment) as bus:
        producer = shipment_tracking_producer(bus, URI)
        await producer.packing("warm@example.com", 0, moment())
        proxy.drop_replies(1)
        results = await asyncio.gather(
            *(producer.packing(f"u{i}@example.com", i, moment()) for i in range(50))
        )
    entries = await real_bus.redis.xrange(real_bus.keys(URI).stream)
    assert len(entries) == 51
    assert [e[0].decode() for e in entries][1:] == [r.id for r in results]


async def _payload_keys(bus: backbone.Backbone) -> list[bytes]:
    pattern = bus.keys(URI).payload_prefix + "*"
    return [key async for key in bus.redis.scan_iter(match=pattern, count=1000)]


@pytest.mark.parametrize("later_batches", [0, 1, 3])
async def test_late_first_attempt_is_not_written_again(
    proxy: FlakyProxy,
    real_bus: backbone.Backbone,
    environment: str,
    later_batches: int,
) -> None:
    """A first attempt stalls on a half-open connection and times out; its retry
    goes through on a new connection; LATER_BATCHES more batches are written; then
    the stalled bytes reach Redis. Each event is in the stream exactly once."""
    async with backbone.Backbone(
        proxy.url, environment=environment, command_timeout=0.3
    ) as bus:
        producer = shipment_tracking_producer(bus, URI)
        warm = await producer.packing("warm@example.com", 0, moment())
        proxy.hold()
        event_id = await producer.packing("a@example.com", 1, moment())
        assert proxy.held_bytes > 0  # the first attempt never reached Redis
        later = [
            await producer.packing(f"later{i}@example.com", 2 + i, moment())
            for i in range(later_batches)
        ]
        assert proxy.release() == 1
        await eventually(
            lambda: proxy.answered == 1, message="Redis to run the late attempt"
        )
    entries = await real_bus.redis.xrange(real_bus.keys(URI).stream)
    written = [warm, event_id, *later]
    assert [e[0].decode() for e in entries] == [e.id for e in written]
    assert len(await _payload_keys(real_bus)) == len(written)


async def _occupy_payload_key(bus: backbone.Backbone, nth: int = 1) -> bytes:
    """Make Redis refuse the NTH event from now: fix the stream's next entry ids,
    then put a string where that entry's payload hash would go. Returns the key."""
    keys = bus.keys(URI)
    await bus.redis.xadd(keys.stream, {"o": "seed"}, id="9999999999990-0")
    await bus.redis.xdel(keys.stream, "9999999999990-0")
    await bus.redis.set(keys.payload(f"9999999999990-{nth}"), "in the way")
    return keys.payload(f"9999999999990-{nth}").encode()


async def test_late_attempt_of_a_refused_batch_writes_nothing(
    proxy: FlakyProxy, real_bus: backbone.Backbone, environment: str
) -> None:
    """The first attempt stalls; Redis refuses the retry (PublishError: nothing
    was written); then the stalled attempt arrives. It must not write the batch
    its caller was told had failed."""
    occupied = await _occupy_payload_key(real_bus)
    async with backbone.Backbone(
        proxy.url, environment=environment, command_timeout=0.3
    ) as bus:
        producer = shipment_tracking_producer(bus, URI)
        await bus.redis.script_load(bus.scripts.publish.source)  # opens the link
        proxy.hold()
        with pytest.raises(backbone.PublishError, match="WRONGTYPE"):
            await producer.packing("a@example.com", 1, moment())
        assert proxy.release() == 1
        await eventually(
            lambda: proxy.answered == 1, message="Redis to run the late attempt"
        )
    assert await real_bus.redis.xlen(real_bus.keys(URI).stream) == 0
    assert await _payload_keys(real_bus) == [occupied]


async def test_lost_refusal_is_the_answer_to_the_retry(
    proxy: FlakyProxy, real_bus: backbone.Backbone, environment: str
) -> None:
    """Redis refuses a batch and the refusal is lost: the retry is answered with
    that refusal and writes nothing, as the first attempt did."""
    occupied = await _occupy_payload_key(real_bus)
    async with backbone.Backbone(proxy.url, environment=environment) as bus:
        producer = shipment_tracking_producer(bus, URI)
        proxy.drop_reply_containing(b"WRONGTYPE")
        with pytest.raises(backbone.PublishError, match="WRONGTYPE"):
            await producer.packing("a@example.com", 1, moment())
        assert proxy.dropped == 1
        # The producer goes on with its next batch.
        event_id = await producer.packing("b@example.com", 2, moment())
    entries = await real_bus.redis.xrange(real_bus.keys(URI).stream)
    assert [e[0].decode() for e in entries] == [event_id.id]
    assert sorted(await _payload_keys(real_bus)) == sorted(
        [occupied, real_bus.keys(URI).payload(event_id.id).encode()]
    )


async def test_lost_refusal_of_a_coalesced_batch_falls_back_to_single_writes(
    proxy: FlakyProxy, real_bus: backbone.Backbone, environment: str
) -> None:
    """As when the refusal arrives: each event of the refused batch is sent on
    its own, and every caller gets its own id."""
    # The first call goes out alone (-1); the five queued behind it share a batch
    # whose first event lands on -2 and collides.
    await _occupy_payload_key(real_bus, 2)
    async with backbone.Backbone(proxy.url, environment=environment) as bus:
        # One batch in flight, so that the layout above is the one written.
        options = backbone.ProducerOptions(pipeline=1)
        producer = shipment_tracking_producer(bus, URI, options=options)
        proxy.drop_reply_containing(b"WRONGTYPE")
        results = await asyncio.gather(
            *(producer.packing(f"u{i}@example.com", i, moment()) for i in range(6))
        )
        assert proxy.dropped == 1
    entries = await real_bus.redis.xrange(real_bus.keys(URI).stream)
    assert [e[0].decode() for e in entries] == [r.id for r in results]
    assert "9999999999990-2" not in [r.id for r in results]
    assert len(await _payload_keys(real_bus)) == 7  # six events and the blocker


async def test_an_attempt_older_than_the_last_batch_is_refused(
    bus: backbone.Backbone,
) -> None:
    """Were the client ever to read the answer to a stale attempt, it raises
    instead of taking the ids of another batch, and nothing is written."""
    producer = shipment_tracking_producer(bus, URI)
    first = await producer.packing("a@example.com", 1, moment())
    second = await producer.packing("b@example.com", 2, moment())
    producer.producer._writer.sequence = 0  # the next batch number is 1: older than 2
    with pytest.raises(backbone.PublishError, match="older than batch 2"):
        await producer.packing("c@example.com", 3, moment())
    producer.producer._writer.sequence = 1  # batch 2 again: a retry gets its own ids
    assert await producer.packing("b@example.com", 2, moment()) == second
    entries = await bus.redis.xrange(bus.keys(URI).stream)
    assert [e[0].decode() for e in entries] == [first.id, second.id]
    assert len(await _payload_keys(bus)) == 2


async def test_batch_record_outlives_late_attempts(bus: backbone.Backbone) -> None:
    producer = shipment_tracking_producer(bus, URI)
    assert producer.producer.options.batch_record_ttl == 3600
    record_key = producer.producer._writer.record_key
    first = await producer.packing("a@example.com", 1, moment())
    assert await bus.redis.get(record_key) == f"1 {first.id} {first.id}".encode()
    ttl = await bus.redis.pttl(record_key)
    assert 3_590_000 < ttl <= 3_600_000
    short = backbone.ProducerOptions(batch_record_ttl=120)
    producer = shipment_tracking_producer(bus, URI, options=short)
    async with producer.batch() as batch:
        batch.packing("b@example.com", 2, moment())
        batch.packing("c@example.com", 3, moment())
    second, third = batch.event_ids
    record_key = producer.producer._writer.record_key
    assert await bus.redis.get(record_key) == f"1 {second.id} {third.id}".encode()
    assert 110_000 < await bus.redis.pttl(record_key) <= 120_000


async def test_publish_during_outage_times_out_clearly(
    proxy: FlakyProxy, real_bus: backbone.Backbone, environment: str
) -> None:
    options = backbone.ProducerOptions(publish_timeout=0.5)
    async with backbone.Backbone(proxy.url, environment=environment) as bus:
        producer = shipment_tracking_producer(bus, URI, options=options)
        await producer.packing("warm@example.com", 0, moment())
        proxy.refuse(True)
        started = time.monotonic()
        with pytest.raises(backbone.PublishTimeout) as caught:
            await producer.packing("lost@example.com", 1, moment())
        assert time.monotonic() - started < 5
        message = str(caught.value)
        assert bus.keys(URI).stream in message
        assert "publish_timeout" in message
        # Redis comes back: the producer works again without being rebuilt.
        proxy.refuse(False)
        event_id = await producer.packing("back@example.com", 2, moment())
    entries = await real_bus.redis.xrange(real_bus.keys(URI).stream)
    assert [e[0].decode() for e in entries][-1] == event_id.id
    assert len(entries) == 2


async def test_unreachable_server_raises_publish_timeout(environment: str) -> None:
    options = backbone.ProducerOptions(publish_timeout=0.3)
    async with backbone.Backbone(
        f"redis://127.0.0.1:{free_port()}/0", environment=environment
    ) as bus:
        producer = shipment_tracking_producer(bus, URI, options=options)
        with pytest.raises(backbone.PublishTimeout, match="could not publish 1 event"):
            await producer.packing("a@example.com", 1, moment())


def test_options_fail_fast() -> None:
    with pytest.raises(backbone.ConfigurationError, match="publish_timeout"):
        backbone.ProducerOptions(publish_timeout=0)
    with pytest.raises(backbone.ConfigurationError, match="max_batch"):
        backbone.ProducerOptions(max_batch=0)
    with pytest.raises(backbone.ConfigurationError, match="batch_record_ttl"):
        backbone.ProducerOptions(batch_record_ttl=30)
    with pytest.raises(backbone.ConfigurationError, match="twice publish_timeout"):
        backbone.ProducerOptions(publish_timeout=100, batch_record_ttl=150)
    with pytest.raises(backbone.ConfigurationError, match="Redis URL"):
        backbone.Backbone("http://localhost")
    with pytest.raises(backbone.ConfigurationError, match="environment"):
        backbone.Backbone("memory://", environment="bad{tag}")


async def test_min_replicas_raises_when_no_replica_confirms(
    real_bus: backbone.Backbone,
) -> None:
    options = backbone.ProducerOptions(min_replicas=1, replica_timeout=0.05)
    producer = shipment_tracking_producer(real_bus, URI, options=options)
    with pytest.raises(backbone.ReplicationTimeout) as caught:
        await producer.packing("a@example.com", 1, moment())
    assert caught.value.replicas == 0
    (event_id,) = caught.value.event_ids
    assert isinstance(event_id, backbone.EventId)
    entries = await real_bus.redis.xrange(real_bus.keys(URI).stream)
    assert [e[0].decode() for e in entries] == [event_id.id]


async def test_min_replicas_waits_for_a_real_replica(
    environment: str, real_url: str
) -> None:
    with tempfile.TemporaryDirectory() as one, tempfile.TemporaryDirectory() as two:
        primary = RedisServer(free_port(), Path(one))
        primary.start()
        replica = RedisServer(
            free_port(), Path(two), "--replicaof", "127.0.0.1", str(primary.port)
        )
        replica.start()
        try:
            follower = redis.asyncio.Redis(port=replica.port)

            async def linked() -> bool:
                info = await follower.info("replication")
                return info.get("master_link_status") == "up"

            await eventually(linked, timeout=20, message="replica linked")
            options = backbone.ProducerOptions(min_replicas=1, replica_timeout=5)
            async with backbone.Backbone(primary.url, environment=environment) as bus:
                producer = shipment_tracking_producer(bus, URI, options=options)
                ids = await asyncio.gather(
                    *(
                        producer.packing(f"u{i}@example.com", i, moment())
                        for i in range(20)
                    )
                )
                # WAIT returned: the replica has every event already.
                copied = await follower.xrange(bus.keys(URI).stream)
                assert [e[0].decode() for e in copied] == [i.id for i in ids]
                payload = await follower.hgetall(bus.keys(URI).payload(ids[-1].id))
                assert set(payload) == {b"email", b"product_id", b"time"}
            await follower.aclose()
        finally:
            replica.stop()
            primary.stop()


@pytest.mark.parametrize("how", ["lone call", "atomic batch"])
async def test_close_waits_for_a_write_in_flight(
    bus: backbone.Backbone, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    # A lone caller's event (sent from its own task) and an atomic batch hold a
    # writer of their own; close() returns only once they are written.
    from backbone.writer import Writer

    entered, gate = asyncio.Event(), asyncio.Event()
    real_write = Writer.write
    order: list[str] = []

    async def held(self: Writer, items: list[object]) -> list[backbone.EventId]:
        entered.set()
        await gate.wait()
        ids = await real_write(self, items)  # type: ignore[arg-type]
        order.append("written")
        return ids

    monkeypatch.setattr(Writer, "write", held)
    producer = shipment_tracking_producer(bus, URI)
    if how == "lone call":
        sending = asyncio.ensure_future(producer.packing("a@x.com", 1, moment()))
    else:

        async def atomic() -> list[backbone.EventId]:
            async with producer.batch() as batch:
                batch.packing("a@x.com", 1, moment())
                batch.packing("b@x.com", 2, moment())
            return batch.event_ids

        sending = asyncio.ensure_future(atomic())
    await asyncio.wait_for(entered.wait(), 10)

    async def close() -> None:
        await producer.producer.close()
        order.append("closed")

    closing = asyncio.ensure_future(close())  # runs before the write goes on
    gate.set()
    await asyncio.wait_for(closing, 10)
    await asyncio.wait_for(sending, 10)
    assert order == ["written", "closed"]
    assert await bus.redis.xlen(bus.keys(URI).stream) == (
        1 if how == "lone call" else 2
    )
