"""Partitioned streams: keys to partitions, the recorded count, aggregates.

The consumer side (shared and ordered subscriptions over partitions) is in
test_partitioned_consume.py; on a real cluster in test_ordered_cluster.py.
"""

from __future__ import annotations

import asyncio
import uuid
import zlib
from typing import Annotated, Protocol

import pytest

import backbone
from backbone.describe import describe
from backbone.partitions import agree, partition_for
from store_helpers import Shipment
from typed_contracts.partitioned_gen import orders_producer

URI = "orders"


def test_the_partition_of_a_key_is_a_stable_crc32_of_its_text() -> None:
    # The documented function, so other languages and tools can compute it.
    for key in ("order-1", "Ω-7", 12345, uuid.UUID(int=7)):
        expected = zlib.crc32(str(key).encode()) % 8
        assert partition_for(key, 8) == expected
    assert partition_for("order-1", 1) == 0
    with pytest.raises(backbone.ConfigurationError, match="str, int or UUID"):
        partition_for(1.5, 4)
    with pytest.raises(backbone.ConfigurationError, match="str, int or UUID"):
        partition_for(True, 4)


async def test_events_of_one_key_land_in_its_partition_in_order(
    bus: backbone.Backbone,
) -> None:
    producer = orders_producer(bus, URI)
    keys = [f"order-{n}" for n in range(12)]
    # Concurrent callers: each key's events are awaited one after another.
    await asyncio.gather(
        *(_steps(producer, key, 5) for key in keys),
    )
    whole = bus.keys(URI)
    seen: dict[str, list[int]] = {}
    for partition in range(4):
        stream = whole.of_partition(partition).stream
        for entry_id, _ in await bus.redis.xrange(stream):
            payload = await bus.redis.hgetall(
                whole.of_partition(partition).payload(entry_id.decode())
            )
            key = backbone.codec.unpack_value(payload[b"order_id"])
            seq = backbone.codec.unpack_value(payload[b"seq"])
            assert partition == partition_for(key, 4), (key, partition)
            seen.setdefault(key, []).append(seq)
    assert seen == {key: list(range(5)) for key in keys}
    # Nothing went to the whole stream's own key.
    assert await bus.redis.exists(whole.stream) == 0
    assert await bus.redis.get(whole.partitions) == b"4"


async def _steps(producer: object, key: str, count: int) -> None:
    for seq in range(count):
        await producer.placed(key, seq)  # type: ignore[attr-defined]


async def test_unkeyed_events_spread_and_an_explicit_key_places_them(
    bus: backbone.Backbone,
) -> None:
    producer = orders_producer(bus, URI)
    ids = [await producer.noted(f"note {n}") for n in range(8)]
    assert len({event_id.stream for event_id in ids}) == 4  # round-robin
    keyed = producer.keyed("order-9")
    target = bus.keys(URI).of_partition(partition_for("order-9", 4)).stream
    placed = [await keyed.noted("a"), await keyed.placed("order-1", 0)]
    # The explicit key wins over the key parameter.
    assert {event_id.stream for event_id in placed} == {target}
    with pytest.raises(backbone.ConfigurationError, match="str, int or UUID"):
        producer.keyed(2.5)  # type: ignore[arg-type]


async def test_an_atomic_batch_stays_in_one_partition(bus: backbone.Backbone) -> None:
    producer = orders_producer(bus, URI)
    async with producer.batch() as batch:
        batch.noted("joins the keyed events' partition")
        batch.placed("order-1", 0)
        batch.placed("order-1", 1)
    assert len({event_id.stream for event_id in batch.event_ids}) == 1
    home = partition_for("order-1", 4)
    other = next(k for k in (f"o{n}" for n in range(50)) if partition_for(k, 4) != home)
    refused = producer.batch()
    refused.placed("order-1", 2)
    refused.placed(other, 0)
    with pytest.raises(backbone.ConfigurationError, match="one partition"):
        await refused.__aexit__(None, None, None)
    total = 0
    for partition in range(4):
        total += await bus.redis.xlen(bus.keys(URI).of_partition(partition).stream)
    assert total == 3  # the refused batch wrote nothing


async def test_the_partition_count_is_recorded_and_a_change_is_refused(
    bus: backbone.Backbone,
) -> None:
    await orders_producer(bus, URI).placed("order-1", 0)
    for declared in (1, 8):
        other = backbone.Backbone(bus.url, environment=bus.environment)
        if bus.embedded:
            other = bus  # an embedded Redis is private to its connection
        producer = other.producer(URI, None, partitions=declared)
        with pytest.raises(backbone.ConfigurationError) as caught:
            await producer.publish_many([(_noted_codec(), ("x",))])
        message = str(caught.value)
        assert "has 4 partition(s)" in message
        assert f"declares {declared}" in message
        if other is not bus:
            await other.close()


async def test_a_stream_with_unpartitioned_events_cannot_become_partitioned(
    bus: backbone.Backbone,
) -> None:
    plain = bus.producer(URI, None)
    await plain.publish(_noted_codec(), ("written before partitions",))
    with pytest.raises(backbone.ConfigurationError, match="without partitions"):
        await orders_producer(bus, URI).placed("order-1", 0)
    assert await bus.redis.exists(bus.keys(URI).partitions) == 0
    assert await agree(bus, bus.keys(URI), 1) == 1


def _noted_codec() -> backbone.codec.OperationCodec:
    from typed_contracts.partitioned_gen import ORDERS

    return backbone.codec.OperationCodec(ORDERS.spec.operation("noted"))


async def test_aggregates_live_in_the_partition_of_their_id(
    bus: backbone.Backbone,
) -> None:
    from helpers import moment, product, user

    repo = bus.aggregates("shipments", Shipment, partitions=4)
    for order in ("order-1", "order-2", "order-3", "order-4", "order-5"):
        shipment = await repo.load(order)
        shipment.place(user(1), product(1), moment(0))
        shipment.pack(7, moment(1))
        ids = await repo.save(shipment)
        keys = repo.keys_of(order)
        assert keys.partition == partition_for(order, 4)
        assert {event_id.stream for event_id in ids} == {keys.stream}
        assert await bus.redis.llen(keys.aggregate(order)) == 2
        again = await repo.load(order)
        assert again.version == 2
        assert again.state.stage == "packing"
        assert [e.version for e in await repo.events(order)] == [1, 2]
    stale = await repo.load("order-1")
    fresh = await repo.load("order-1")
    fresh.pack(8, moment(2))
    await repo.save(fresh)
    stale.pack(9, moment(3))
    with pytest.raises(backbone.ConcurrencyError):
        await repo.save(stale)
    with pytest.raises(backbone.ConfigurationError, match="has 4 partition"):
        await bus.aggregates("shipments", Shipment).load("order-1")


def test_a_contract_declares_one_partition_key_of_a_hashable_type() -> None:
    @backbone.contract(name="Keyed", partitions=3)
    class Keyed(Protocol):
        async def one(self, key: Annotated[int, backbone.PartitionKey()]) -> None: ...

    spec = describe(Keyed)
    assert spec.partitions == 3
    assert spec.operations[0].partition_key == 0

    @backbone.contract(name="TwoKeys")
    class TwoKeys(Protocol):
        async def one(
            self,
            a: Annotated[str, backbone.PartitionKey()],
            b: Annotated[str, backbone.PartitionKey()],
        ) -> None: ...

    with pytest.raises(backbone.ContractError, match="one partition key"):
        describe(TwoKeys)

    @backbone.contract(name="FloatKey")
    class FloatKey(Protocol):
        async def one(self, a: Annotated[float, backbone.PartitionKey()]) -> None: ...

    with pytest.raises(backbone.ContractError, match="str, int or UUID"):
        describe(FloatKey)

    @backbone.contract(name="PersonalKey")
    class PersonalKey(Protocol):
        async def one(
            self,
            a: Annotated[str, backbone.PartitionKey(), backbone.Personal("a")],
        ) -> None: ...

    with pytest.raises(backbone.ContractError, match="both Personal"):
        describe(PersonalKey)
    with pytest.raises(backbone.ContractError, match="partitions must be"):
        backbone.contract(name="Zero", partitions=0)


def test_a_uri_names_a_partition_with_a_hash_sign() -> None:
    keys = backbone.Backbone("memory://", environment="dev").keys("orders#3")
    assert (keys.uri, keys.partition, keys.stream) == ("orders", 3, "bb:{dev:orders#3}")
    assert keys.base.stream == "bb:{dev:orders}"
    for bad in ("orders#x", "orders#-1", "orders#5000"):
        with pytest.raises(backbone.ConfigurationError, match="partition"):
            backbone.Backbone("memory://").keys(bad)


async def test_a_garbled_partition_record_is_named_not_guessed(
    bus: backbone.Backbone,
) -> None:
    record = bus.keys(URI).partitions
    for garbage in ("abc", "0", "-3", "2.5"):
        await bus.redis.set(record, garbage)
        fresh = backbone.Backbone(bus.url, environment=bus.environment)
        target = bus if bus.embedded else fresh
        with pytest.raises(backbone.ConfigurationError, match="not a whole number"):
            await agree(target, target.keys(URI), 4)
        await fresh.close()
    await bus.redis.delete(record)
    await bus.redis.hset(record, "n", "4")
    with pytest.raises(backbone.ConfigurationError, match="another type"):
        await orders_producer(bus, URI).placed("order-1", 0)


async def test_a_producer_of_one_partition_writes_only_where_it_may(
    bus: backbone.Backbone,
) -> None:
    whole = orders_producer(bus, URI)
    await whole.noted("records the count")
    home = partition_for("order-1", 4)
    named = orders_producer(bus, f"{URI}#{home}")
    event_id = await named.placed("order-1", 0)
    assert event_id.stream == bus.keys(URI).of_partition(home).stream
    other = next(k for k in (f"o{n}" for n in range(50)) if partition_for(k, 4) != home)
    with pytest.raises(backbone.ConfigurationError, match="belongs to partition"):
        await named.placed(other, 0)
    with pytest.raises(backbone.ConfigurationError, match="does not exist"):
        await orders_producer(bus, f"{URI}#7").noted("nowhere")
    with pytest.raises(backbone.ConfigurationError, match="not partitioned"):
        await bus.producer("plain#2", None).publish(_noted_codec(), ("orphan",))
    assert await bus.redis.exists(bus.keys("plain#2").stream) == 0


def test_the_cli_names_the_partitions_of_a_partitioned_stream(
    real_url: str, environment: str
) -> None:
    import subprocess
    import sys

    async def setup() -> None:
        async with backbone.Backbone(real_url, environment=environment) as bus:
            await orders_producer(bus, URI).noted("x")

    asyncio.run(setup())
    for args in (
        ["inspect", URI],
        ["tail", URI, "--from", "beginning"],
        ["dlq", "list", "-u", URI],
        ["trim", URI, "--max-len", "10"],
    ):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "backbone",
                *args,
                "--redis-url",
                real_url,
                "--environment",
                environment,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode != 0, args
        assert "split into 4 partitions" in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr
