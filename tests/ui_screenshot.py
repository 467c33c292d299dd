"""The screenshot of ``backbone ui`` in docs/operations.md, taken while events
flow: a redis-server of its own, a producer whose pace rises and falls, a group
that keeps up (and dead-letters the orders whose card is declined), a slower
group that falls behind and catches up, and a projection; then Debian's
chromium (through Playwright) photographs the page.

    python3 dev.py shell python tests/ui_screenshot.py docs/ui.png [SECONDS]
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

from backbone.samples.contracts.shipment_tracking_gen import (
    ShipmentTrackingDispatcher,
    shipment_tracking_producer,
    subscribe_shipment_tracking,
)

import backbone
from conftest import RedisServer, free_port
from ui_helpers import TOKEN, serving

URI = "orders"


class Billing:
    """Charges each order; the card of every 89th is declined."""

    async def packing(self, email: str, product_id: int, time: dt.datetime) -> None:
        if product_id % 89 == 0:
            raise RuntimeError(f"card declined for order {product_id}")


class Warehouse:
    """Slower than the producer at its peak: its lag rises and falls."""

    async def packing(self, email: str, product_id: int, time: dt.datetime) -> None:
        await asyncio.sleep(0.008)


class Packed:
    """A read model: orders packed per hour."""

    def __init__(self, key: str) -> None:
        self.key = key

    async def packing(
        self,
        email: str,
        product_id: int,
        time: dt.datetime,
        *,
        context: backbone.ProjectionContext,
    ) -> None:
        context.writes.hincrby(self.key, time.strftime("%Y-%m-%dT%H"), 1)


def subscribe(
    bus: backbone.Backbone,
    handler: object,
    group: str,
    options: backbone.SubscriptionOptions | None = None,
) -> backbone.Subscription:
    return subscribe_shipment_tracking(
        bus, URI, handler, group=group, partial=True, options=options
    )


async def produce(bus: backbone.Backbone, seconds: float) -> None:
    producer = shipment_tracking_producer(bus, URI)
    start = time.monotonic()
    number = 0
    while (elapsed := time.monotonic() - start) < seconds:
        # 40 to 200 events a second, in a wave of about a minute.
        batch = round(12 + 8 * math.sin(elapsed / 9))
        async with producer.batch() as writes:
            for _ in range(batch):
                number += 1
                now = dt.datetime.now(dt.UTC)
                writes.packing(f"c{number}@example.com", number, now)
        await asyncio.sleep(0.1)  # the producer's pace, not a synchronisation


async def photograph(url: str, out: Path, seconds: float) -> None:
    from playwright.async_api import async_playwright

    executable = shutil.which("chromium")
    if executable is None:
        sys.exit("no chromium: apt-get install chromium")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, headless=True
        )
        page = await browser.new_page(viewport={"width": 1400, "height": 1180})
        await page.goto(f"{url}#token={TOKEN}")
        await asyncio.sleep(seconds)  # the chart fills while events flow
        await page.screenshot(path=str(out))
        await browser.close()


async def main(out: Path, seconds: float) -> None:
    with tempfile.TemporaryDirectory(prefix="backbone-ui-shot-") as folder:
        server = RedisServer(free_port(), Path(folder))
        server.start()
        try:
            async with backbone.Backbone(server.url, environment="prod") as bus:
                retry = backbone.RetryPolicy(max_deliveries=2, initial_backoff=0.05)
                keeping_up = backbone.SubscriptionOptions(retry=retry)
                projection = backbone.Projection(
                    bus,
                    URI,
                    "packed",
                    Packed(bus.keys(URI).projection("packed", "per-hour")),
                    ShipmentTrackingDispatcher,
                )
                async with (
                    subscribe(bus, Billing(), "billing", keeping_up),
                    subscribe(bus, Warehouse(), "warehouse"),
                    serving(bus, actions=True, interval=1.0) as served,
                ):
                    following = asyncio.ensure_future(projection.run())
                    producing = asyncio.ensure_future(produce(bus, seconds + 30))
                    try:
                        await photograph(served.url, out, seconds)
                    finally:
                        producing.cancel()
                        projection.stop()
                        with contextlib.suppress(asyncio.CancelledError):
                            await producing
                        await following
        finally:
            server.stop()
    print(f"wrote {out}")


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/ui.png")
    asyncio.run(main(target, float(sys.argv[2]) if len(sys.argv) > 2 else 150.0))
