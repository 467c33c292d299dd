"""End-to-end latency at a fixed rate: backbone producer to backbone subscription.

The producer runs in its own process, as a service would, and is paced by
absolute deadlines (event k is due at ``start + k / rate``; a late pacer catches
up by sending every due event at once, so sleep drift never lowers the rate). Each
event is published from its own task, so a slow round trip does not hold back the
next send (the producer coalesces what overlaps). The ``time`` parameter carries
the send time (wall clock, microseconds; both processes read the same clock);
latency is the handler's start time minus that. Events of the warm-up are sent but
not counted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import multiprocessing
import time

import backbone
from contracts.shipment_tracking import Product, User
from contracts.shipment_tracking_gen import (
    shipment_tracking_producer,
    subscribe_shipment_tracking,
)

from .common import EMAIL, Section, Settings, fresh_gc, run_loop
from .server import BenchServer

__all__ = ["percentile", "run"]


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile P (0-100) of SORTED_VALUES."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class LatencyHandler:
    """Records handler start minus send time of every measured event."""

    def __init__(self, first_measured: int, total: int) -> None:
        self.first_measured = first_measured
        self.total = total
        self.seen = 0
        self.latencies: list[float] = []
        self.done = asyncio.Event()

    async def packing(self, email: str, product_id: int, time: dt.datetime) -> None:
        now = _now()
        if product_id >= self.first_measured:
            self.latencies.append(now - time.timestamp())
        self.seen += 1
        if self.seen >= self.total:
            self.done.set()

    async def order_placed(
        self, user: User, product: Product, time: dt.datetime
    ) -> None:
        raise AssertionError("not sent")

    async def on_delivery(self, email: str, product_id: int, time: dt.datetime) -> None:
        raise AssertionError("not sent")

    async def on_received(self, email: str, product_id: int, time: dt.datetime) -> None:
        raise AssertionError("not sent")


_now = time.time


async def _produce(
    url: str, environment: str, rate: int, total: int
) -> tuple[list[float], float]:
    """Publish TOTAL events at RATE per second; returns the pacer's lateness per
    event and the seconds the sending took."""
    lags: list[float] = []
    async with backbone.Backbone(url, environment=environment) as bus:
        producer = shipment_tracking_producer(bus, "latency")
        await producer.packing(EMAIL, -1, dt.datetime.now(dt.UTC))  # connect first
        loop = asyncio.get_running_loop()
        sends: set[asyncio.Task[backbone.EventId]] = set()
        fresh_gc()
        start = loop.time() + 0.05
        for k in range(total):
            due = start + k / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            lags.append(loop.time() - due)
            sent_at = dt.datetime.fromtimestamp(_now(), tz=dt.UTC)
            task = loop.create_task(producer.packing(EMAIL, k, sent_at))
            sends.add(task)
            task.add_done_callback(sends.discard)
        seconds = loop.time() - start
        if sends:
            await asyncio.gather(*sends)
    return lags, seconds


def _producer_process(
    url: str,
    environment: str,
    rate: int,
    total: int,
    out: multiprocessing.Queue[tuple[list[float], float]],
) -> None:
    out.put(run_loop(_produce(url, environment, rate, total)))


async def run(server: BenchServer, settings: Settings) -> Section:
    section = Section(
        "latency",
        f"End-to-end latency at {settings.latency_rate} events/s (ms)",
    )
    rate = settings.latency_rate
    warmup = int(rate * settings.latency_warmup_seconds)
    measured = int(rate * settings.latency_seconds)
    total = warmup + measured
    handler = LatencyHandler(warmup, total)
    bus = backbone.Backbone(server.url, environment=server.environment)
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[tuple[list[float], float]] = context.Queue()
    try:
        async with subscribe_shipment_tracking(
            bus, "latency", handler, group="latency", consumer="latency-1"
        ):
            fresh_gc()
            process = context.Process(
                target=_producer_process,
                args=(server.url, server.environment, rate, total, results),
            )
            process.start()
            await asyncio.wait_for(handler.done.wait(), 60 + total / rate)
            lags, sending_seconds = await asyncio.to_thread(results.get, True, 60)
            await asyncio.to_thread(process.join, 30)
        client = server.client()
        try:
            await server.clean(client)
        finally:
            await client.aclose()
    finally:
        await bus.close()

    values = sorted(v * 1000 for v in handler.latencies)
    measured_lags = sorted(v * 1000 for v in lags[warmup:])
    figures: dict[str, float | None] = {
        "p50_ms": percentile(values, 50),
        "p90_ms": percentile(values, 90),
        "p99_ms": percentile(values, 99),
        "p99_9_ms": percentile(values, 99.9),
        "max_ms": values[-1] if values else None,
        "mean_ms": sum(values) / len(values) if values else None,
        "events_measured": float(len(values)),
        "achieved_rate": total / sending_seconds if sending_seconds > 0 else None,
        "pacer_lag_p99_ms": percentile(measured_lags, 99),
        "pacer_lag_max_ms": measured_lags[-1] if measured_lags else None,
    }
    section.figures.update(figures)
    section.rows.append(
        {
            "name": "backbone producer process -> backbone subscription",
            "events": len(values),
            "rate": rate,
            "seconds": settings.latency_seconds,
            **figures,
        }
    )
    section.notes.append(
        "producer: backbone in its own process, one task per event at absolute "
        "deadlines (overlapping calls coalesce); consumer: backbone subscription, "
        "default options; latency = handler start - send time carried in the event"
    )
    section.notes.append(
        f"{warmup} warm-up events not counted; pacer lateness (time past each "
        f"event's deadline when it was sent) p99 {figures['pacer_lag_p99_ms']:.3f} ms"
    )
    return section
