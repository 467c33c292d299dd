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
