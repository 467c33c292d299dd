"""Projections: catch-up in pages, the switch to live, atomic checkpoints, bad
events skipped, rebuild, lag (on both backends)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import pytest

import backbone
from backbone.store import ProjectionError
from conftest import eventually
from contracts.shipment_tracking_gen import (
    ShipmentTrackingDispatcher,
    shipment_tracking_producer,
)
from helpers import moment, product, user

URI = "orders"
EMAILS = 5


class PackingCounts:
    """Per-email counts of packing events (a hash) and every product id applied,
    in order (a list), both written with the checkpoint."""

    def __init__(self, counts: str, applied: str) -> None:
        self.counts = counts
        self.applied = applied

    async def packing(
        self,
        email: str,
        product_id: int,
        time: object,
        *,
        context: backbone.ProjectionContext,
    ) -> None:
        context.writes.hincrby(self.counts, email, 1)
        context.writes.rpush(self.applied, product_id)

    async def reset(self, writes: object) -> None:
        writes.delete(self.counts, self.applied)  # type: ignore[attr-defined]


def counts_projection(
    bus: backbone.Backbone, name: str = "counts", page: int = 7
) -> backbone.Projection:
    keys = bus.keys(URI)
    handler = PackingCounts(
        keys.projection(name, "by-email"), keys.projection(name, "ids")
    )
    return backbone.Projection(
        bus, URI, name, handler, ShipmentTrackingDispatcher, page=page, block=0.5
    )


async def publish(bus: backbone.Backbone, start: int, count: int) -> None:
    producer = shipment_tracking_producer(bus, URI)
    for i in range(start, start + count):
        await producer.packing(f"u{i % EMAILS}@example.com", i, moment())


def fold(ids: range) -> dict[str, int]:
    return dict(Counter(f"u{i % EMAILS}@example.com" for i in ids))


async def read_model(bus: backbone.Backbone, name: str = "counts") -> dict[str, int]:
    raw = await bus.redis.hgetall(bus.keys(URI).projection(name, "by-email"))
    return {k.decode(): int(v) for k, v in raw.items()}


async def applied_ids(bus: backbone.Backbone, name: str = "counts") -> list[int]:
    raw = await bus.redis.lrange(bus.keys(URI).projection(name, "ids"), 0, -1)
    return [int(x) for x in raw]


async def test_catch_up_folds_every_event_and_skips_other_operations(
    bus: backbone.Backbone,
) -> None:
    await publish(bus, 0, 20)
    await shipment_tracking_producer(bus, URI).order_placed(user(), product(), moment())
    await publish(bus, 20, 10)
    projection = counts_projection(bus)
    assert await projection.checkpoint() is None
    assert await projection.lag() == 31
    assert await projection.catch_up() == 30
    assert await read_model(bus) == fold(range(30))
    assert await applied_ids(bus) == list(range(30))
    assert projection.stats.unimplemented == 1
    assert projection.stats.pages == 5  # 31 entries, 7 a page
    status = await projection.status()
    assert status.checkpoint == status.last_id
    assert (status.lag, status.lag_exact, status.applied) == (0, True, 30)
    # A second instance (a restart) resumes from the checkpoint: nothing twice.
    again = counts_projection(bus)
    assert await again.catch_up() == 0
    await publish(bus, 30, 3)
    assert await again.catch_up() == 3
    assert await applied_ids(bus) == list(range(33))


async def test_lag_is_counted_up_to_a_cap(bus: backbone.Backbone) -> None:
    await publish(bus, 0, 12)
    projection = counts_projection(bus, page=5)
    status = await projection.status(cap=10)
    assert (status.lag, status.lag_exact) == (10, False)
    assert await projection._step()
    assert await projection.lag() == 7
    assert (await projection.status(cap=7)).lag_exact


async def test_bad_events_are_skipped_logged_and_counted(
    bus: backbone.Backbone, caplog: pytest.LogCaptureFixture
) -> None:
    producer = shipment_tracking_producer(bus, URI)
    ids = [await producer.packing("u0@example.com", i, moment()) for i in range(6)]
    keys = bus.keys(URI)
    await bus.redis.delete(keys.payload(ids[1].id))  # missing payload
    await bus.redis.hset(keys.payload(ids[3].id), "product_id", b"\xc1")  # garbage
    await bus.redis.xadd(keys.stream, {"o": "nope", "v": "1", "c": "ShipmentTracking"})
    await bus.redis.xadd(keys.stream, {"o": "packing", "v": "1", "c": "Other"})
    await publish(bus, 6, 1)
    projection = counts_projection(bus, page=3)
    with caplog.at_level(logging.WARNING, logger="backbone.projection"):
        assert await projection.catch_up() == 5
    assert projection.stats.skipped == 4
    assert await applied_ids(bus) == [0, 2, 4, 5, 6]
    status = await projection.status()
    assert (status.skipped, status.lag) == (4, 0)
    reasons = " ".join(r.getMessage() for r in caplog.records)
    for reason in ("missing-payload", "unknown-operation", "malformed-entry"):
        assert reason in reasons
    assert ids[3].id in reasons


async def test_a_failing_handler_writes_nothing_of_its_page(
    bus: backbone.Backbone,
) -> None:
    await publish(bus, 0, 10)
    projection = counts_projection(bus, page=4)
    assert await projection._step()
    checkpoint = await projection.checkpoint()

    class Broken(PackingCounts):
        async def packing(
            self,
            email: str,
            product_id: int,
            time: object,
            *,
            context: backbone.ProjectionContext,
        ) -> None:
            context.writes.hincrby(self.counts, email, 1)
            if product_id == 6:
                raise RuntimeError("boom")

    keys = bus.keys(URI)
    broken = backbone.Projection(
        bus,
        URI,
        "counts",
        Broken(keys.projection("counts", "by-email"), "unused"),
        ShipmentTrackingDispatcher,
        page=4,
    )
    with pytest.raises(ProjectionError, match=r"boom.*checkpoint stays"):
        await broken.catch_up()
    assert await projection.checkpoint() == checkpoint
    assert await read_model(bus) == fold(range(4))
    assert await projection.catch_up() == 6
    assert await read_model(bus) == fold(range(10))


async def test_the_switch_to_live_loses_and_repeats_nothing_under_publishing(
    bus: backbone.Backbone,
) -> None:
    await publish(bus, 0, 100)
    projection = counts_projection(bus, page=3)
    running = asyncio.create_task(projection.run())
    writers = [asyncio.create_task(publish(bus, 100 + 50 * n, 50)) for n in range(4)]
    try:
        await asyncio.gather(*writers)
        await eventually(
            lambda: _applied(projection, 300), timeout=30, message="all applied"
        )
        await publish(bus, 300, 5)  # while following live
        await eventually(
            lambda: _applied(projection, 305), timeout=30, message="live events"
        )
    finally:
        projection.stop()
        await asyncio.wait_for(running, 10)
    ids = await applied_ids(bus)
    assert sorted(ids) == list(range(305))  # none lost, none twice
    assert await read_model(bus) == fold(range(305))
    assert await projection.lag() == 0


def _applied(projection: backbone.Projection, count: int) -> bool:
    return projection.stats.applied >= count


async def test_stop_returns_while_waiting_for_events(bus: backbone.Backbone) -> None:
    projection = counts_projection(bus)
    running = asyncio.create_task(projection.run())
    await publish(bus, 0, 2)
    await eventually(lambda: _applied(projection, 2), message="applied")
    projection.stop()
    await asyncio.wait_for(running, 5)
    assert await projection.checkpoint() is not None


async def test_rebuild_from_zero_gives_the_same_read_model(
    bus: backbone.Backbone,
) -> None:
    await publish(bus, 0, 40)
    projection = counts_projection(bus)
    await projection.catch_up()
    before = await read_model(bus)
    await bus.redis.hset(bus.keys(URI).projection("counts", "by-email"), "x", 99)
    assert await projection.rebuild() == 40
    assert await read_model(bus) == before == fold(range(40))
    assert await applied_ids(bus) == list(range(40))
    assert (await projection.status()).applied == 40


async def test_names_and_options_are_checked(bus: backbone.Backbone) -> None:
    handler = PackingCounts("a", "b")
    with pytest.raises(backbone.ConfigurationError, match="projection name"):
        backbone.Projection(bus, URI, "a:b", handler, ShipmentTrackingDispatcher)
    with pytest.raises(backbone.ConfigurationError, match="page"):
        backbone.Projection(bus, URI, "a", handler, ShipmentTrackingDispatcher, page=0)
    with pytest.raises(backbone.ContractError, match="implements no operation"):
        backbone.Projection(bus, URI, "a", object(), ShipmentTrackingDispatcher)


async def test_a_write_redis_refuses_stops_the_projection_until_rebuilt(
    bus: backbone.Backbone,
) -> None:
    """Redis applies the rest of a transaction when one command fails at run
    time: the page goes in without that write. The projection says so and
    refuses to go on (a read model missing a write is not silently kept) until
    it is rebuilt."""
    await publish(bus, 0, 6)
    keys = bus.keys(URI)
    projection = counts_projection(bus, page=10)
    by_email = keys.projection("counts", "by-email")
    await bus.redis.hset(by_email, "u1@example.com", "not-a-number")
    with pytest.raises(ProjectionError, match=r"refused a write queued for .*rebuild"):
        await projection.catch_up()
    status = await projection.status()
    assert status.broken is not None
    # The page went in, without the refused write: that is what must be rebuilt.
    assert await bus.redis.hget(by_email, "u1@example.com") == b"not-a-number"
    assert await bus.redis.hget(by_email, "u0@example.com") is not None
    with pytest.raises(ProjectionError, match="must be rebuilt"):
        await projection.catch_up()
    await bus.redis.hdel(by_email, "u1@example.com")
    assert await projection.rebuild() == 6
    assert await read_model(bus) == fold(range(6))
    assert (await projection.status()).broken is None


@pytest.mark.parametrize("checkpoint", ["garbage", "5", "1-2-3"])
async def test_an_unreadable_checkpoint_is_an_error_naming_it(
    bus: backbone.Backbone, checkpoint: str
) -> None:
    await publish(bus, 0, 3)
    projection = counts_projection(bus)
    await bus.redis.hset(bus.keys(URI).projection("counts"), "id", checkpoint)
    with pytest.raises(ProjectionError, match="not an entry id"):
        await projection.catch_up()
    with pytest.raises(ProjectionError, match="rebuild"):
        await backbone.store.projection_status(bus, URI, "counts")
    assert await projection.rebuild() == 3


async def test_a_checkpoint_ahead_of_the_stream_is_reported(
    bus: backbone.Backbone, caplog: pytest.LogCaptureFixture
) -> None:
    await publish(bus, 0, 2)
    projection = counts_projection(bus)
    await bus.redis.hset(bus.keys(URI).projection("counts"), "id", "99999999999999-0")
    with caplog.at_level(logging.WARNING, logger="backbone.projection"):
        running = asyncio.ensure_future(projection.run())
        await eventually(
            lambda: any("is after the last entry" in r.message for r in caplog.records),
            message="warning",
        )
        projection.stop()
        await asyncio.wait_for(running, 10)
    assert projection.stats.applied == 0
