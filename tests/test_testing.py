"""backbone.testing, used the way a service's own tests would use it: no Redis
server, no polling, typed events to assert on."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

import backbone
from backbone.testing import TestBus
from contracts.shipment_tracking import Product, User
from contracts.shipment_tracking_gen import (
    ShipmentTrackingProducer,
    shipment_tracking_producer,
    subscribe_shipment_tracking,
)
from helpers import Flaky, Recorder, moment, product, user


class Transit:
    """Answers an order with the next step (as a service's handler would)."""

    def __init__(self, producer: ShipmentTrackingProducer) -> None:
        self.producer = producer

    async def order_placed(
        self, user: User, product: Product, time: dt.datetime
    ) -> None:
        await self.producer.packing(user.email, product.id, moment(1))

    async def packing(self, email: str, product_id: int, time: dt.datetime) -> None:
        await self.producer.on_delivery(email, product_id, moment(2))

    async def on_delivery(self, email: str, product_id: int, time: dt.datetime) -> None:
        return None

    async def on_received(self, email: str, product_id: int, time: dt.datetime) -> None:
        return None


async def test_drain_waits_for_chains_of_events_across_subscriptions() -> None:
    async with TestBus() as bus:
        producer = shipment_tracking_producer(bus, "orders")
        seen = Recorder()
        async with (
            subscribe_shipment_tracking(
                bus, "orders", Transit(producer), group="transit"
            ),
            subscribe_shipment_tracking(bus, "orders", seen, group="audit"),
        ):
            await producer.order_placed(user(1), product(1), moment())
            await bus.drain()
            # No polling: every event, also those published by handlers, is done.
            assert [op for op, _, _ in seen.calls] == [
                "order_placed",
                "packing",
                "on_delivery",
            ]
        published = await bus.published("orders")
        assert [event.operation for event in published] == [
            "order_placed",
            "packing",
            "on_delivery",
        ]
        (order,) = await bus.published("orders", "order_placed")
        assert order.args["user"] == user(1)  # typed: a User model again
        assert isinstance(order.args["time"], dt.datetime)
        (packing,) = await bus.published("orders", "packing")
        assert packing.args == {
            "email": "user1@example.com",
            "product_id": product(1).id,
            "time": moment(1),
        }
        assert packing.metadata["ca"] == str(order.id)  # caused by the order


async def test_drain_covers_retries_and_dead_letters() -> None:
    async with TestBus() as bus:
        producer = shipment_tracking_producer(bus, "orders")
        options = backbone.SubscriptionOptions(
            retry=backbone.RetryPolicy(max_deliveries=3, initial_backoff=0.001)
        )
        failing = Flaky(failures=99)
        async with subscribe_shipment_tracking(
            bus, "orders", failing, group="g", options=options
        ):
            event = await producer.packing("a@example.com", 1, moment())
            await bus.drain()
            assert failing.attempts[event.id] == 3
        (letter,) = await bus.dead_letters("orders")
        assert letter.event_id == event
        assert letter.reason == backbone.DeadLetterReason.HANDLER_ERROR


async def test_drain_names_a_subscription_that_never_finishes() -> None:
    async with TestBus() as bus:
        producer = shipment_tracking_producer(bus, "orders")
        stuck = Flaky(gate=asyncio.Event())
        async with subscribe_shipment_tracking(
            bus,
            "orders",
            stuck,
            group="stuck",
            options=backbone.SubscriptionOptions(shutdown_timeout=0.01),
        ):
            await producer.packing("a@example.com", 1, moment())
            with pytest.raises(TimeoutError, match="group=stuck"):
                await bus.drain(timeout=0.2)


async def test_the_fixture_gives_a_fresh_bus_and_stops_what_is_left(
    backbone_bus: TestBus,
) -> None:
    producer = shipment_tracking_producer(backbone_bus, "orders")
    seen = Recorder()
    subscription = await subscribe_shipment_tracking(
        backbone_bus, "orders", seen, group="g"
    )
    await producer.packing("a@example.com", 1, moment())
    await backbone_bus.drain()
    assert seen.count() == 1
    assert subscription.running  # the fixture stops it after the test
    assert backbone_bus.embedded


async def test_drain_refuses_a_subscription_that_was_never_started() -> None:
    async with TestBus() as bus:
        subscribe_shipment_tracking(bus, "orders", Recorder(), group="g")
        with pytest.raises(RuntimeError, match="never started"):
            await bus.drain()
