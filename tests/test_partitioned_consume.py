"""Consumer groups over partitioned streams: shared and ordered subscriptions.

Shared: every member reads every partition, the group shares the events.
Ordered: one member holds a partition at a time (a lease), events in entry
order, handovers on join, clean stop and death, and fencing of a member that
lost its lease without knowing it. On a real cluster, with processes killed:
test_ordered_cluster.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import defaultdict
from typing import Any

import pytest
import redis.exceptions as rex

import backbone
import backbone.consume.partitioned as partitioned
from backbone.consume.leases import Lease, lease_key
from backbone.consume.membership import assign
from backbone.consume.ordered import OrderedParts
from backbone.consume.partitioned import PartitionedSubscription
from backbone.partitions import agree, partition_for
from conftest import drop_environment, eventually
from typed_contracts.partitioned_gen import (
    ORDERS,
    OrdersDispatcher,
    OrdersProducer,
    orders_producer,
    subscribe_orders,
)

URI = "orders"
PARTITIONS = 4


@dataclasses.dataclass(frozen=True)
class Handled:
    member: str
    key: str
    seq: int
    stream: str
    entry_id: str
    token: int | None
    partition: int | None
    deliveries: int


class Orders:
    """A handler of the Orders contract that records what it handles and checks
    that no two handlers run on one partition at once."""

    def __init__(
        self,
        member: str,
        log: list[Handled],
        active: dict[str, int] | None = None,
        overlaps: list[str] | None = None,
    ) -> None:
        self.member = member
        self.log = log
        self.active = active if active is not None else defaultdict(int)
        self.overlaps = overlaps if overlaps is not None else []
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.fail = False
        self.cancelled = 0

    async def placed(
        self,
        order_id: str,
        seq: int,
        *,
        context: backbone.EventContext = backbone.NO_CONTEXT,
    ) -> None:
        stream = context.id.stream
        self.active[stream] += 1
        if self.active[stream] > 1:
            self.overlaps.append(f"{stream} {order_id} {seq} by {self.member}")
        try:
            lease = context.lease
            self.log.append(
                Handled(
                    self.member,
                    order_id,
                    seq,
                    stream,
                    context.id.id,
                    None if lease is None else lease.token,
                    None if lease is None else lease.partition,
                    context.delivery_count,
                )
            )
            self.entered.set()
            if self.gate is not None:
                await self.gate.wait()
            else:
                await asyncio.sleep(0.001)
            if self.fail:
                raise RuntimeError("handler failed after the stall")
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.active[stream] -= 1

    async def noted(self, text: str) -> None:
        pass


def ordered(ttl: float = 1.0, **more: Any) -> backbone.SubscriptionOptions:
    return backbone.SubscriptionOptions(ordered=True, lease_ttl=ttl, **more)


def subscribe(
    bus: backbone.Backbone,
    handler: Orders,
    options: backbone.SubscriptionOptions | None = None,
    group: str = "g",
) -> PartitionedSubscription:
    sub = subscribe_orders(
        bus,
        URI,
        handler,
        group=group,
        consumer=handler.member,
        start=backbone.StartFrom.BEGINNING,
        options=options,
    )
    assert isinstance(sub, PartitionedSubscription)
    return sub


async def publish(bus: backbone.Backbone, keys: int, events: int) -> None:
    """EVENTS steps of each of KEYS orders, each order's steps in order."""
    producer = orders_producer(bus, URI)
    for seq in range(events):
        await asyncio.gather(*(producer.placed(f"o{k}", seq) for k in range(keys)))


def first_handling(log: list[Handled]) -> dict[str, list[int]]:
    """Per key, the steps in the order they were first handled."""
    seen: set[tuple[str, int]] = set()
    order: dict[str, list[int]] = defaultdict(list)
    for h in log:
        if (h.key, h.seq) not in seen:
            seen.add((h.key, h.seq))
            order[h.key].append(h.seq)
    return dict(order)


def unique(log: list[Handled]) -> int:
    return len({(h.key, h.seq) for h in log})


async def balanced(*subs: PartitionedSubscription) -> bool:
    held = [s.held for s in subs]
    flat = sorted(p for h in held for p in h)
    return flat == list(range(PARTITIONS)) and all(held)


async def stop_all(*subs: PartitionedSubscription) -> None:
    await asyncio.gather(*(s.stop() for s in subs))


def stall(sub: PartitionedSubscription) -> None:
    """Freeze SUB's membership and lease renewals, as a paused process would
    (its handlers keep running): its lease expires in Redis while it believes
    it still holds its partitions."""
    parts = sub._parts
    assert isinstance(parts, OrderedParts)

    async def frozen(*args: object) -> None:
        return None

    parts._tick = frozen  # type: ignore[method-assign]
    parts._renew = frozen  # type: ignore[method-assign]
    for holding in parts.holdings.values():
        holding.lease._valid_until = float("inf")


# --- shared ---------------------------------------------------------------------------


async def test_shared_members_share_every_partition_each_event_once(
    bus: backbone.Backbone,
) -> None:
    log: list[Handled] = []
    a, b = Orders("a", log), Orders("b", log)
    sub_a, sub_b = subscribe(bus, a), subscribe(bus, b)
    await sub_a
    await sub_b
    assert sub_a.held == sub_b.held == list(range(PARTITIONS))
    assert len(sub_a.subscriptions) == PARTITIONS
    streams = [part.stream for part in sub_a.parts]
    if not bus.embedded:  # the readers wait on the doorbell, one line per node
        await eventually(lambda: all(bus.doorbell.listening(s) for s in streams))
    await publish(bus, keys=12, events=10)
    await eventually(lambda: unique(log) == 120, message="all 120 events handled")
    await eventually(lambda: sub_a.in_flight == sub_b.in_flight == 0)
    # Exactly once overall: no event was handled twice.
    assert len(log) == 120
    assert sub_a.stats.handled + sub_b.stats.handled == 120
    assert sub_a.stats.acked + sub_b.stats.acked == 120
    # Each member saw each partition's events in entry order.
    for member in "ab":
        for stream in {h.stream for h in log}:
            ids = [h.entry_id for h in log if h.member == member and h.stream == stream]
            assert ids == sorted(ids, key=backbone.events.id_key), (member, stream)
    # Every event went to its key's partition; shared mode has no lease.
    whole = bus.keys(URI)
    for h in log:
        assert h.stream == whole.of_partition(partition_for(h.key, PARTITIONS)).stream
        assert h.token is None
    await stop_all(sub_a, sub_b)
    assert all(bus.doorbell.current(s) is None for s in streams)
    assert not sub_a.running
    assert not sub_b.running
    await sub_a.completion


async def test_a_partition_that_cannot_start_fails_the_whole_subscription(
    bus: backbone.Backbone,
) -> None:
    broken = bus.keys(URI).of_partition(2)
    await bus.redis.set(broken.stream, "not a stream")
    sub = subscribe(bus, Orders("a", []))
    with pytest.raises(Exception, match="WRONGTYPE"):
        await sub
    assert not any(s.running for s in sub.subscriptions)
    await bus.redis.delete(broken.stream)


# --- ordered --------------------------------------------------------------------------


async def test_ordered_one_holder_per_partition_and_per_key_order_through_a_join(
    bus: backbone.Backbone,
) -> None:
    log: list[Handled] = []
    active: dict[str, int] = defaultdict(int)
    overlaps: list[str] = []
    handlers = [Orders(name, log, active, overlaps) for name in ("a", "b", "c")]
    subs = [subscribe(bus, h, ordered()) for h in handlers]
    await subs[0]
    await subs[1]
    await eventually(lambda: balanced(subs[0], subs[1]), message="two members")
    doubly_held: list[str] = []

    async def sample() -> None:
        while True:
            for p in range(PARTITIONS):
                holders = [s.consumer for s in subs if p in s.held]
                if len(holders) > 1:
                    doubly_held.append(f"partition {p}: {holders}")
            await asyncio.sleep(0.002)

    sampler = asyncio.ensure_future(sample())
    producer = orders_producer(bus, URI)
    rounds = 0

    async def step() -> None:
        # One more step of every order, once the handlers caught up with the
        # step before last: events keep flowing through the handovers.
        nonlocal rounds
        await eventually(lambda: unique(log) >= 16 * (rounds - 1))
        await asyncio.gather(*(producer.placed(f"o{k}", rounds) for k in range(16)))
        rounds += 1

    try:
        for _ in range(3):
            await step()
        await subs[2]  # a third member joins while events flow
        while not await balanced(*subs) and rounds < 2000:
            await step()
        for _ in range(3):
            await step()
        await eventually(lambda: unique(log) == 16 * rounds, message="all handled")
    finally:
        sampler.cancel()
    assert not overlaps, overlaps
    assert not doubly_held, doubly_held
    assert first_handling(log) == {f"o{k}": list(range(rounds)) for k in range(16)}
    # The leases in Redis name exactly the members that hold the partitions.
    whole = bus.keys(URI)
    for p in range(PARTITIONS):
        value = await bus.redis.get(lease_key(whole.of_partition(p), "g"))
        assert value is not None
        owner = value.decode().split(" ", 1)[1]
        (holder,) = [s for s in subs if p in s.held]
        assert owner.startswith(f"{holder.consumer}~")
    # Handlers saw their partition and a token that grows with each holder.
    for h in log:
        assert h.partition == partition_for(h.key, PARTITIONS)
        assert h.token is not None
        assert h.token >= 1
    # The newcomer handled the partitions it took.
    assert {h.partition for h in log if h.member == "c"} == set(subs[2].held)
    await stop_all(*subs)


async def test_a_clean_stop_hands_partitions_over_without_waiting_for_the_ttl(
    bus: backbone.Backbone,
) -> None:
    log: list[Handled] = []
    a, b = Orders("a", log), Orders("b", log)
    # A lease lasting far longer than the test may wait: a handover that waited
    # for it to expire would time out.
    sub_a, sub_b = subscribe(bus, a, ordered(ttl=60)), subscribe(bus, b, ordered(60))
    await sub_a
    await sub_b
    await eventually(lambda: balanced(sub_a, sub_b), message="balanced")
    await publish(bus, keys=8, events=5)
    await eventually(lambda: unique(log) == 40)
    await sub_a.stop()
    assert sub_a.held == []
    await eventually(
        lambda: sub_b.held == list(range(PARTITIONS)),
        timeout=10,
        message="b holding every partition",
    )
    if not bus.embedded:  # the partitions held are watched by the doorbell
        streams = [part.stream for part in sub_b.parts]
        await eventually(lambda: all(bus.doorbell.listening(s) for s in streams))
    await publish(bus, keys=8, events=3)  # steps 0..2 again: seq restarts
    await eventually(lambda: len(log) == 64)
    assert {h.member for h in log[40:]} == {"b"}
    assert first_handling(log[40:]) == {f"o{k}": [0, 1, 2] for k in range(8)}
    await sub_b.stop()
    # Released, not left to expire: nothing holds the partitions now.
    whole = bus.keys(URI)
    for p in range(PARTITIONS):
        assert await bus.redis.get(lease_key(whole.of_partition(p), "g")) is None


async def test_a_member_that_joins_takes_its_share(bus: backbone.Backbone) -> None:
    log: list[Handled] = []
    a, b = Orders("a", log), Orders("b", log)
    # Idempotency marks too are written through the lease.
    sub_a = subscribe(bus, a, ordered(idempotent=True))
    await sub_a
    await eventually(lambda: sub_a.held == list(range(PARTITIONS)))
    await publish(bus, keys=8, events=4)
    await eventually(lambda: unique(log) == 32)
    whole = bus.keys(URI)

    async def marked() -> bool:
        done = [whole.of_partition(p).done("g") for p in range(PARTITIONS)]
        return sum([await bus.redis.zcard(key) for key in done]) == 32

    await eventually(marked, message="32 idempotency marks")
    sub_b = subscribe(bus, b, ordered(idempotent=True))
    await sub_b
    await eventually(lambda: balanced(sub_a, sub_b), message="b took its share")
    assert len(sub_a.held) == len(sub_b.held) == 2
    await publish(bus, keys=8, events=4)
    await eventually(lambda: len(log) == 64)
    handled_by_b = {h.partition for h in log[32:] if h.member == "b"}
    assert handled_by_b == set(sub_b.held)
    await stop_all(sub_a, sub_b)


async def test_a_new_owner_handles_a_dead_owners_pending_entries_first_in_order(
    bus: backbone.Backbone,
) -> None:
    await publish(bus, keys=1, events=10)  # one key: one partition
    whole = bus.keys(URI)
    part = whole.of_partition(partition_for("o0", PARTITIONS))
    # A member that died: it read five entries (pending with it) and its lease,
    # token 7, has not expired yet.
    await bus.redis.xgroup_create(part.stream, "g", id="0")
    await bus.redis.xreadgroup("g", "dead", {part.stream: ">"}, count=5)
    await bus.redis.set(f"{part.stream}:fence:g", 7)
    await bus.redis.set(lease_key(part, "g"), "7 dead~0", px=700)
    log: list[Handled] = []
    sub = subscribe(bus, Orders("b", log), ordered())
    await sub
    await eventually(lambda: unique(log) == 10, message="all ten steps handled")
    assert [h.seq for h in log] == list(range(10))
    # The dead member's five came first (a second delivery), then the new ones,
    # all under the next token: the dead member's fence no longer writes.
    assert [h.deliveries for h in log] == [2] * 5 + [1] * 5
    assert {h.token for h in log} == {8}
    await eventually(lambda: sub.in_flight == 0)
    pending = await bus.redis.xpending(part.stream, "g")
    assert pending["pending"] == 0
    await sub.stop()


@pytest.mark.parametrize("late", ["ack", "dead-letter"])
async def test_a_member_whose_lease_expired_cannot_ack_or_dead_letter(
    bus: backbone.Backbone, late: str
) -> None:
    retry = backbone.RetryPolicy(max_deliveries=1)
    log: list[Handled] = []
    a, b = Orders("a", log), Orders("b", log)
    a.gate, b.gate = asyncio.Event(), asyncio.Event()
    a.fail = late == "dead-letter"
    sub_a = subscribe(bus, a, ordered(ttl=0.6, retry=retry, shutdown_timeout=30))
    await sub_a
    await eventually(lambda: sub_a.held == list(range(PARTITIONS)))
    await publish(bus, keys=1, events=1)
    part = bus.keys(URI).of_partition(partition_for("o0", PARTITIONS))
    await a.entered.wait()  # a handles the event, and stalls
    stall(sub_a)
    sub_b = subscribe(bus, b, ordered(ttl=0.6))
    await sub_b
    await eventually(
        lambda: len(log) == 2, timeout=10, message="b handling the event again"
    )
    assert [(h.member, h.entry_id) for h in log] == [("a", log[0].entry_id)] * 1 + [
        ("b", log[0].entry_id)
    ]
    assert log[1].token is not None
    assert log[0].token is not None
    assert log[1].token > log[0].token
    # Now the stale member finishes: its ack (or dead letter) is refused.
    a.gate.set()
    await eventually(lambda: sub_a.in_flight == 0 or not sub_a.held)
    await eventually(lambda: _lost(sub_a), message="a noticing its loss")
    rows = await bus.redis.xpending_range(part.stream, "g", "-", "+", 10)
    assert [r["message_id"].decode() for r in rows] == [log[0].entry_id]
    assert rows[0]["consumer"] == b"b"
    assert await bus.redis.xlen(part.dead_letters) == 0
    # The new owner finishes it.
    b.gate.set()
    await eventually(lambda: sub_b.stats.acked == 1)
    assert await bus.redis.xpending(part.stream, "g") == {
        "pending": 0,
        "min": None,
        "max": None,
        "consumers": [],
    }
    await stop_all(sub_a, sub_b)
    assert await bus.redis.xlen(part.dead_letters) == 0
    assert sub_a.stats.acked == 0
    assert sub_a.stats.dead_lettered == 0


def _lost(sub: PartitionedSubscription) -> bool:
    parts = sub._parts
    assert isinstance(parts, OrderedParts)
    leases = [h.lease for h in parts.holdings.values()]
    return any(not lease.held for lease in leases) or not leases


async def test_ordered_on_an_unpartitioned_stream_is_active_standby(
    bus: backbone.Backbone,
) -> None:
    log: list[Handled] = []
    a, b = Orders("a", log), Orders("b", log)
    options = ordered(ttl=30)
    subs = [
        bus.subscribe(
            "single",
            OrdersDispatcher(handler),
            group="g",
            consumer=handler.member,
            options=options,
            partitions=1,
        )
        for handler in (a, b)
    ]
    sub_a, sub_b = subs
    assert isinstance(sub_a, PartitionedSubscription)
    assert isinstance(sub_b, PartitionedSubscription)
    await sub_a
    await eventually(lambda: sub_a.held == [0])
    await sub_b
    producer = OrdersProducer(bus.producer("single", ORDERS.spec, partitions=1))
    for seq in range(5):
        await producer.placed("o1", seq)
    await eventually(lambda: len(log) == 5)
    assert {h.member for h in log} == {"a"}
    assert sub_b.held == []
    assert {h.partition for h in log} == {None}
    assert {h.stream for h in log} == {bus.keys("single").stream}
    await sub_a.stop()
    await eventually(lambda: sub_b.held == [0], message="the standby taking over")
    await producer.placed("o1", 5)
    await eventually(lambda: len(log) == 6)
    assert log[-1].member == "b"
    assert log[-1].token == (log[0].token or 0) + 1
    await sub_b.stop()


# --- the parts ------------------------------------------------------------------------


def test_the_assignment_is_balanced_deterministic_and_moves_little() -> None:
    members = [f"m{n}~{n:08x}" for n in range(3)]
    first = assign(members, 16)
    assert first == assign(list(reversed(members)), 16)
    loads = sorted(len(parts) for parts in first.values())
    assert loads == [5, 5, 6]
    assert sorted(p for parts in first.values() for p in parts) == list(range(16))
    joined = assign([*members, "m3~00000003"], 16)
    assert sorted(len(parts) for parts in joined.values()) == [4, 4, 4, 4]
    moved = sum(
        1 for member, parts in first.items() for p in parts if p not in joined[member]
    )
    assert moved <= 8  # p % members would move 12 of 16
    assert assign([], 4) == {}
    assert assign(["solo"], 3) == {"solo": [0, 1, 2]}


def test_ordered_options_are_checked() -> None:
    with pytest.raises(backbone.ConfigurationError, match=r"ON_RECEIPT.*handover"):
        backbone.SubscriptionOptions(ordered=True, ack=backbone.AckPolicy.ON_RECEIPT)
    with pytest.raises(backbone.ConfigurationError, match="concurrency"):
        backbone.SubscriptionOptions(ordered=True, concurrency=2)
    with pytest.raises(backbone.ConfigurationError, match="lease_ttl"):
        backbone.SubscriptionOptions(ordered=True, lease_ttl=0)
    with pytest.raises(backbone.ConfigurationError, match="ordered must be"):
        backbone.SubscriptionOptions(ordered="yes")  # type: ignore[arg-type]


async def test_a_plain_subscription_refuses_ordered_without_a_lease(
    bus: backbone.Backbone,
) -> None:
    with pytest.raises(backbone.ConfigurationError, match=r"Backbone\.subscribe"):
        backbone.Subscription(
            bus,
            bus.keys("orders#1"),
            OrdersDispatcher(Orders("a", [])),
            group="g",
            options=ordered(),
        )
    with pytest.raises(backbone.ConfigurationError, match="one partition"):
        bus.subscribe(
            "orders#1", OrdersDispatcher(Orders("a", [])), group="g", partitions=4
        )


async def test_a_lease_is_held_until_lost_or_expired() -> None:
    lease = Lease(partition=2, token=5, owner="m~1", key="k", valid_until=1e18)
    assert lease.held
    assert lease.fence == "5 m~1"
    lease.lose()
    assert not lease.held
    expired = Lease(partition=None, token=1, owner="m~1", key="k", valid_until=0)
    assert not expired.held


async def test_a_lease_is_lost_when_its_time_to_live_runs_out_unrenewed() -> None:
    # Noticed at the expiry itself, not at the next renewal attempt: Redis may
    # give the partition to another member from that moment.
    lease = Lease(
        partition=0,
        token=1,
        owner="m~1",
        key="k",
        valid_until=asyncio.get_running_loop().time() + 0.05,
    )
    await asyncio.wait_for(lease.wait_lost(), 5)
    assert not lease.held


# --- what the review found ------------------------------------------------------------


def key_in(partition: int) -> str:
    return next(k for k in (f"o{n}" for n in range(1000)) if in_part(k, partition))


def in_part(key: str, partition: int) -> bool:
    return partition_for(key, PARTITIONS) == partition


async def test_an_ordered_subscription_to_one_partition_holds_and_handles_it(
    bus: backbone.Backbone,
) -> None:
    await agree(bus, bus.keys(URI), PARTITIONS)
    log: list[Handled] = []
    sub = bus.subscribe(
        f"{URI}#1",
        OrdersDispatcher(Orders("a", log)),
        group="g",
        consumer="a",
        options=ordered(),
    )
    assert isinstance(sub, PartitionedSubscription)
    await sub
    await eventually(lambda: sub.held == [1], message="partition 1 held")
    await orders_producer(bus, URI).placed(key_in(1), 0)
    await eventually(lambda: len(log) == 1, message="the event handled")
    assert log[0].partition == 1
    await sub.stop()
    await sub.completion


async def test_a_named_partition_must_exist_and_the_count_be_valid(
    bus: backbone.Backbone,
) -> None:
    dispatcher = OrdersDispatcher(Orders("a", []))
    for bad in (0, -1):
        with pytest.raises(backbone.ConfigurationError, match="partitions must be"):
            bus.subscribe(URI, dispatcher, group="g", partitions=bad)
    # Not partitioned (no count recorded): no partition of it exists.
    with pytest.raises(backbone.ConfigurationError, match="not partitioned"):
        await bus.subscribe(f"{URI}#1", dispatcher, group="g")
    await agree(bus, bus.keys(URI), PARTITIONS)
    with pytest.raises(backbone.ConfigurationError, match="4 partition"):
        await bus.subscribe(f"{URI}#9", dispatcher, group="g")
    with pytest.raises(backbone.ConfigurationError, match="4 partition"):
        await bus.subscribe(f"{URI}#4", dispatcher, group="g", options=ordered())
    async with bus.subscribe(f"{URI}#3", dispatcher, group="g") as sub:
        assert sub.running


async def test_a_stop_during_start_leaves_nothing_running(
    bus: backbone.Backbone, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The start is held inside its agreement on the count until the stop is asked.
    entered, gate = asyncio.Event(), asyncio.Event()
    real_agree = partitioned.agree

    async def held(*args: Any) -> int:
        entered.set()
        await gate.wait()
        return await real_agree(*args)

    monkeypatch.setattr(partitioned, "agree", held)
    sub = subscribe(bus, Orders("a", []))
    starting = asyncio.ensure_future(sub.start())
    await asyncio.wait_for(entered.wait(), 10)
    assert sub._start_lock.locked()
    stopping = asyncio.ensure_future(sub.stop())
    await eventually(lambda: sub.stopping, message="the stop asked")
    gate.set()
    await stopping  # waits for the start, then stops what it started
    assert not any(s.running for s in sub._parts.subscriptions)
    assert not sub.running
    await starting
    await sub.completion
    assert all(bus.doorbell.current(p.stream) is None for p in sub.parts)


async def test_a_failed_agreement_after_a_transient_one_stops_the_partitions(
    bus: backbone.Backbone, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers: list[Exception] = [
        rex.ConnectionError("not reachable yet"),
        backbone.ConfigurationError("the recorded count differs"),
    ]

    async def refusing(*args: object) -> int:
        raise answers.pop(0)

    monkeypatch.setattr(partitioned, "agree", refusing)
    sub = subscribe(bus, Orders("a", []))
    await sub  # starts every partition, the count not agreed yet
    with pytest.raises(backbone.ConfigurationError, match="differs"):
        await sub.completion
    assert not answers
    assert len(sub._parts.subscriptions) == PARTITIONS
    assert not any(s.running for s in sub._parts.subscriptions)
    assert all(bus.doorbell.current(p.stream) is None for p in sub.parts)


async def test_a_lost_lease_cancels_the_running_handler_at_once(
    bus: backbone.Backbone,
) -> None:
    log: list[Handled] = []
    active: dict[str, int] = defaultdict(int)
    overlaps: list[str] = []
    a = Orders("a", log, active, overlaps)
    a.gate = asyncio.Event()
    # A grace far longer than the test waits: only a stop without one passes.
    sub = subscribe(bus, a, ordered(shutdown_timeout=60))
    await sub
    await eventually(lambda: sub.held == list(range(PARTITIONS)))
    await publish(bus, keys=1, events=1)
    await a.entered.wait()
    parts = sub._parts
    assert isinstance(parts, OrderedParts)
    index = partition_for("o0", PARTITIONS)
    first = parts.holdings[index]
    first.lease.lose()  # as a refused fenced write or a renewal would
    await eventually(lambda: a.cancelled == 1, message="the handler cancelled")
    # The event stayed pending: the next holding (this member again, a new
    # token) handles it, after the first handler ended.
    a.gate.set()
    await eventually(lambda: len(log) == 2, message="the event handled again")
    assert log[1].entry_id == log[0].entry_id
    assert log[1].deliveries == 2
    assert log[1].token is not None
    assert log[0].token is not None
    assert log[1].token > log[0].token
    assert not overlaps, overlaps
    await sub.stop()


async def test_an_ordered_group_lost_with_redis_data_misses_no_event(
    bus: backbone.Backbone,
) -> None:
    log: list[Handled] = []
    sub = bus.subscribe(  # the default start: new events only
        URI, OrdersDispatcher(Orders("a", log)), group="g", options=ordered(ttl=0.6)
    )
    assert isinstance(sub, PartitionedSubscription)
    await sub
    await eventually(lambda: len(sub.held) == PARTITIONS)
    producer = orders_producer(bus, URI)
    await producer.placed("o0", 0)
    await eventually(lambda: len(log) == 1)
    # Redis comes back empty (a restart without persistence): group, lease and
    # fencing counter gone. An event is written before the member notices.
    await drop_environment(bus)
    await producer.placed("o0", 1)
    await eventually(lambda: len(log) == 2, message="the event after the loss")
    assert log[1].seq == 1
    # The fencing token kept growing across the loss.
    assert log[0].token is not None
    assert log[1].token is not None
    assert log[1].token > log[0].token
    await sub.stop()


async def test_a_new_holding_recreates_a_missing_group_after_the_last_entry_seen(
    bus: backbone.Backbone,
) -> None:
    log: list[Handled] = []
    sub = subscribe(bus, Orders("a", log), ordered(ttl=0.6))
    await sub
    await eventually(lambda: len(sub.held) == PARTITIONS)
    await publish(bus, keys=1, events=5)
    await eventually(lambda: len(log) == 5)
    await eventually(lambda: sub.in_flight == 0)
    part = bus.keys(URI).of_partition(partition_for("o0", PARTITIONS))
    # The group is deleted (the stream kept) and the holding lost.
    await bus.redis.delete(lease_key(part, "g"))
    await bus.redis.xgroup_destroy(part.stream, "g")
    await orders_producer(bus, URI).placed("o0", 5)
    await eventually(lambda: len(log) == 6, message="the next event handled")
    # Not the five handled before: the group went on after the last one seen.
    assert [h.seq for h in log] == list(range(6))
    await sub.stop()
