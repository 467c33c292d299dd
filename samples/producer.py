"""Place orders: ``python -m samples.producer --orders 5``."""

from __future__ import annotations

import asyncio

import backbone

from .common import arguments, now, order
from .shipment import shipment_tracking_producer


async def main() -> None:
    parser = arguments(__doc__ or "")
    parser.add_argument("--orders", type=int, default=3)
    args = parser.parse_args()
    async with backbone.Backbone(args.redis_url, environment=args.environment) as bus:
        producer = shipment_tracking_producer(bus, args.uri)
        for index in range(1, args.orders + 1):
            user, product = order(index)
            event_id = await producer.order_placed(user, product, now())
            print(f"placed order {index}: {event_id}")


if __name__ == "__main__":
    asyncio.run(main())
