"""The doorbell: the readers of many partitions wait with one Pub/Sub connection
per node, on a single redis-server and on a Redis Cluster of three masters (one
replica each) of this module's own; its last two tests move a slot and kill a
master there. Losses on a single server go through the misbehaving proxy
(tests/proxy.py): Redis unreachable, and a connection gone silent.

Connections are counted on the servers (``CLIENT LIST``, by the doorbell's
client name); every wait on a ring has a deadline, so a missing ring fails
instead of hanging.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlparse

import pytest
import redis
import redis.asyncio as aioredis

import backbone
from backbone.doorbell import CLIENT_NAME, bell
from backbone.events import as_text
from backbone.partitions import agree, partition_for
from cluster import LocalCluster
from conftest import drop_environment, eventually, require_cluster_binaries
from proxy import FlakyProxy
from typed_contracts.partitioned_gen import (
    ORDERS,
    OrdersAggregate,
    OrdersDispatcher,
    OrdersProducer,
)

PARTITIONS = 24
RING = 10.0  # seconds a ring may take before the test fails (it takes ~1 ms)


@pytest.fixture(scope="module")
def local_cluster() -> Iterator[LocalCluster]:
    require_cluster_binaries()
    cluster = LocalCluster(3, 1).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["real", pytest.param("cluster", marks=pytest.mark.cluster)])
def served(request: pytest.FixtureRequest) -> str:
    """A real Redis: a single server, or this module's cluster."""
    if request.param == "cluster":
        return str(request.getfixturevalue("local_cluster").url)
    return str(request.getfixturevalue("real_url"))


@pytest.fixture
async def bus(served: str, environment: str) -> AsyncIterator[backbone.Backbone]:
    connection = backbone.Backbone(served, environment=environment)
    try:
        yield connection
    finally:
        try:
            await drop_environment(connection)
        finally:
            await connection.close()


def masters(bus: backbone.Backbone, cluster: LocalCluster | None) -> list[int]:
    """The ports of the servers that serve writes now."""
    if cluster is None:
        port = bus.redis.connection_pool.connection_kwargs["port"]
        return [int(port)]
    return [node.port for node in cluster.master_nodes()]


def cluster_of(request: pytest.FixtureRequest, bus: backbone.Backbone) -> Any:
    return request.getfixturevalue("local_cluster") if bus.cluster else None


async def doorbell_clients(ports: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Each server's doorbell connections (CLIENT LIST rows)."""
    found: dict[int, list[dict[str, Any]]] = {}
    for port in ports:
        client = aioredis.Redis(host="127.0.0.1", port=port)
        try:
            rows = await client.client_list()
        finally:
            await client.aclose()
        found[port] = [row for row in rows if row.get("name") == CLIENT_NAME]
    return found


def partition_streams(bus: backbone.Backbone) -> list[str]:
    return [bus.keys(f"orders#{p}").stream for p in range(PARTITIONS)]


def expected_channels(
    bus: backbone.Backbone, cluster: LocalCluster | None, streams: list[str]
) -> dict[int, int]:
    """How many of STREAMS' bells each master serves."""
    if cluster is None:
        return {masters(bus, None)[0]: len(streams)} if streams else {}
    counts: dict[int, int] = {}
    for stream in streams:
        port = cluster.master_of_key(bell(stream)).port
        counts[port] = counts.get(port, 0) + 1
    return counts


async def one_per_master(
    bus: backbone.Backbone, cluster: LocalCluster | None, streams: list[str]
) -> dict[int, list[dict[str, Any]]]:
    """Wait until every stream's bell is subscribed, with exactly one doorbell
    connection on each master that serves one (holding that master's bells)
    and none elsewhere; the connections."""
    expected = expected_channels(bus, cluster, streams)
    seen: dict[int, list[dict[str, Any]]] = {}

    async def settled() -> bool:
        nonlocal seen
        if not all(bus.doorbell.listening(s) for s in streams):
            return False
        seen = await doorbell_clients(masters(bus, cluster))
        return all(
            [int(row["ssub"]) for row in rows]
            == ([expected[port]] if port in expected else [])
            for port, rows in seen.items()
        )

    await eventually(settled, timeout=30, message=f"doorbells as {expected}")
    return seen


class PartitionWriter:
    """Writes ``placed`` events to one partition of ``orders``: each key given is
    turned into one that belongs there (a producer of one partition refuses
    another partition's keys), after the stream's count is recorded."""

    def __init__(self, bus: backbone.Backbone, partition: int) -> None:
        self.bus = bus
        self.partition = partition

    async def placed(self, key: str, seq: int) -> backbone.EventId:
        bus, partition = self.bus, self.partition
        await agree(bus, bus.keys("orders"), PARTITIONS)
        mine = next(
            f"{key}~{n}"
            for n in range(10_000)
            if partition_for(f"{key}~{n}", PARTITIONS) == partition
        )
        uri = f"orders#{partition}"
        producer = OrdersProducer(bus.producer(uri, ORDERS.spec))
        return await producer.placed(mine, seq)


def producer_of(bus: backbone.Backbone, stream_partition: int) -> PartitionWriter:
    return PartitionWriter(bus, stream_partition)


async def rings(bus: backbone.Backbone, partition: int, seq: int = 0) -> None:
    """A publish to PARTITION sets the event its readers hold, and no other."""
    streams = partition_streams(bus)
    events = [bus.wakeup_event(s) for s in streams]
    assert all(e is not None and not e.is_set() for e in events)
    await producer_of(bus, partition).placed(f"order-{seq}", seq)
    mine = events[partition]
    assert mine is not None
    await asyncio.wait_for(mine.wait(), RING)
    others = [p for p, e in enumerate(events) if e is not None and e.is_set()]
    assert others == [partition]


# --- one connection per master, and its rings -----------------------------------


async def test_one_connection_per_master_whatever_the_partitions(
    bus: backbone.Backbone, request: pytest.FixtureRequest
) -> None:
    cluster = cluster_of(request, bus)
    streams = partition_streams(bus)
    for stream in streams:
        bus.doorbell.watch(stream)
    for stream in streams:  # a second subscription of the same partitions
        bus.doorbell.watch(stream)
    found = await one_per_master(bus, cluster, streams)
    serving = [port for port, rows in found.items() if rows]
    assert bus.doorbell.connections == len(serving)
    # 48 watches of 24 partitions: as many connections as masters serving them
    # (one on a single server; on the cluster 3, unless the 24 slots missed one).
    assert len(serving) == len(expected_channels(bus, cluster, streams))
    assert 1 <= len(serving) <= len(masters(bus, cluster))
    assert sum(int(rows[0]["ssub"]) for rows in found.values() if rows) == PARTITIONS


async def test_a_write_to_any_partition_rings_its_readers_event(
    bus: backbone.Backbone, request: pytest.FixtureRequest
) -> None:
    cluster = cluster_of(request, bus)
    streams = partition_streams(bus)
    assert bus.wakeup_event(streams[0]) is None  # not watched: XREAD BLOCK
    for stream in streams:
        bus.doorbell.watch(stream)
    await one_per_master(bus, cluster, streams)
    for partition in range(PARTITIONS):
        await rings(bus, partition, partition)


async def test_an_aggregate_append_rings_too(
    bus: backbone.Backbone, request: pytest.FixtureRequest
) -> None:
    class Order(OrdersAggregate[dict[str, int]]):
        def __init__(self) -> None:
            super().__init__({})

    repository = bus.aggregates("ledger", Order)
    stream = repository.keys_of("order-7").stream
    bus.doorbell.watch(stream)
    await eventually(lambda: bus.doorbell.listening(stream), timeout=30)
    event = bus.wakeup_event(stream)
    assert event is not None
    order = await repository.load("order-7")
    order.record_placed("order-7", 1)
    await repository.save(order)
    await asyncio.wait_for(event.wait(), RING)


async def test_unwatch_counts_and_hands_back_to_xread(
    bus: backbone.Backbone, request: pytest.FixtureRequest
) -> None:
    cluster = cluster_of(request, bus)
    streams = partition_streams(bus)[:2]
    for stream in (*streams, streams[0]):
        bus.doorbell.watch(stream)
    await one_per_master(bus, cluster, streams)
    held = bus.wakeup_event(streams[0])
    assert held is not None
    bus.doorbell.unwatch(streams[0])  # watched twice: still watched
    assert bus.wakeup_event(streams[0]) is held
    assert not held.is_set()
    bus.doorbell.unwatch(streams[0])
    assert held.is_set()  # its readers go back to waiting by themselves
    assert bus.wakeup_event(streams[0]) is None
    await one_per_master(bus, cluster, streams[1:])
    bus.doorbell.unwatch(streams[1])
    await one_per_master(bus, cluster, [])
    assert bus.doorbell.connections == 0


async def test_a_subscription_of_a_watched_partition_waits_on_the_doorbell(
    served: str, environment: str, request: pytest.FixtureRequest
) -> None:
    """Its reader never blocks in XREAD: a block of 30 s, and still the event
    is handled at once, woken by the ring."""
    seen: asyncio.Queue[int] = asyncio.Queue()

    class Handler:
        async def placed(self, order_id: str, seq: int) -> None:
            seen.put_nowait(seq)

        async def noted(self, text: str) -> None:
            raise AssertionError("no notes are published")

    async with backbone.Backbone(
        served, environment=environment, command_timeout=60
    ) as bus:
        try:
            stream = bus.keys("orders#5").stream
            bus.doorbell.watch(stream)
            await eventually(lambda: bus.doorbell.listening(stream), timeout=30)
            ports = masters(bus, cluster_of(request, bus))
            xreads = await xread_calls(ports)
            await agree(bus, bus.keys("orders"), PARTITIONS)
            async with bus.subscribe(
                "orders#5",
                OrdersDispatcher(Handler()),
                group="g",
                options=backbone.SubscriptionOptions(block=30.0),
            ):
                for seq in range(3):
                    await producer_of(bus, 5).placed("order", seq)
                    assert await asyncio.wait_for(seen.get(), RING) == seq
            assert await xread_calls(ports) == xreads
        finally:
            await drop_environment(bus)


async def xread_calls(ports: list[int]) -> int:
    """XREAD calls the servers at PORTS have served so far."""
    total = 0
    for port in ports:
        client = aioredis.Redis(host="127.0.0.1", port=port)
        try:
            stats = await client.info("commandstats")
        finally:
            await client.aclose()
        total += int(stats.get("cmdstat_xread", {}).get("calls", 0))
    return total


# --- losses ---------------------------------------------------------------------


async def test_a_killed_connection_resubscribes_and_rings_again(
    bus: backbone.Backbone, request: pytest.FixtureRequest
) -> None:
    cluster = cluster_of(request, bus)
    streams = partition_streams(bus)
    for stream in streams:
        bus.doorbell.watch(stream)
    before = await one_per_master(bus, cluster, streams)
    waiting = bus.wakeup_event(streams[3])
    assert waiting is not None
    killed = set()
    for port, rows in before.items():
        client = aioredis.Redis(host="127.0.0.1", port=port)
        try:
            for row in rows:
                await client.client_kill_filter(_id=row["id"])
                killed.add((port, row["id"]))
        finally:
            await client.aclose()
    # A reader waiting across the loss is woken (to read what was written
    # while nobody listened) without any write.
    await asyncio.wait_for(waiting.wait(), RING)

    async def fresh() -> bool:
        found = await one_per_master(bus, cluster, streams)
        return not {(p, row["id"]) for p, rows in found.items() for row in rows} & (
            killed
        )

    await eventually(fresh, timeout=30, message="new doorbell connections")
    for partition in (0, 11, 23):
        await rings(bus, partition, partition)


async def test_while_it_cannot_listen_its_readers_are_woken_every_poll(
    proxy: FlakyProxy, real_url: str, environment: str
) -> None:
    async with backbone.Backbone(proxy.url, environment=environment) as bus:
        bus.doorbell.poll = 0.05
        stream = bus.keys("orders#0").stream
        bus.doorbell.watch(stream)
        await eventually(lambda: bus.doorbell.listening(stream))
        proxy.refuse(True)  # Redis is "down": every connection cut, none made
        await eventually(lambda: not bus.doorbell.listening(stream))
        for _ in range(3):  # woken again and again, with nothing written
            event = bus.wakeup_event(stream)
            assert event is not None
            await asyncio.wait_for(event.wait(), RING)
        assert not bus.doorbell.listening(stream)
        proxy.refuse(False)
        await eventually(lambda: bus.doorbell.listening(stream), timeout=30)
        await rings_after_write(bus, real_url, environment, stream)


async def test_a_silent_connection_is_noticed_and_replaced(
    proxy: FlakyProxy, real_url: str, environment: str
) -> None:
    async with backbone.Backbone(
        proxy.url, environment=environment, command_timeout=1.0
    ) as bus:
        bus.doorbell.heartbeat = 0.05
        stream = bus.keys("orders#0").stream
        bus.doorbell.watch(stream)
        await eventually(lambda: bus.doorbell.listening(stream))
        port = int(urlparse(real_url).port or 6379)
        before = {row["id"] for row in (await doorbell_clients([port]))[port]}
        proxy.hold()  # what the doorbell sends no longer arrives: PING unanswered

        async def replaced() -> bool:
            rows = (await doorbell_clients([port]))[port]
            fresh = [row for row in rows if row["id"] not in before]
            return bool(fresh) and bus.doorbell.listening(stream)

        await eventually(replaced, timeout=30, message="a new doorbell connection")
        await rings_after_write(bus, real_url, environment, stream)


async def rings_after_write(
    bus: backbone.Backbone, url: str, environment: str, stream: str
) -> None:
    """A write (through a connection of its own, straight to URL) to STREAM
    sets the event BUS's readers of STREAM hold."""
    event = bus.wakeup_event(stream)
    assert event is not None
    async with backbone.Backbone(url, environment=environment) as writer:
        try:
            partition = writer.keys("orders#0")
            assert partition.stream == stream
            await producer_of(writer, 0).placed("order", 1)
            await asyncio.wait_for(event.wait(), RING)
        finally:
            await drop_environment(writer)


async def test_only_partitions_ring(real_bus: backbone.Backbone) -> None:
    """A write to an unpartitioned stream rings nothing (it would cost a cluster
    bus message per write, heard by no one), and it cannot be watched."""
    bus = real_bus
    whole, part = bus.keys("plain").stream, bus.keys("orders#1").stream
    with pytest.raises(backbone.ConfigurationError, match="not the stream key of a"):
        bus.doorbell.watch(whole)
    listener = bus.redis.pubsub()
    try:
        await listener.ssubscribe(bell(whole), bell(part))
        await OrdersProducer(bus.producer("plain", ORDERS.spec, partitions=1)).placed(
            "order", 1
        )
        await producer_of(bus, 1).placed("order", 2)
        # One connection, so the messages come in the order they were sent: the
        # partition's ring is the first.
        deadline = time.monotonic() + RING
        heard: list[str] = []
        while not heard and time.monotonic() < deadline:
            message = await listener.get_message(
                ignore_subscribe_messages=True, timeout=RING
            )
            if message is not None:
                heard.append(as_text(message["channel"]))
        assert heard == [bell(part)]
    finally:
        await listener.aclose()


async def test_embedded_redis_keeps_its_in_process_wakeups(environment: str) -> None:
    async with backbone.Backbone("memory://", environment=environment) as bus:
        stream = bus.keys("orders#2").stream
        bus.doorbell.watch(stream)
        assert not bus.doorbell.listening(stream)
        event = bus.wakeup_event(stream)
        assert event is not None
        event_id = await producer_of(bus, 2).placed("order", 1)
        assert event.is_set()
        assert await bus.redis.xlen(stream) == 1
        assert event_id.stream == stream
        bus.doorbell.unwatch(stream)
        assert bus.doorbell.connections == 0


async def test_embedded_subscription_still_wakes(environment: str) -> None:
    seen: asyncio.Queue[int] = asyncio.Queue()

    class Handler:
        async def placed(self, order_id: str, seq: int) -> None:
            seen.put_nowait(seq)

        async def noted(self, text: str) -> None:
            raise AssertionError("no notes are published")

    async with backbone.Backbone(
        "memory://", environment=environment, command_timeout=60
    ) as bus:
        bus.doorbell.watch(bus.keys("orders#1").stream)
        await agree(bus, bus.keys("orders"), PARTITIONS)
        async with bus.subscribe(
            "orders#1",
            OrdersDispatcher(Handler()),
            group="g",
            options=backbone.SubscriptionOptions(block=30.0),
        ):
            for seq in range(3):
                await producer_of(bus, 1).placed("order", seq)
                assert await asyncio.wait_for(seen.get(), RING) == seq


def move_slot(cluster: LocalCluster, key: str, target: Any) -> None:
    """Give KEY's slot (holding no key) to the master TARGET, the way a
    resharding tool does: importing/migrating, then every master is told."""
    owner = cluster.master_of_key(key)
    clients = {
        node.port: redis.Redis(host="127.0.0.1", port=node.port)
        for node in cluster.master_nodes()
    }
    try:
        slot = int(clients[owner.port].execute_command("CLUSTER", "KEYSLOT", key))
        ids = {
            port: client.execute_command("CLUSTER", "MYID")
            for port, client in clients.items()
        }
        target_id, owner_id = ids[target.port], ids[owner.port]
        clients[target.port].execute_command(
            "CLUSTER", "SETSLOT", slot, "IMPORTING", owner_id
        )
        clients[owner.port].execute_command(
            "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id
        )
        order = [target.port, owner.port]
        order += [p for p in clients if p not in order]
        for port in order:
            clients[port].execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    finally:
        for client in clients.values():
            client.close()


@pytest.mark.cluster
async def test_a_moved_slot_is_heard_at_its_new_master(
    local_cluster: LocalCluster, environment: str
) -> None:
    """The old master drops the slot's subscriptions (``sunsubscribe``); the
    doorbell learns the slot map again and subscribes at the new one."""
    cluster = local_cluster
    bus = backbone.Backbone(cluster.url, environment=environment)
    try:
        stream = bus.keys("orders#0").stream  # nothing written: the slot is empty
        bus.doorbell.watch(stream)
        await one_per_master(bus, cluster, [stream])
        owner = cluster.master_of_key(stream)
        target = next(n for n in cluster.master_nodes() if n is not owner)
        waiting = bus.wakeup_event(stream)
        assert waiting is not None
        await asyncio.to_thread(move_slot, cluster, stream, target)
        await asyncio.wait_for(waiting.wait(), RING)  # woken while unsure
        assert cluster.master_of_key(stream) is target
        found = await one_per_master(bus, cluster, [stream])
        assert found[target.port]
        assert not found[owner.port]
        event = bus.wakeup_event(stream)
        assert event is not None
        assert not event.is_set()
        await producer_of(bus, 0).placed("order", 1)
        await asyncio.wait_for(event.wait(), RING)
    finally:
        try:
            await drop_environment(bus)
        finally:
            await bus.close()


@pytest.mark.cluster
async def test_after_a_failover_the_promoted_replica_rings(
    local_cluster: LocalCluster, environment: str
) -> None:
    """Last in this module: it kills a master of the module's cluster."""
    cluster = local_cluster
    bus = backbone.Backbone(cluster.url, environment=environment)
    try:
        streams = partition_streams(bus)
        for stream in streams:
            bus.doorbell.watch(stream)
        await one_per_master(bus, cluster, streams)
        victim = 0
        dead = cluster.master_of_key(streams[victim])
        waiting = bus.wakeup_event(streams[victim])
        assert waiting is not None
        dead.kill()
        # Its readers are woken while the doorbell cannot hear the bell.
        await asyncio.wait_for(waiting.wait(), RING)
        promoted = await asyncio.to_thread(cluster.wait_promoted, dead)
        found = await one_per_master(bus, cluster, streams)
        assert found[promoted.port], "no doorbell on the promoted replica"
        assert dead.port not in found
        for partition in range(PARTITIONS):  # the promoted replica's among them
            await rings(bus, partition, partition)
    finally:
        try:
            await drop_environment(bus)
        finally:
            await bus.close()
