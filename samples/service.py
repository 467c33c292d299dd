"""Running one handler as a long-lived consumer process until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Callable

import backbone

from .shipment import ShipmentTrackingConsumer, subscribe_shipment_tracking

Factory = Callable[[backbone.Backbone, argparse.Namespace], ShipmentTrackingConsumer]


async def serve(args: argparse.Namespace, group: str, make_handler: Factory) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    async with backbone.Backbone(args.redis_url, environment=args.environment) as bus:
        subscription = subscribe_shipment_tracking(
            bus,
            args.uri,
            make_handler(bus, args),
            group=group,
            consumer=args.consumer,
            start=backbone.StartFrom.BEGINNING,
        )
        async with subscription:
            subscription.stop_on_signals()
            await subscription.completion


def run(description: str, group: str, make_handler: Factory) -> None:
    from .common import arguments

    parser = arguments(description)
    parser.add_argument("--consumer", default=None, help="consumer name in the group")
    asyncio.run(serve(parser.parse_args(), group, make_handler))
