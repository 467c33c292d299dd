"""A consumer process for the fault tests (run as a script by tests/test_faults.py).

It subscribes a handler of ShipmentTracking.packing to a group and records what
it does in Redis, under keys the test reads:

    <prefix>:seen        hash   entry id -> times handled (HINCRBY, after the work)
    <prefix>:started     set    entry ids whose handler started
    <prefix>:finished    set    entry ids whose handler finished
    <prefix>:ready:<c>   string set once the subscription runs
    <prefix>:stats:<c>   hash   the subscription's counters, refreshed often

It stops gracefully on SIGTERM/SIGINT and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import backbone
from contracts.shipment_tracking import Product, User
from contracts.shipment_tracking_gen import subscribe_shipment_tracking


class Worker:
    """Handles `packing` by recording it; the other operations are not used."""

    def __init__(self, redis: backbone.Backbone, prefix: str, delay: float) -> None:
        self.redis = redis.redis
        self.prefix = prefix
        self.delay = delay

    async def order_placed(
        self, user: User, product: Product, time: dt.datetime
    ) -> None:
        return None

    async def packing(
        self,
        email: str,
        product_id: int,
        time: dt.datetime,
        *,
        context: backbone.EventContext = backbone.NO_CONTEXT,
    ) -> None:
        event = context.event_id.id
        await self.redis.sadd(f"{self.prefix}:started", event)
        if self.delay:
            await asyncio.sleep(self.delay)  # the handler's simulated work
        await self.redis.hincrby(f"{self.prefix}:seen", event, 1)
        await self.redis.sadd(f"{self.prefix}:finished", event)

    async def on_delivery(self, email: str, product_id: int, time: dt.datetime) -> None:
        return None

    async def on_received(self, email: str, product_id: int, time: dt.datetime) -> None:
        return None


async def publish_stats(
    bus: backbone.Backbone, prefix: str, sub: backbone.Subscription
) -> None:
    stats = {k: str(v) for k, v in dataclasses.asdict(sub.stats).items()}
    stats["in_flight"] = str(sub.in_flight)
    stats["pid"] = str(os.getpid())
    await bus.redis.hset(f"{prefix}:stats:{sub.consumer}", mapping=stats)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--environment", required=True)
    parser.add_argument("--uri", default="faults")
    parser.add_argument("--group", default="workers")
    parser.add_argument("--consumer", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--max-in-flight", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--claim-idle", type=float, default=1.0)
    parser.add_argument("--shutdown-timeout", type=float, default=10.0)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.WARNING,
        format=f"%(asctime)s {args.consumer} %(levelname)s %(name)s: %(message)s",
    )
    options = backbone.SubscriptionOptions(
        max_in_flight=args.max_in_flight,
        concurrency=args.concurrency,
        claim_idle=args.claim_idle,
        claim_interval=min(0.2, args.claim_idle / 4),
        shutdown_timeout=args.shutdown_timeout,
        block=1.0,
        retry=backbone.RetryPolicy(max_deliveries=20, initial_backoff=0.01),
    )
    async with backbone.Backbone(args.url, environment=args.environment) as bus:
        sub = subscribe_shipment_tracking(
            bus,
            args.uri,
            Worker(bus, args.prefix, args.delay),
            group=args.group,
            consumer=args.consumer,
            start=backbone.StartFrom.BEGINNING,
            options=options,
        )
        await sub.start()
        sub.stop_on_signals()
        await bus.redis.set(f"{args.prefix}:ready:{args.consumer}", os.getpid())

        async def report() -> None:
            while True:
                # Redis may be restarting: try again next time.
                with contextlib.suppress(Exception):
                    await publish_stats(bus, args.prefix, sub)
                await asyncio.sleep(0.02)  # refresh period of the stats, not a wait

        reporter = asyncio.create_task(report())
        try:
            await sub.completion
        finally:
            reporter.cancel()
        for _ in range(50):
            try:
                await publish_stats(bus, args.prefix, sub)
                break
            except Exception:
                await asyncio.sleep(0.1)


if __name__ == "__main__":
    asyncio.run(main())
