"""Tests aimed at single mechanisms of the consumer, each written so that the
suite fails when that mechanism breaks: the room a claim holds, the moment an
idempotency mark is written, the dead-letter script's pending check (and its
absence when reading with NOACK), the last attempt of an event whose delivery
count reaches max_deliveries, retries counted as deliveries in Redis (and
none for an event acknowledged meanwhile), a stop's cancellation, which is not
a handler failure, and the original id as the idempotency mark of a re-driven
event. ``python3 dev.py mutants`` seeds these faults and checks that the tests
here catch them."""

from __future__ import annotations

import asyncio
from typing import Any

import backbone
from conftest import eventually
from contracts.shipment_tracking_gen import (
    shipment_tracking_producer,
    subscribe_shipment_tracking,
)
from helpers import Flaky, moment, write_bad_inputs

URI = "mechanisms"
BEGINNING = backbone.StartFrom.BEGINNING


async def publish(bus: backbone.Backbone, count: int, start: int = 0) -> list[str]:
    producer = shipment_tracking_producer(bus, URI)
    return [
        (await producer.packing(f"u{i}@example.com", i, moment())).id
        for i in range(start, start + count)
    ]


async def pending(bus: backbone.Backbone, group: str = "g") -> int:
    info = await bus.redis.xpending(bus.keys(URI).stream, group)
    return int(info["pending"])


async def idle_with(bus: backbone.Backbone, consumer: str, at_least_ms: int) -> bool:
    rows = await bus.redis.xpending_range(
        bus.keys(URI).stream, "g", min="-", max="+", count=100, consumername=consumer
    )
    return bool(rows) and all(r["time_since_delivered"] >= at_least_ms for r in rows)


async def test_a_read_never_takes_the_room_a_claim_scan_holds(
    bus: backbone.Backbone,
) -> None:
    """While a claim scan is in flight it holds all the free room; new entries
    arriving meanwhile must wait, or reads and claims together overshoot
    max_in_flight."""
    stream = bus.keys(URI).stream
    ghosts = await publish(bus, 4)
    await bus.redis.xgroup_create(stream, "g", id="0")
    await bus.redis.xreadgroup("g", "ghost", {stream: ">"})
    await eventually(lambda: idle_with(bus, "ghost", 30), message="ghosts idle")

    scanning, go = asyncio.Event(), asyncio.Event()
    original = bus.redis.xautoclaim

    async def held_scan(*args: Any, **kwargs: Any) -> Any:
        scanning.set()
        await go.wait()
        return await original(*args, **kwargs)

    bus.redis.xautoclaim = held_scan  # type: ignore[method-assign]
    gate = asyncio.Event()
    handler = Flaky(gate=gate)
    options = backbone.SubscriptionOptions(
        max_in_flight=4, claim_idle=0.02, claim_interval=0.01
    )
    async with subscribe_shipment_tracking(
        bus, URI, handler, group="g", consumer="c1", options=options
    ) as sub:
        window = sub._state.window
        await asyncio.wait_for(scanning.wait(), 10)
        assert window.reserved == 4
        fresh = await publish(bus, 4, start=4)
        # The reader wakes for the new entries and must find no room.
        await eventually(lambda: window._waiting, message="reader waiting for room")
        go.set()
        await eventually(lambda: handler.running == 1, message="a handler runs")
        await eventually(lambda: sub.stats.claimed == 4, message="ghosts claimed")
        assert sub.in_flight <= 4
        gate.set()
        await eventually(lambda: handler.count() == 8, message="all handled")
    assert sub.stats.max_in_flight_seen <= 4
    assert sorted(handler.ids) == sorted(ghosts + fresh)


async def test_an_interrupted_handler_leaves_no_idempotency_mark(
    bus: backbone.Backbone,
) -> None:
    """The mark is written after the handler returns: an event whose handler was
    interrupted (a stop that timed out) is handled again, not skipped."""
    (event_id,) = await publish(bus, 1)
    options = backbone.SubscriptionOptions(idempotent=True, shutdown_timeout=0.05)
    stuck = Flaky(gate=asyncio.Event())
    sub = await subscribe_shipment_tracking(
        bus, URI, stuck, group="g", consumer="c1", start=BEGINNING, options=options
    )
    await eventually(lambda: stuck.running == 1, message="handler started")
    await sub.stop()
    assert stuck.count() == 0
    assert await pending(bus) == 1
    assert await bus.redis.zcard(bus.keys(URI).done("g")) == 0

    handler = Flaky()
    async with subscribe_shipment_tracking(
        bus, URI, handler, group="g", consumer="c1", options=options
    ) as again:
        await eventually(lambda: handler.count() == 1, message="handled again")
        await eventually(lambda: again.in_flight == 0, message="acked")
    assert handler.ids == [event_id]
    assert again.stats.duplicates_skipped == 0
    assert await bus.redis.zscore(bus.keys(URI).done("g"), event_id) is not None


async def test_no_dead_letter_for_an_event_acknowledged_meanwhile(
    bus: backbone.Backbone,
) -> None:
    """The dead-letter step writes only while the event is pending: one that
    another member acked meanwhile is not dead-lettered."""
    stream = bus.keys(URI).stream
    (event_id,) = await publish(bus, 1)

    class AckedElsewhere(Flaky):
        async def packing(
            self,
            email: str,
            product_id: int,
            time: Any,
            *,
            context: backbone.EventContext = backbone.NO_CONTEXT,
        ) -> None:
            await bus.redis.xack(stream, "g", context.id.id)
            raise RuntimeError("failed after another member finished it")

    handler = AckedElsewhere()
    options = backbone.SubscriptionOptions(retry=backbone.RetryPolicy(max_deliveries=1))
    async with subscribe_shipment_tracking(
        bus, URI, handler, group="g", start=BEGINNING, options=options
    ) as sub:
        await eventually(lambda: sub.stats.failed == 1, message="handler failed")
        await eventually(lambda: sub.in_flight == 0, message="done with it")
    assert sub.stats.dead_lettered == 0
    assert await bus.redis.xlen(bus.keys(URI).dead_letters) == 0
    dead_copy = bus.keys(URI).dead_letter_payload("g", event_id)
    assert await bus.redis.exists(dead_copy) == 0
    assert await pending(bus) == 0


async def test_a_claimed_event_at_max_deliveries_gets_its_last_attempt(
    bus: backbone.Backbone,
) -> None:
    stream = bus.keys(URI).stream
    ids = await publish(bus, 2)
    await bus.redis.xgroup_create(stream, "g", id="0")
    await bus.redis.xreadgroup("g", "ghost", {stream: ">"})
    # Two deliveries already made; the claim makes the third and last.
    await bus.redis.xclaim(stream, "g", "ghost", 0, ids, retrycount=2)
    await eventually(lambda: idle_with(bus, "ghost", 30), message="ghosts idle")

    class FailsOne(Flaky):
        async def packing(
            self,
            email: str,
            product_id: int,
            time: Any,
            *,
            context: backbone.EventContext = backbone.NO_CONTEXT,
        ) -> None:
            self.attempts[context.id.id] += 1
            self.started.append(context.id.id)
            self._record("packing", (email, product_id, time), context)
            if product_id == 1:
                raise RuntimeError("fails on its last attempt")

    handler = FailsOne()
    options = backbone.SubscriptionOptions(
        claim_idle=0.02,
        claim_interval=0.01,
        retry=backbone.RetryPolicy(max_deliveries=3, initial_backoff=0.01),
    )
    async with subscribe_shipment_tracking(
        bus, URI, handler, group="g", consumer="alive", options=options
    ) as sub:
        await eventually(lambda: len(handler.started) == 2, message="both attempted")
        await eventually(lambda: sub.stats.dead_lettered == 1, message="dead letter")
        await eventually(lambda: sub.in_flight == 0, message="settled")
    assert sorted(handler.started) == sorted(ids)
    assert {c.delivery_count for _, _, c in handler.calls} == {3}
    (letter,) = await backbone.DeadLetters(bus, URI).list()
    assert letter.event_id.id == ids[1]
    assert letter.reason == backbone.DeadLetterReason.HANDLER_ERROR
    assert letter.deliveries == 3
    assert await pending(bus) == 0


async def test_a_recovered_event_at_max_deliveries_gets_its_last_attempt(
    bus: backbone.Backbone,
) -> None:
    stream = bus.keys(URI).stream
    (event_id,) = await publish(bus, 1)
    await bus.redis.xgroup_create(stream, "g", id="0")
    await bus.redis.xreadgroup("g", "c1", {stream: ">"})
    await bus.redis.xclaim(stream, "g", "c1", 0, [event_id], retrycount=2)
    handler = Flaky()
    options = backbone.SubscriptionOptions(retry=backbone.RetryPolicy(max_deliveries=3))
    async with subscribe_shipment_tracking(
        bus, URI, handler, group="g", consumer="c1", options=options
    ) as sub:
        await eventually(lambda: handler.count() == 1, message="handled")
        await eventually(lambda: sub.in_flight == 0, message="acked")
    assert [c.delivery_count for _, _, c in handler.calls] == [3]
    assert sub.stats.dead_lettered == 0


async def test_retries_are_deliveries_in_redis_and_survive_a_restart(
    bus: backbone.Backbone,
) -> None:
    """Each retry counts as a delivery in Redis (XCLAIM RETRYCOUNT), not only in
    the consumer's memory: a consumer stopped in the last attempt leaves the
    count at max_deliveries, so on restart the event is dead-lettered instead of
    starting its attempts over."""
    stream = bus.keys(URI).stream
    (event_id,) = await publish(bus, 1)

    class FailsTwiceThenHangs(Flaky):
        async def packing(
            self,
            email: str,
            product_id: int,
            time: Any,
            *,
            context: backbone.EventContext = backbone.NO_CONTEXT,
        ) -> None:
            self.attempts[context.id.id] += 1
            if self.attempts[context.id.id] < 3:
                raise RuntimeError("fails twice")
            await asyncio.Event().wait()  # until the stop cancels it

    retry = backbone.RetryPolicy(
        max_deliveries=3, initial_backoff=0.01, max_backoff=0.02
    )
    options = backbone.SubscriptionOptions(retry=retry, shutdown_timeout=0.05)
    failing = FailsTwiceThenHangs()
    async with subscribe_shipment_tracking(
        bus, URI, failing, group="g", consumer="c1", start=BEGINNING, options=options
    ) as sub:
        await eventually(lambda: failing.attempts[event_id] == 3, message="attempt 3")
        rows = await bus.redis.xpending_range(stream, "g", "-", "+", count=10)
        assert [row["times_delivered"] for row in rows] == [3]
    assert sub.stats.retried == 2
    assert await pending(bus) == 1

    handler = Flaky()
    async with subscribe_shipment_tracking(
        bus, URI, handler, group="g", consumer="c1", options=options
    ) as again:
        await eventually(lambda: again.stats.dead_lettered == 1, message="dead")
    assert handler.attempts[event_id] == 0
    (letter,) = await backbone.DeadLetters(bus, URI).list()
    assert letter.reason == backbone.DeadLetterReason.TOO_MANY_DELIVERIES
    assert letter.deliveries == 4
    assert await pending(bus) == 0


async def test_a_handler_cancelled_by_a_stop_has_not_failed(
    bus: backbone.Backbone,
) -> None:
    """A stop that runs out of shutdown_timeout cancels the handler: the event
    did not fail, so even at its last delivery it is not dead-lettered; it stays
    pending for the group."""
    await publish(bus, 1)
    options = backbone.SubscriptionOptions(
        retry=backbone.RetryPolicy(max_deliveries=1), shutdown_timeout=0.05
    )
    stuck = Flaky(gate=asyncio.Event())
    sub = await subscribe_shipment_tracking(
        bus, URI, stuck, group="g", consumer="c1", start=BEGINNING, options=options
    )
    await eventually(lambda: stuck.running == 1, message="handler started")
    await sub.stop()
    assert sub.stats.failed == 0
    assert sub.stats.dead_lettered == 0
    assert await bus.redis.xlen(bus.keys(URI).dead_letters) == 0
    assert await pending(bus) == 1


async def test_reading_with_noack_still_dead_letters(bus: backbone.Backbone) -> None:
    """With AckPolicy.ON_RECEIPT nothing is pending, so the dead-letter step must
    not require the event to be: bad input, and an event whose handler keeps
    failing, reach the dead-letter stream all the same."""
    bad = await write_bad_inputs(bus, URI)
    (failing,) = await publish(bus, 1)
    handler = Flaky(failures=99)
    options = backbone.SubscriptionOptions(
        ack=backbone.AckPolicy.ON_RECEIPT,
        retry=backbone.RetryPolicy(
            max_deliveries=2, initial_backoff=0.01, max_backoff=0.02
        ),
    )
    async with subscribe_shipment_tracking(
        bus, URI, handler, group="g", start=BEGINNING, options=options
    ) as sub:
        await eventually(
            lambda: sub.stats.received == len(bad) + 1 and sub.in_flight == 0,
            message="every event finished",
        )
    letters = await backbone.DeadLetters(bus, URI).list()
    expected = {entry_id: reason for reason, entry_id in bad.items()}
    expected[failing] = backbone.DeadLetterReason.HANDLER_ERROR
    assert {letter.event_id.id: letter.reason for letter in letters} == expected
    assert handler.attempts[failing] == 2
    assert sub.stats.dead_lettered == len(expected)
    assert await pending(bus) == 0


async def test_no_retry_for_an_event_acknowledged_meanwhile(
    bus: backbone.Backbone,
) -> None:
    """A retry first takes the event back (XCLAIM); one that another member
    acknowledged meanwhile is gone from the pending list and is not retried."""
    stream = bus.keys(URI).stream
    (event_id,) = await publish(bus, 1)

    class AckedElsewhere(Flaky):
        async def packing(
            self,
            email: str,
            product_id: int,
            time: Any,
            *,
            context: backbone.EventContext = backbone.NO_CONTEXT,
        ) -> None:
            self.attempts[context.id.id] += 1
            await bus.redis.xack(stream, "g", context.id.id)
            raise RuntimeError("failed after another member finished it")

    handler = AckedElsewhere()
    retry = backbone.RetryPolicy(
        max_deliveries=3, initial_backoff=0.01, max_backoff=0.02
    )
    async with subscribe_shipment_tracking(
        bus,
        URI,
        handler,
        group="g",
        start=BEGINNING,
        options=backbone.SubscriptionOptions(retry=retry),
    ) as sub:
        await eventually(
            lambda: sub.stats.failed >= 1 and sub.in_flight == 0, message="settled"
        )
    assert handler.attempts[event_id] == 1
    assert sub.stats.retried == 0
    assert sub.stats.dead_lettered == 0
    assert await pending(bus) == 0


async def test_a_redriven_event_already_handled_is_skipped_by_its_original_id(
    bus: backbone.Backbone,
) -> None:
    """A consumer handled an event (its mark is written) and died before the ack;
    the member that claimed it found it over max_deliveries and dead-lettered it.
    Re-driving that dead letter appends a new entry, but the mark names the
    original event, so the group does not handle it again."""
    stream = bus.keys(URI).stream
    (event_id,) = await publish(bus, 1)
    first = Flaky()  # acks nothing under AckPolicy.MANUAL: like dying before it
    manual = backbone.SubscriptionOptions(
        ack=backbone.AckPolicy.MANUAL, idempotent=True
    )
    async with subscribe_shipment_tracking(
        bus, URI, first, group="g", consumer="died", start=BEGINNING, options=manual
    ) as sub:
        await eventually(lambda: first.count() == 1, message="handled")
        await eventually(lambda: sub.stats.handled == 1, message="marked")
    assert await bus.redis.zscore(bus.keys(URI).done("g"), event_id) is not None
    await bus.redis.xclaim(stream, "g", "died", 0, [event_id], retrycount=5)

    second = Flaky()
    options = backbone.SubscriptionOptions(
        idempotent=True,
        retry=backbone.RetryPolicy(max_deliveries=3),
        claim_idle=0.02,
        claim_interval=0.01,
    )
    letters = backbone.DeadLetters(bus, URI)
    async with subscribe_shipment_tracking(
        bus, URI, second, group="g", consumer="next", options=options
    ) as sub:
        await eventually(lambda: sub.stats.dead_lettered == 1, message="dead letter")
        (letter,) = await letters.list()
        assert letter.reason == backbone.DeadLetterReason.TOO_MANY_DELIVERIES
        (redriven,) = await letters.retry([letter.id])
        await eventually(
            lambda: sub.stats.received == 2 and sub.in_flight == 0,
            message="re-driven event finished",
        )
    assert redriven.id != event_id
    assert second.count() == 0
    assert sub.stats.duplicates_skipped == 1
    assert await pending(bus) == 0
