"""An aggregate of the shipment-tracking contract, for the event-store tests."""

from __future__ import annotations

import datetime as dt
import decimal

import pydantic

import backbone
from contracts.shipment_tracking import Product, User
from contracts.shipment_tracking_gen import ShipmentTrackingAggregate


class ShipmentState(pydantic.BaseModel):
    stage: str = "new"
    email: str | None = None
    product_id: int | None = None
    total: decimal.Decimal = decimal.Decimal(0)
    placed_at: dt.datetime | None = None
    steps: list[str] = []


class Shipment(ShipmentTrackingAggregate[ShipmentState]):
    """Folds order_placed, packing and on_delivery; leaves on_received alone."""

    snapshot_every = 3

    def __init__(self) -> None:
        super().__init__(ShipmentState())

    def apply_order_placed(
        self, user: User, product: Product, time: dt.datetime
    ) -> None:
        self.state.stage = "placed"
        self.state.email = user.email
        self.state.product_id = product.id
        self.state.total += product.price
        self.state.placed_at = time
        self.state.steps.append("placed")

    def apply_packing(self, email: str, product_id: int, time: dt.datetime) -> None:
        self.state.stage = "packing"
        self.state.steps.append(f"packing:{product_id}")

    def apply_on_delivery(self, email: str, product_id: int, time: dt.datetime) -> None:
        self.state.stage = "delivery"
        self.state.steps.append("delivery")

    # commands

    def place(self, user: User, product: Product, time: dt.datetime) -> None:
        if self.state.stage != "new":
            raise ValueError(f"order {self.id} was placed already")
        self.record_order_placed(user, product, time)

    def pack(self, product_id: int, time: dt.datetime) -> None:
        self.record_packing(self.state.email or "nobody@example.com", product_id, time)


class Unsnapshotted(Shipment):
    """The same aggregate without snapshots: every load replays all events."""

    snapshot_every = 0


class Schema2(Shipment):
    """The same aggregate after a change of its state's schema."""

    snapshot_schema = 2


async def stored_counts(
    bus: backbone.Backbone, uri: str, aggregate_id: str
) -> tuple[int, int, int]:
    """(stream length, index length, payload keys) of URI and AGGREGATE_ID."""
    keys = bus.keys(uri)
    payloads = [
        key
        async for key in bus.redis.scan_iter(
            match=keys.payload_prefix + "*", count=1000
        )
    ]
    return (
        await bus.redis.xlen(keys.stream),
        await bus.redis.llen(keys.aggregate(aggregate_id)),
        len(payloads),
    )
