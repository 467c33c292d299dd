"""The event store: loading a long aggregate with and without a snapshot, and
appends checked against an expected version against plain publishes.

An aggregate of ``store_events`` events (100,000; ``--quick`` 2,000) is written
in saves of 1,000 events, twice: once as a type without snapshots, once as a type
that snapshots every 1,000 events. Loading the first folds every event (read
through its index, then the entries' payloads); loading the second reads the
latest snapshot and nothing after it. Then one event per call: ``save`` of a
loaded aggregate (expected version, one script call) against ``await
producer.packing(...)``, and 1,000 events per call: a save against
``producer.batch()``.
"""

from __future__ import annotations

from typing import ClassVar

import pydantic

import backbone
from contracts.shipment_tracking_gen import (
    ShipmentTrackingAggregate,
    shipment_tracking_producer,
)

from .common import (
    BATCH_SIZE,
    Comparison,
    Measurement,
    Section,
    Settings,
    packing_args,
    ratio,
    timed,
)
from .server import BenchServer

__all__ = ["run"]

URI = "store.bench"
SINGLES = 2_000


class Counts(pydantic.BaseModel):
    packed: int = 0
    last_product: int = 0


class Plain(ShipmentTrackingAggregate[Counts]):
    """An aggregate that folds every packing event (no snapshots)."""

    def __init__(self) -> None:
        super().__init__(Counts())

    def apply_packing(self, email: str, product_id: int, time: object) -> None:
        self.state.packed += 1
        self.state.last_product = product_id


class Snapshotted(Plain):
    snapshot_every: ClassVar[int] = BATCH_SIZE


async def _fill(
    repository: backbone.Repository[Plain], aggregate_id: str, events: int
) -> None:
    email, _, time = packing_args()
    aggregate = await repository.load(aggregate_id)
    written = 0
    while written < events:
        for i in range(min(BATCH_SIZE, events - written)):
            aggregate.record_packing(email, written + i, time)
        await repository.save(aggregate)  # expects the version it has reached
        written += BATCH_SIZE


async def run(server: BenchServer, settings: Settings) -> Section:
    events = settings.store_events
    section = Section(
        "store", f"Event store: an aggregate of {events:,} events, and appends"
    )
    bus = backbone.Backbone(server.url, environment=server.environment)
    try:
        plain = bus.aggregates(URI, Plain)
        snapshotted = bus.aggregates(URI, Snapshotted)
        await _fill(plain, "plain", events)
        await _fill(snapshotted, "snapshotted", events)  # type: ignore[arg-type]

        full = await timed(lambda: _load(plain, "plain", events))
        fast = await timed(lambda: _load(snapshotted, "snapshotted", events))  # type: ignore[arg-type]

        singles = min(SINGLES, events)
        email, product_id, time = packing_args()

        async def appends_one_by_one() -> None:
            aggregate = await plain.load("singles")
            for i in range(singles):
                aggregate.record_packing(email, i, time)
                await plain.save(aggregate)

        producer = shipment_tracking_producer(bus, URI + ".plain")

        async def publishes_one_by_one() -> None:
            for _ in range(singles):
                await producer.packing(email, product_id, time)

        async def appends_in_batches() -> None:
            await _fill(plain, "batches", events)

        async def publishes_in_batches() -> None:
            written = 0
            while written < events:
                async with producer.batch() as batch:
                    for _ in range(min(BATCH_SIZE, events - written)):
                        batch.packing(email, product_id, time)
                written += BATCH_SIZE

        append_one = await timed(appends_one_by_one)
        publish_one = await timed(publishes_one_by_one)
        append_batch = await timed(appends_in_batches)
        publish_batch = await timed(publishes_in_batches)
    finally:
        await bus.close()

    rows = [
        Measurement("load, no snapshot (fold every event)", events, full, "load"),
        Measurement("load, snapshot every 1,000", events, fast, "load"),
        Measurement("append with expected version, 1 per call", singles, append_one),
        Measurement("publish, 1 per await", singles, publish_one),
        Measurement(
            "append with expected version, 1,000 per save", events, append_batch
        ),
        Measurement("publish, producer.batch() of 1,000", events, publish_batch),
    ]
    section.rows += [row.as_dict() for row in rows]
    section.figures.update(
        {
            "load_full_seconds": full,
            "load_snapshot_seconds": fast,
            "append_single_per_s": rows[2].rate,
            "publish_single_per_s": rows[3].rate,
            "append_batch_per_s": rows[4].rate,
            "publish_batch_per_s": rows[5].rate,
        }
    )
    section.comparisons += [
        Comparison("load without / with a snapshot", ratio(full, fast)),
        Comparison(
            "appends / publishes, one per call", ratio(rows[2].rate, rows[3].rate)
        ),
        Comparison(
            "appends / publishes, 1,000 per call", ratio(rows[4].rate, rows[5].rate)
        ),
    ]
    section.notes.append(
        "a load reads the aggregate's index (LRANGE) and each entry's fields and "
        "payload; with a snapshot only the snapshot hash (and no event after it)"
    )
    return section


async def _load(
    repository: backbone.Repository[Plain], aggregate_id: str, events: int
) -> None:
    aggregate = await repository.load(aggregate_id)
    if aggregate.state.packed != events or aggregate.version != events:
        raise AssertionError(
            f"{aggregate_id}: loaded {aggregate.state.packed} events at version "
            f"{aggregate.version}, expected {events}"
        )
