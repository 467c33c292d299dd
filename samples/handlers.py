"""The handlers of the shipment-tracking samples."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Callable

import backbone

from .common import STEPS, now
from .shipment import Product, ShipmentTrackingProducer, User


class Transit:
    """Answers each step by producing the next one (the warehouse and the carrier).

    Subscribed in group "transit"; it publishes through PRODUCER, so each new event
    carries the handled one as its causation id.
    """

    def __init__(self, producer: ShipmentTrackingProducer) -> None:
        self.producer = producer

    async def order_placed(
        self, user: User, product: Product, time: dt.datetime
    ) -> None:
        await self.producer.packing(user.email, product.id, now())

    async def packing(self, email: str, product_id: int, time: dt.datetime) -> None:
        await self.producer.on_delivery(email, product_id, now())

    async def on_delivery(self, email: str, product_id: int, time: dt.datetime) -> None:
        await self.producer.on_received(email, product_id, now())

    async def on_received(self, email: str, product_id: int, time: dt.datetime) -> None:
        return None


class Printer:
    """Prints every step as it flows (group "consumer").

    ``done`` is set once EXPECTED steps have been printed.
    """

    def __init__(
        self, write: Callable[[str], None] = print, expected: int | None = None
    ) -> None:
        self._write = write
        self.printed = 0
        self.expected = expected
        self.done = asyncio.Event()

    def write(self, line: str) -> None:
        self._write(line)
        self.printed += 1
        if self.expected is not None and self.printed >= self.expected:
            self.done.set()

    async def order_placed(
        self,
        user: User,
        product: Product,
        time: dt.datetime,
        *,
        context: backbone.EventContext = backbone.NO_CONTEXT,
    ) -> None:
        self.write(
            f"{context.id.id:>17}  order_placed  {user.email:<22} "
            f"product {product.id} ({product.name}, {product.price})"
        )

    async def packing(
        self,
        email: str,
        product_id: int,
        time: dt.datetime,
        *,
        context: backbone.EventContext = backbone.NO_CONTEXT,
    ) -> None:
        self.write(
            f"{context.id.id:>17}  packing       {email:<22} product {product_id}"
        )

    async def on_delivery(
        self,
        email: str,
        product_id: int,
        time: dt.datetime,
        *,
        context: backbone.EventContext = backbone.NO_CONTEXT,
    ) -> None:
        self.write(
            f"{context.id.id:>17}  on_delivery   {email:<22} product {product_id}"
        )

    async def on_received(
        self,
        email: str,
        product_id: int,
        time: dt.datetime,
        *,
        context: backbone.EventContext = backbone.NO_CONTEXT,
    ) -> None:
        self.write(
            f"{context.id.id:>17}  on_received   {email:<22} product {product_id}"
        )


@dataclasses.dataclass
class OrderState:
    email: str
    product_id: int
    step: str
    updated: dt.datetime
    history: list[str] = dataclasses.field(default_factory=list)


class Reporter:
    """Keeps the current state of each order (group "reporter").

    ``done`` is set once EXPECTED orders have all been received.
    """

    def __init__(self, expected: int | None = None) -> None:
        self.orders: dict[tuple[str, int], OrderState] = {}
        self.expected = expected
        self.done = asyncio.Event()

    def _advance(
        self, email: str, product_id: int, step: str, time: dt.datetime
    ) -> None:
        key = (email, product_id)
        state = self.orders.get(key)
        if state is None:
            state = self.orders[key] = OrderState(email, product_id, step, time)
        # Steps may arrive out of order with concurrency > 1: keep the furthest.
        if STEPS.index(step) >= STEPS.index(state.step):
            state.step, state.updated = step, time
        state.history.append(step)
        if self.expected is not None and self.received() >= self.expected:
            self.done.set()

    def received(self) -> int:
        return sum(1 for s in self.orders.values() if s.step == "on_received")

    async def order_placed(
        self, user: User, product: Product, time: dt.datetime
    ) -> None:
        self._advance(user.email, product.id, "order_placed", time)

    async def packing(self, email: str, product_id: int, time: dt.datetime) -> None:
        self._advance(email, product_id, "packing", time)

    async def on_delivery(self, email: str, product_id: int, time: dt.datetime) -> None:
        self._advance(email, product_id, "on_delivery", time)

    async def on_received(self, email: str, product_id: int, time: dt.datetime) -> None:
        self._advance(email, product_id, "on_received", time)
