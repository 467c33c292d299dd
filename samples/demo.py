"""The whole shipment-tracking flow in one process (``backbone demo``).

A producer places orders; "transit" answers each step with the next one; a
printer shows each step as it flows; a reporter keeps each order's state. It ends
when every order has been received (or the timeout passes) and prints a summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time

from rich.console import Console
from rich.table import Table

import backbone

from .common import URI, now, order
from .handlers import Printer, Reporter, Transit
from .shipment import shipment_tracking_producer, subscribe_shipment_tracking


async def run_demo(
    redis_url: str,
    *,
    orders: int = 3,
    environment: str = "demo",
    timeout: float = 30.0,
    out: Console | None = None,
) -> bool:
    """Run the flow; True when every order reached "on_received" in time."""
    console = out or Console()
    # A fresh stream per run, removed at the end, so runs on a shared Redis never
    # see each other's events.
    uri = f"{URI}.{secrets.token_hex(4)}"
    async with backbone.Backbone(redis_url, environment=environment) as bus:
        where = "embedded Redis" if bus.embedded else bus.url
        console.print(f"backbone demo on {where}, stream {bus.keys(uri).stream}")
        producer = shipment_tracking_producer(bus, uri)
        reporter = Reporter(expected=orders)
        printer = Printer(
            lambda line: console.print(line, highlight=False), expected=4 * orders
        )
        start = backbone.StartFrom.BEGINNING
        subscriptions = [
            subscribe_shipment_tracking(
                bus, uri, Transit(producer), group="transit", start=start
            ),
            subscribe_shipment_tracking(
                bus, uri, printer, group="consumer", start=start
            ),
            subscribe_shipment_tracking(
                bus, uri, reporter, group="reporter", start=start
            ),
        ]
        started = time.perf_counter()
        try:
            for sub in subscriptions:
                await sub.start()
            for index in range(1, orders + 1):
                user, product = order(index)
                await producer.order_placed(user, product, now())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await reporter.done.wait()
                    await printer.done.wait()
        finally:
            for sub in subscriptions:
                await sub.stop()
            await _remove_stream(bus, uri)
        elapsed = time.perf_counter() - started
        _summary(console, reporter, orders, elapsed)
        return reporter.received() == orders


async def _remove_stream(bus: backbone.Backbone, uri: str) -> None:
    keys = bus.keys(uri)
    pattern = keys.stream.replace("{", "\\{").replace("}", "\\}") + "*"
    batch: list[bytes] = []
    async for key in bus.redis.scan_iter(match=pattern, count=500):
        batch.append(key)
        if len(batch) >= 500:
            await bus.redis.delete(*batch)
            batch.clear()
    if batch:
        await bus.redis.delete(*batch)


def _summary(console: Console, reporter: Reporter, orders: int, elapsed: float) -> None:
    table = Table(title="orders")
    table.add_column("user")
    table.add_column("product")
    table.add_column("state")
    table.add_column("steps seen")
    for state in sorted(reporter.orders.values(), key=lambda s: s.product_id):
        table.add_row(
            state.email, str(state.product_id), state.step, " > ".join(state.history)
        )
    console.print(table)
    received = reporter.received()
    verdict = "all received" if received == orders else "NOT all received"
    console.print(
        f"{orders} order(s) placed, {received} received ({verdict}) in {elapsed:.2f}s",
        highlight=False,
    )
