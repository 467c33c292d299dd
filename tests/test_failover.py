"""A master of a Redis Cluster dies (SIGKILL) while events are published and
consumed; its replica is promoted and both sides carry on by themselves.

Redis replicates asynchronously: a write the master acknowledged may not have
reached the replica when the master dies, and the promoted replica never had it.
These tests measure that window rather than deny it:

- without ``min_replicas``, acknowledged publishes missing from the stream after
  the failover are counted and reported (on loopback the window is small, but
  nothing promises it is empty);
- with ``ProducerOptions(min_replicas=1)`` every publish ``WAIT`` confirmed was
  on the replica that is promoted (each master has exactly one), so none of
  them may be lost; publishes ``WAIT`` could not confirm raise
  ``ReplicationTimeout`` and are counted (they may or may not have survived).

The dead node is then restarted, as a crashed server would be, and rejoins as
the new master's replica, so confirmed writes are possible again.

``pytest -s`` prints the figures.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

import backbone
from cluster import LocalCluster
from conftest import eventually, require_cluster_binaries
from typed_contracts.partitioned_gen import ORDERS, OrdersDispatcher, OrdersProducer

pytestmark = pytest.mark.cluster

CALLERS = 8  # publishing at once, so writes are in flight when the master dies
BEFORE = 300  # acknowledged publishes before the kill
WINDOW = 100  # publishes answered after the promotion, before the node rejoins
AFTER = 200  # acknowledged publishes after it rejoined


@pytest.fixture
def cluster() -> Iterator[LocalCluster]:
    """A cluster of its own: the test kills one of its masters."""
    require_cluster_binaries()
    local = LocalCluster(3, 1).start()
    try:
        yield local
    finally:
        local.stop()


class Seen:
    """The handler: records the sequence number of every event it handles."""

    def __init__(self) -> None:
        self.seqs: set[int] = set()

    async def placed(self, order_id: str, seq: int) -> None:
        self.seqs.add(seq)

    async def noted(self, text: str) -> None:
        raise AssertionError("no notes are published")


@dataclass
class Figures:
    acknowledged: dict[int, str] = field(default_factory=dict)  # seq -> entry id
    unconfirmed: dict[int, str] = field(default_factory=dict)  # ReplicationTimeout
    failed: dict[int, str] = field(default_factory=dict)  # other errors
    acknowledged_before_promotion: int = 0
    lost: list[int] = field(default_factory=list)
    unconfirmed_lost: list[int] = field(default_factory=list)
    handled_after: int = 0
    outage: float = 0.0

    def outcomes(self) -> int:
        return len(self.acknowledged) + len(self.unconfirmed) + len(self.failed)

    def report(self, title: str) -> None:
        print(
            f"\n{title}: {len(self.acknowledged)} acknowledged "
            f"({self.acknowledged_before_promotion} before the promotion), "
            f"{len(self.lost)} of them lost by the failover; "
            f"{len(self.unconfirmed)} ReplicationTimeout "
            f"({len(self.unconfirmed_lost)} of those lost); "
            f"{len(self.failed)} other errors {sorted(set(self.failed.values()))}; "
            f"longest gap between acknowledgements {self.outage:.1f}s; the consumer "
            f"handled "
            f"{self.handled_after} events published after the promotion",
            flush=True,
        )


async def fail_over(
    cluster: LocalCluster, options: backbone.ProducerOptions, partitions: int
) -> Figures:
    """Publish and consume, kill the master of the stream (of its partition 0),
    wait for its replica to take over, publish and consume on; the figures."""
    figures = Figures()
    bus = backbone.Backbone(cluster.url, environment="failover")
    uri = "failover.orders"
    keys = bus.keys(uri)
    producer = OrdersProducer(
        bus.producer(uri, ORDERS.spec, options, partitions=partitions)
    )
    streams = [
        keys.stream if partitions == 1 else keys.of_partition(p).stream
        for p in range(partitions)
    ]
    seen = Seen()
    subscription = await bus.subscribe(
        uri,
        OrdersDispatcher(seen),
        group="audit",
        start=backbone.StartFrom.BEGINNING,
        partitions=partitions,
    )
    counter = iter(range(1_000_000))
    stop = asyncio.Event()
    last_ack = time.monotonic()

    async def caller() -> None:
        nonlocal last_ack
        while not stop.is_set():
            seq = next(counter)
            try:
                event_id = await producer.placed(f"order-{seq % 16}", seq)
            except backbone.ReplicationTimeout as exc:
                figures.unconfirmed[seq] = str(exc.event_ids[0])
            except (backbone.PublishError, backbone.PublishTimeout) as exc:
                figures.failed[seq] = type(exc).__name__
            else:
                now = time.monotonic()
                figures.outage = max(figures.outage, now - last_ack)
                last_ack = now
                figures.acknowledged[seq] = str(event_id)

    callers = [asyncio.create_task(caller()) for _ in range(CALLERS)]
    try:
        await eventually(
            lambda: len(figures.acknowledged) >= BEFORE,
            timeout=30,
            message=f"{BEFORE} acknowledged publishes",
        )
        dead = cluster.master_of_key(streams[0])
        dead.kill()
        await asyncio.to_thread(cluster.wait_promoted, dead)
        figures.acknowledged_before_promotion = len(figures.acknowledged)
        first_after = next(counter)
        outcomes = figures.outcomes()
        await eventually(
            lambda: figures.outcomes() >= outcomes + WINDOW,
            timeout=60,
            message=f"{WINDOW} publishes answered after the promotion",
        )
        # The crashed server comes back, empty, as the new master's replica.
        dead.start()
        await asyncio.to_thread(dead.wait_ready, time.monotonic() + 30)
        await asyncio.to_thread(cluster.wait_healthy, 60)
        mark = len(figures.acknowledged)
        await eventually(
            lambda: len(figures.acknowledged) >= mark + AFTER,
            timeout=60,
            message=f"{AFTER} acknowledged publishes after the dead node rejoined",
        )
        stop.set()
        await asyncio.gather(*callers)
        after = {seq for seq in figures.acknowledged if seq > first_after}
        # The consumer, never restarted, handles what was published after.
        await eventually(
            lambda: after <= seen.seqs,
            timeout=60,
            message="the consumer to handle every event published after the failover",
        )
        figures.handled_after = len(after & seen.seqs)
        stored = {
            f"{stream}/{entry_id.decode()}"
            for stream in streams
            for entry_id, _fields in await bus.redis.xrange(stream)
        }
        figures.lost = sorted(
            seq
            for seq, entry_id in figures.acknowledged.items()
            if entry_id not in stored
        )
        figures.unconfirmed_lost = sorted(
            seq
            for seq, entry_id in figures.unconfirmed.items()
            if entry_id not in stored
        )
    finally:
        stop.set()
        for task in callers:
            task.cancel()
        await asyncio.gather(*callers, return_exceptions=True)
        await subscription.stop()
        await bus.close()
    return figures


@pytest.mark.parametrize("partitions", [1, 4])
async def test_without_min_replicas_a_failover_is_ridden_and_its_losses_counted(
    cluster: LocalCluster, partitions: int
) -> None:
    figures = await fail_over(
        cluster,
        backbone.ProducerOptions(publish_timeout=60.0, min_replicas=0),
        partitions,
    )
    figures.report(f"{partitions} partition(s), min_replicas=0")
    assert figures.failed == {}, "a publish gave up within publish_timeout"
    assert figures.unconfirmed == {}
    assert len(figures.acknowledged) >= BEFORE + WINDOW + AFTER
    # Asynchronous replication: losses are possible, and measured, not denied.
    assert 0 <= len(figures.lost) <= figures.acknowledged_before_promotion
    assert figures.handled_after > 0


@pytest.mark.parametrize("partitions", [1, 4])
async def test_with_min_replicas_no_confirmed_publish_is_lost(
    cluster: LocalCluster, partitions: int
) -> None:
    figures = await fail_over(
        cluster,
        backbone.ProducerOptions(
            publish_timeout=60.0, min_replicas=1, replica_timeout=0.5
        ),
        partitions,
    )
    figures.report(f"{partitions} partition(s), min_replicas=1")
    assert figures.failed == {}, "a publish gave up within publish_timeout"
    assert figures.lost == [], "a publish WAIT confirmed was lost by the failover"
    # With its only replica promoted, the new master has none until the dead node
    # rejoins: publishes meanwhile are written but cannot be confirmed.
    assert figures.unconfirmed, "no publish ran into the window without a replica"
    assert figures.handled_after > 0
