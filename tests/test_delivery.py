"""Delivery guarantees in one process, on both backends: acks, retries, dead letters,
crash recovery, claims, bad input, backpressure, shutdown, idempotency."""

from __future__ import annotations

import asyncio

import pytest

import backbone
from conftest import eventually
from contracts.shipment_tracking_gen import (
    shipment_tracking_producer,
    subscribe_shipment_tracking,
)
from helpers import Flaky, Recorder, moment, write_bad_inputs

URI = "orders"
BEGINNING = backbone.StartFrom.BEGINNING
FAST_RETRY = backbone.RetryPolicy(
    max_deliveries=3, initial_backoff=0.01, max_backoff=0.02
)


def options(**overrides: object) -> backbone.SubscriptionOptions:
    base: dict[str, object] = {"retry": FAST_RETRY, "claim_idle": 30.0}
    base.update(overrides)
    return backbone.SubscriptionOptions(**base)  # type: ignore[arg-type]


async def publish(bus: backbone.Backbone, count: int, start: int = 0) -> list[str]:
    producer = shipment_tracking_producer(bus, URI)
    ids = [
        await producer.packing(f"u{i}@example.com", i, moment())
        for i in range(start, start + count)
    ]
    return [event_id.id for event_id in ids]


async def pending(bus: backbone.Backbone, group: str = "g") -> int:
    info = await bus.redis.xpending(bus.keys(URI).stream, group)
    return int(info["pending"])


def subscribe(
    bus: backbone.Backbone,
    handler: object,
    *,
    group: str = "g",
    consumer: str = "c1",
    **overrides: object,
) -> backbone.Subscription:
    return subscribe_shipment_tracking(
        bus,
        URI,
        handler,  # type: ignore[arg-type]
        group=group,
        consumer=consumer,
        start=BEGINNING,
        options=options(**overrides),
    )


# --- retries and dead letters -------------------------------------------------


async def test_failing_handler_is_retried_then_dead_lettered(
    bus: backbone.Backbone,
) -> None:
    handler = Flaky(failures=99)
    (event_id,) = await publish(bus, 1)
    letters = backbone.DeadLetters(bus, URI)
    async with subscribe(bus, handler) as sub:
        await eventually(lambda: sub.stats.dead_lettered == 1, message="dead letter")
    assert handler.attempts[event_id] == 3
    assert await pending(bus) == 0
    (letter,) = await letters.list()
    assert letter.event_id.id == event_id
    assert letter.group == "g"
    assert letter.consumer == "c1"
    assert letter.reason == "handler-error"
    assert letter.error_type == "RuntimeError"
    assert letter.error_message == f"attempt 3 of {event_id} failed"
    assert letter.deliveries == 3
    assert letter.handler == "Flaky.packing"
    assert letter.operation == "packing"
    assert "RuntimeError" in letter.traceback
    payload = await letters.payload(letter)
    assert payload["email"] == "u0@example.com"
    assert payload["product_id"] == 0


async def test_retry_succeeds_and_counts_deliveries(bus: backbone.Backbone) -> None:
    handler = Flaky(failures=2)
    (event_id,) = await publish(bus, 1)
    async with subscribe(bus, handler) as sub:
        await eventually(lambda: handler.count() == 1)
        await eventually(lambda: sub.stats.acked == 1)
    assert handler.attempts[event_id] == 3
    assert handler.calls[0][2].delivery_count == 3
    assert sub.stats.retried == 2
    assert sub.stats.dead_lettered == 0
    assert await pending(bus) == 0


def test_backoff_grows_exponentially_with_jitter() -> None:
    policy = backbone.RetryPolicy(initial_backoff=0.1, max_backoff=1.0, jitter=0.5)
    import random

    rng = random.Random(7)
    delays = [policy.backoff(n, rng) for n in range(1, 8)]
    for n, delay in enumerate(delays, start=1):
        base = min(1.0, 0.1 * 2 ** (n - 1))
        assert base * 0.5 <= delay <= base
    assert delays[-1] > delays[0] * 2
    assert backbone.RetryPolicy(jitter=0).backoff(3) == pytest.approx(0.4)


async def test_handler_timeout_counts_as_failure(bus: backbone.Backbone) -> None:
    handler = Flaky(gate=asyncio.Event())
    await publish(bus, 1)
    async with subscribe(bus, handler, handler_timeout=0.05) as sub:
        await eventually(lambda: sub.stats.dead_lettered == 1)
    (letter,) = await backbone.DeadLetters(bus, URI).list()
    assert letter.error_type == "TimeoutError"


async def test_poison_event_over_max_deliveries_is_dead_lettered_unhandled(
    bus: backbone.Backbone,
) -> None:
    (event_id,) = await publish(bus, 1)
    stream = bus.keys(URI).stream
    await bus.redis.xgroup_create(stream, "g", id="0")
    # A consumer that keeps dying has received it 5 times already.
    await bus.redis.xreadgroup("g", "crashing", {stream: ">"})
    await bus.redis.xclaim(stream, "g", "crashing", 0, [event_id], retrycount=5)
    handler = Flaky()
    async with subscribe(bus, handler, claim_idle=0.05, claim_interval=0.02) as sub:
        await eventually(lambda: sub.stats.dead_lettered == 1)
    assert handler.attempts[event_id] == 0
    (letter,) = await backbone.DeadLetters(bus, URI).list()
    assert letter.reason == "too-many-deliveries"
    assert letter.deliveries == 6


# --- bad input ----------------------------------------------------------------


async def test_each_bad_input_is_dead_lettered_and_the_loop_goes_on(
    bus: backbone.Backbone,
) -> None:
    cases = await write_bad_inputs(bus, URI)
    handler = Flaky()
    async with subscribe(bus, handler) as sub:
        await eventually(lambda: sub.stats.dead_lettered == len(cases))
        (valid,) = await publish(bus, 1)
        await eventually(
            lambda: valid in handler.ids, message="valid event after bad ones"
        )
    letters = {
        letter.event_id.id: letter
        for letter in await backbone.DeadLetters(bus, URI).list()
    }
    for reason, entry_id in cases.items():
        assert letters[entry_id].reason == reason, reason
    assert "'product_id'" in letters[cases["undecodable"]].error_message
    assert "valid integer" in letters[cases["invalid-payload"]].error_message
    assert "'returned'" in letters[cases["unknown-operation"]].error_message
    assert handler.ids == [valid]
    assert await pending(bus) == 0


async def test_unknown_operation_can_be_skipped(bus: backbone.Backbone) -> None:
    stream = bus.keys(URI).stream
    await bus.redis.xadd(stream, {"o": "returned", "v": "1"})
    handler = Flaky()
    async with subscribe(
        bus, handler, unknown_operation=backbone.UnknownOperation.SKIP
    ) as sub:
        (valid,) = await publish(bus, 1)
        await eventually(lambda: handler.ids == [valid])
        await eventually(lambda: sub.stats.acked == 2)
    assert sub.stats.skipped == 1
    assert sub.stats.dead_lettered == 0
    assert await pending(bus) == 0


# --- ack policies -------------------------------------------------------------


async def test_ack_on_receipt_keeps_nothing_pending(bus: backbone.Backbone) -> None:
    gate = asyncio.Event()
    handler = Flaky(gate=gate)
    await publish(bus, 3)
    async with subscribe(bus, handler, ack=backbone.AckPolicy.ON_RECEIPT):
        await eventually(lambda: handler.running == 1)
        assert await pending(bus) == 0
        gate.set()
        await eventually(lambda: handler.count() == 3)
    assert await pending(bus) == 0


@pytest.mark.parametrize("handler_timeout", [None, 30.0], ids=["plain", "timeout"])
async def test_manual_ack_acks_only_what_the_handler_acks(
    bus: backbone.Backbone, handler_timeout: float | None
) -> None:
    # With and without a handler timeout: the workers call a handler in their
    # loop, or (timeout, telemetry, marks, debug log) through their full call.
    handler = Flaky(manual_ack=True)
    ids = await publish(bus, 6)
    async with subscribe(
        bus, handler, ack=backbone.AckPolicy.MANUAL, handler_timeout=handler_timeout
    ) as sub:
        await eventually(lambda: handler.count() == 6)
        await eventually(lambda: sub.stats.acked == 3)
    rows = await bus.redis.xpending_range(bus.keys(URI).stream, "g", "-", "+", 10)
    assert sorted(r["message_id"].decode() for r in rows) == sorted(ids[1::2])


# --- crash recovery -----------------------------------------------------------


async def test_restart_under_same_name_reprocesses_own_pending(
    bus: backbone.Backbone,
) -> None:
    ids = await publish(bus, 8)
    stream = bus.keys(URI).stream
    await bus.redis.xgroup_create(stream, "g", id="0")
    # An earlier run of c1 read five events and died before acking them.
    await bus.redis.xreadgroup("g", "c1", {stream: ">"}, count=5)
    handler = Flaky()
    async with subscribe(bus, handler, consumer="c1") as sub:
        await eventually(lambda: handler.count() == 8)
        await eventually(lambda: sub.stats.acked == 8)
    assert handler.ids == ids
    assert sub.stats.recovered == 5
    assert [c.delivery_count for _, _, c in handler.calls] == [2] * 5 + [1] * 3
    assert await pending(bus) == 0


async def test_entries_of_a_dead_consumer_are_claimed(bus: backbone.Backbone) -> None:
    ids = await publish(bus, 5)
    stream = bus.keys(URI).stream
    await bus.redis.xgroup_create(stream, "g", id="0")
    await bus.redis.xreadgroup("g", "dead", {stream: ">"}, count=3)
    handler = Flaky()
    async with subscribe(
        bus, handler, consumer="alive", claim_idle=0.1, claim_interval=0.02
    ) as sub:
        await eventually(lambda: handler.count() == 5)
        await eventually(lambda: sub.stats.acked == 5)
    assert sorted(handler.ids) == sorted(ids)
    assert sub.stats.claimed == 3
    claimed = {c.id.id: c.delivery_count for _, _, c in handler.calls}
    assert [claimed[i] for i in ids[:3]] == [2, 2, 2]
    assert await pending(bus) == 0


async def test_slow_but_live_consumer_keeps_its_events(bus: backbone.Backbone) -> None:
    gate = asyncio.Event()
    slow, other = Flaky(gate=gate), Flaky()
    fast_claims = {"claim_idle": 0.15, "claim_interval": 0.02}
    async with subscribe(bus, slow, consumer="slow", **fast_claims):
        (event_id,) = await publish(bus, 1)
        await eventually(lambda: slow.running == 1)
        async with subscribe(bus, other, consumer="other", **fast_claims) as watcher:
            # Let the watcher scan for idle entries many times over claim_idle.
            await eventually(lambda: watcher.stats.claim_scans >= 25, message="scans")
            gate.set()
            await eventually(lambda: slow.count() == 1)
    assert other.attempts[event_id] == 0
    assert slow.attempts[event_id] == 1


# --- the group going away -----------------------------------------------------


async def test_vanished_group_is_recreated_by_the_running_consumer(
    bus: backbone.Backbone,
) -> None:
    handler = Flaky()
    first = await publish(bus, 2)
    async with subscribe(bus, handler) as sub:
        await eventually(lambda: handler.count() == 2)
        await eventually(lambda: sub.stats.acked == 2)
        await bus.redis.xgroup_destroy(bus.keys(URI).stream, "g")
        later = await publish(bus, 3, start=2)
        await eventually(lambda: handler.count() == 5, message="events after NOGROUP")
    assert handler.ids == first + later
    groups = await bus.redis.xinfo_groups(bus.keys(URI).stream)
    assert [g["name"] for g in groups] == [b"g"]


# --- backpressure -------------------------------------------------------------


async def test_in_flight_never_exceeds_max_in_flight(bus: backbone.Backbone) -> None:
    gate = asyncio.Event()
    handler = Flaky(gate=gate)
    await publish(bus, 60)
    async with subscribe(bus, handler, max_in_flight=10, concurrency=3) as sub:
        await eventually(lambda: handler.running == 3)
        await eventually(lambda: sub.in_flight == 10)
        assert await pending(bus) == 10
        gate.set()
        await eventually(lambda: handler.count() == 60)
    assert sub.stats.max_in_flight_seen == 10
    assert await pending(bus) == 0


async def test_concurrency_one_keeps_stream_order(bus: backbone.Backbone) -> None:
    handler = Flaky(failures=1)
    ids = await publish(bus, 20)
    async with subscribe(bus, handler, max_in_flight=50, concurrency=1):
        await eventually(lambda: handler.count() == 20)
    assert handler.ids == ids
    assert handler.started == [i for i in ids for _ in range(2)]


# --- shutdown -----------------------------------------------------------------


async def test_stop_finishes_running_handlers_and_leaves_the_rest_pending(
    bus: backbone.Backbone,
) -> None:
    gate = asyncio.Event()
    handler = Flaky(gate=gate)
    await publish(bus, 10)
    sub = await subscribe(bus, handler, max_in_flight=6, concurrency=2)
    await eventually(lambda: handler.running == 2 and sub.in_flight == 6)
    stopping = asyncio.ensure_future(sub.stop())
    await eventually(lambda: sub.stopping)
    gate.set()
    await stopping
    assert handler.count() == 2
    assert sub.stats.acked == 2
    # The four read but never started stay pending; four were never read.
    assert await pending(bus) == 4
    assert sub.completion.done()


async def test_stop_timeout_leaves_stuck_handlers_pending(
    bus: backbone.Backbone,
) -> None:
    handler = Flaky(gate=asyncio.Event())
    await publish(bus, 1)
    sub = await subscribe(bus, handler, shutdown_timeout=0.05)
    await eventually(lambda: handler.running == 1)
    await sub.stop()
    assert handler.count() == 0
    assert await pending(bus) == 1


# --- idempotency --------------------------------------------------------------


async def test_idempotent_guard_skips_a_redelivered_event(
    bus: backbone.Backbone,
) -> None:
    """The handler succeeds, its ack is lost (here: never sent); the redelivery to
    another member is recognised and not applied again."""
    first, second = Flaky(), Flaky()
    (event_id,) = await publish(bus, 1)
    async with subscribe(
        bus, first, consumer="a", ack=backbone.AckPolicy.MANUAL, idempotent=True
    ):
        await eventually(lambda: first.count() == 1)
    assert await pending(bus) == 1
    async with subscribe(
        bus, second, consumer="b", idempotent=True, claim_idle=0.05, claim_interval=0.02
    ) as sub:
        await eventually(lambda: sub.stats.duplicates_skipped == 1)
        await eventually(lambda: sub.stats.acked == 1)
    assert second.attempts[event_id] == 0
    assert await pending(bus) == 0
    marks = await bus.redis.zrange(bus.keys(URI).done("g"), 0, -1)
    assert marks == [event_id.encode()]


# --- causation ----------------------------------------------------------------


class Forwarder(Recorder):
    """Answers each packing with an on_delivery (like the transit sample)."""

    def __init__(self, producer: object) -> None:
        super().__init__()
        self.producer = producer

    async def packing(
        self,
        email: str,
        product_id: int,
        time: object,
        *,
        context: backbone.EventContext = backbone.NO_CONTEXT,
    ) -> None:
        await self.producer.on_delivery(email, product_id, moment())  # type: ignore[attr-defined]


async def test_events_published_in_a_handler_carry_causation_and_correlation(
    bus: backbone.Backbone,
) -> None:
    producer = shipment_tracking_producer(bus, URI)
    watcher = Recorder()
    async with (
        subscribe(bus, Forwarder(producer), group="transit"),
        subscribe(bus, watcher, group="watch"),
    ):
        first = await producer.packing("a@example.com", 1, moment())
        await eventually(lambda: watcher.count() == 2)
    packing_ctx = watcher.calls[0][2]
    delivery_ctx = watcher.calls[1][2]
    assert packing_ctx.causation_id is None
    assert delivery_ctx.causation_id == str(first)
    assert delivery_ctx.correlation_id == str(first)
    assert backbone.EventId.parse(delivery_ctx.causation_id) == first


# --- dead-letter re-drive -----------------------------------------------------


async def test_redrive_goes_to_the_failed_group_only(bus: backbone.Backbone) -> None:
    failing, healthy = Flaky(failures=3), Recorder()
    (event_id,) = await publish(bus, 1)
    letters = backbone.DeadLetters(bus, URI)
    async with (
        subscribe(bus, failing, group="fails") as failed_sub,
        subscribe(bus, healthy, group="fine") as fine_sub,
    ):
        await eventually(lambda: failed_sub.stats.dead_lettered == 1)
        await eventually(lambda: healthy.count() == 1)
        (letter,) = await letters.list(group="fails")
        (new_id,) = await letters.retry([letter.id])
        await eventually(
            lambda: failing.count() == 1, message="re-driven event handled"
        )
        await eventually(lambda: fine_sub.stats.skipped == 1)
    assert healthy.count() == 1
    context = failing.calls[0][2]
    assert context.id == new_id
    assert context.original_id is not None
    assert context.original_id.id == event_id
    assert context.event_id.id == event_id
    assert await letters.count() == 0
    assert (
        await bus.redis.exists(bus.keys(URI).dead_letter_payload("fails", event_id))
        == 0
    )


async def test_purge_removes_letters_and_payload_copies(bus: backbone.Backbone) -> None:
    handler = Flaky(failures=99)
    await publish(bus, 2)
    letters = backbone.DeadLetters(bus, URI)
    async with subscribe(bus, handler) as sub:
        await eventually(lambda: sub.stats.dead_lettered == 2)
    ids = await letters.all_ids()
    assert len(ids) == 2
    assert await letters.purge(ids[:1]) == 1
    assert await letters.count() == 1
    remaining = await letters.list()
    assert remaining[0].id == ids[1]
    gone = await letters.get(ids[0])
    assert gone is None
    keys = [
        k
        async for k in bus.redis.scan_iter(
            match=bus.keys(URI)
            .dead_letter_payload_prefix.replace("{", "\\{")
            .replace("}", "\\}")
            + "*"
        )
    ]
    assert len(keys) == 1
