"""The shipment-tracking contract: an order moves from placed to received.

This is the Python counterpart of EventSourcing.Backbone's hello world. Each
method is one operation (an event type); its parameters are the event's payload,
stored one hash field per parameter.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
from typing import Protocol

import pydantic

from backbone import contract


class Tier(enum.Enum):
    """Customer tier, travels as its value."""

    STANDARD = "standard"
    GOLD = "gold"


class User(pydantic.BaseModel):
    """Who placed the order."""

    model_config = pydantic.ConfigDict(frozen=True)

    id: int
    name: str
    email: str
    tier: Tier = Tier.STANDARD


class Product(pydantic.BaseModel):
    """What was ordered."""

    model_config = pydantic.ConfigDict(frozen=True)

    id: int
    name: str
    price: decimal.Decimal


@contract(name="ShipmentTracking", version=1)
class ShipmentTracking(Protocol):
    """The steps of one order's shipment."""

    async def order_placed(
        self, user: User, product: Product, time: dt.datetime
    ) -> None:
        """A user ordered a product."""

    async def packing(self, email: str, product_id: int, time: dt.datetime) -> None:
        """The warehouse is packing the order."""

    async def on_delivery(self, email: str, product_id: int, time: dt.datetime) -> None:
        """The parcel left the warehouse."""

    async def on_received(self, email: str, product_id: int, time: dt.datetime) -> None:
        """The user received the parcel."""
