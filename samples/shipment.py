"""The demo's contract and its generated code, under the name this package has.

Installed, the samples are ``backbone.samples`` and the contracts
``backbone.samples.contracts``; in the repository they are the top-level
``samples/`` and ``contracts/`` folders (where tests import
``contracts.shipment_tracking_gen``). Either way the samples use the contract
modules of their own installation, never a user's ``contracts`` package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING or __package__ == "samples":
    from contracts.shipment_tracking import Product, Tier, User
    from contracts.shipment_tracking_gen import (
        ShipmentTrackingConsumer,
        ShipmentTrackingProducer,
        shipment_tracking_producer,
        subscribe_shipment_tracking,
    )
else:
    from .contracts.shipment_tracking import Product, Tier, User
    from .contracts.shipment_tracking_gen import (
        ShipmentTrackingConsumer,
        ShipmentTrackingProducer,
        shipment_tracking_producer,
        subscribe_shipment_tracking,
    )

__all__ = [
    "Product",
    "ShipmentTrackingConsumer",
    "ShipmentTrackingProducer",
    "Tier",
    "User",
    "shipment_tracking_producer",
    "subscribe_shipment_tracking",
]
