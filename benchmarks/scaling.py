"""Scaling out on a Redis Cluster: one master against three.

A stream lives in one hash slot, so on one node; a partitioned stream (here
``PARTITIONS`` partitions of the ShipmentTracking stream, events spread
round-robin) has a slot per partition, so its load spreads over the masters.
This section starts its own clusters (tests/cluster.py): ``LocalCluster(1, 0)``
and ``LocalCluster(3, 0)`` (no replicas: replication is not what is measured),
and on each measures

- publishing: ``PROCESSES`` producer processes, each with ``CONCURRENCY``
  concurrent callers (coalesced into one round trip per partition);
- consuming: ``PROCESSES`` consumer processes sharing one group of the
  partitioned subscription, reading what was published.

The processes connect and warm up before the clock starts; the clock stops
when every event is written (publishing) or handled (consuming). Client CPU
(the processes' own) and server CPU (``INFO cpu`` of every master) are taken
over the same window: on a small machine the client, not Redis, is often the
limit, and these two figures tell which. The single-server sections do not run
it; ``python -m benchmarks --only scaling`` does.
"""

from __future__ import annotations

import asyncio
import importlib.util
import multiprocessing
import multiprocessing.sharedctypes
import multiprocessing.synchronize
import os
import queue
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import redis

import backbone
from contracts.shipment_tracking_gen import (
    SHIPMENT_TRACKING,
    ShipmentTrackingDispatcher,
    ShipmentTrackingProducer,
)

from .common import Comparison, Section, Settings, packing_args, ratio
from .consumer import CountingHandler
from .server import BenchServer
from .tables import Table, comparisons, num

__all__ = ["run", "tables"]

ROOT = Path(__file__).resolve().parent.parent
URI = "scaling.shipments"
ENVIRONMENT = "bench-scaling"
PARTITIONS = 6
CONCURRENCY = 128
MASTERS = (1, 3)

# ("ready" | "done" | "error", payload)
Report = tuple[str, Any]


def _local_cluster() -> Any:
    """tests/cluster.py's LocalCluster class (tests/ is no package)."""
    path = ROOT / "tests" / "cluster.py"
    spec = importlib.util.spec_from_file_location("backbone_bench_cluster", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.LocalCluster


# --- the worker processes ------------------------------------------------------------


async def _publish(
    bus: backbone.Backbone, events: int, go: multiprocessing.synchronize.Event
) -> int:
    producer = ShipmentTrackingProducer(
        bus.producer(URI, SHIPMENT_TRACKING.spec, partitions=PARTITIONS)
    )
    args = packing_args()
    await producer.packing(*args)  # connects, loads the script, agrees the count
    await asyncio.to_thread(go.wait)

    async def caller(count: int) -> None:
        for _ in range(count):
            await producer.packing(*args)

    share, extra = divmod(events, CONCURRENCY)
    await asyncio.gather(
        *(caller(share + (1 if i < extra else 0)) for i in range(CONCURRENCY))
    )
    return events


async def _consume(
    bus: backbone.Backbone,
    index: int,
    go: multiprocessing.synchronize.Event,
    stop: multiprocessing.synchronize.Event,
    handled: Any,
) -> int:
    await asyncio.to_thread(go.wait)
    handler = CountingHandler(1 << 62)
    subscription = await bus.subscribe(
        URI,
        ShipmentTrackingDispatcher(handler),
        group="scaling",
        consumer=f"member-{index}",
        start=backbone.StartFrom.BEGINNING,
        partitions=PARTITIONS,
    )
    try:
        while not stop.is_set():
            handled[index] = handler.count
            await asyncio.sleep(0.01)  # publishing the count to the parent
    finally:
        await subscription.stop()
    handled[index] = handler.count
    return handler.count


def _worker(
    url: str,
    role: str,
    events: int,
    index: int,
    reports: multiprocessing.Queue[Report],
    go: multiprocessing.synchronize.Event,
    stop: multiprocessing.synchronize.Event,
    handled: Any,
) -> None:
    async def main() -> None:
        bus = backbone.Backbone(url, environment=ENVIRONMENT)
        try:
            await bus.redis.ping()
            reports.put(("ready", index))
            cpu = time.process_time()
            if role == "publish":
                count = await _publish(bus, events, go)
            else:
                count = await _consume(bus, index, go, stop, handled)
            reports.put(("done", (index, count, time.process_time() - cpu)))
        finally:
            await bus.close()

    try:
        asyncio.run(main())
    except Exception as exc:  # told to the parent, which fails the run
        reports.put(("error", f"{role} {index}: {type(exc).__name__}: {exc}"))


# --- the parent ----------------------------------------------------------------------


def _server_cpu(cluster: Any) -> float:
    total = 0.0
    for node in cluster.master_nodes():
        client = redis.Redis(host="127.0.0.1", port=node.port)
        try:
            info = client.info("cpu")
            total += float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
        finally:
            client.close()
    return total


def _next(reports: multiprocessing.Queue[Report], deadline: float) -> Report:
    while True:
        try:
            got: Report = reports.get(timeout=0.5)
        except queue.Empty:
            if time.monotonic() > deadline:
                raise RuntimeError("a worker process gave no word in time") from None
            continue
        if got[0] == "error":
            raise RuntimeError(f"a worker process failed: {got[1]}")
        return got


def _phase(cluster: Any, role: str, processes: int, events: int) -> dict[str, Any]:
    """One timed phase: PROCESSES workers of ROLE; its row."""
    context = multiprocessing.get_context("spawn")
    reports: multiprocessing.Queue[Report] = context.Queue()
    go, stop = context.Event(), context.Event()
    handled = context.Array("q", processes, lock=False)
    share, extra = divmod(events, processes)
    workers = [
        context.Process(
            target=_worker,
            args=(
                cluster.url,
                role,
                share + (1 if i < extra else 0),
                i,
                reports,
                go,
                stop,
                handled,
            ),
            daemon=True,
        )
        for i in range(processes)
    ]
    deadline = time.monotonic() + 300
    try:
        for worker in workers:
            worker.start()
        for _ in workers:
            _next(reports, deadline)
        server_cpu = _server_cpu(cluster)
        started = time.perf_counter()
        go.set()
        if role == "consume":
            # the members report their counts; the clock stops at the last event
            while sum(handled) < events:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"consumed {sum(handled)} of {events} in time")
                if any(not w.is_alive() for w in workers):
                    _next(reports, deadline)  # raises the worker's error
                time.sleep(0.002)  # polling the members' shared counters
            seconds = time.perf_counter() - started
            stop.set()
        done = [_next(reports, deadline)[1] for _ in workers]
        if role == "publish":
            seconds = time.perf_counter() - started
        server_cpu = _server_cpu(cluster) - server_cpu
    finally:
        stop.set()
        go.set()
        for worker in workers:
            worker.join(10)
            if worker.is_alive():
                worker.terminate()
                worker.join(5)
    counted = sum(count for _index, count, _cpu in done)
    if role == "publish" and counted != events:
        raise RuntimeError(f"published {counted} of {events}")
    return {
        "events": events,
        "seconds": seconds,
        "events_per_s": events / seconds,
        "client_cpu_s": sum(cpu for _index, _count, cpu in done),
        "server_cpu_s": server_cpu,
        "processes": processes,
    }


def _measure(masters: int, processes: int, events: int) -> list[dict[str, Any]]:
    cluster = _local_cluster()(masters, 0).start()
    try:
        rows = []
        for role in ("publish", "consume"):
            row = _phase(cluster, role, processes, events)
            row["name"] = f"{role}, {masters} master(s)"
            row["group"] = role
            row["masters"] = masters
            rows.append(row)
        return rows
    finally:
        cluster.stop()


async def run(server: BenchServer, settings: Settings) -> Section:
    section = Section(
        "scaling",
        f"Scaling on a Redis Cluster: {PARTITIONS} partitions, 1 master vs 3",
    )
    missing = [b for b in ("redis-server", "redis-cli") if shutil.which(b) is None]
    if missing:
        section.notes.append(f"not run: no {' or '.join(missing)} here")
        return section
    processes = 2 if settings.quick else 4
    events = 4_000 if settings.quick else 60_000
    for masters in MASTERS:
        section.rows += await asyncio.to_thread(_measure, masters, processes, events)
    by = {(row["group"], row["masters"]): row["events_per_s"] for row in section.rows}
    for role in ("publish", "consume"):
        for masters in MASTERS:
            section.figures[f"{role}_{masters}_masters"] = by[(role, masters)]
        speedup = ratio(by[(role, 3)], by[(role, 1)])
        section.figures[f"{role}_speedup"] = speedup
        section.comparisons.append(Comparison(f"{role}: 3 masters / 1 master", speedup))
    cores = os.cpu_count() or 1
    section.notes.append(
        f"{cores} core(s) here, shared by the servers and the {processes} client "
        "processes: client CPU + server CPU near cores x seconds means the machine, "
        "not Redis, is the limit"
    )
    return section


def tables(section: Section) -> list[Table]:
    table = Table(
        section.title,
        [
            "variant",
            "processes",
            "events",
            "seconds",
            "events/s",
            "client CPU s",
            "server CPU s",
        ],
        right={1, 2, 3, 4, 5, 6},
    )
    for row in section.rows:
        table.rows.append(
            [
                row["name"],
                str(row["processes"]),
                num(row["events"]),
                num(row["seconds"], 2),
                num(row["events_per_s"]),
                num(row["client_cpu_s"], 2),
                num(row["server_cpu_s"], 2),
            ]
        )
    table.notes += section.notes
    return [table, comparisons(section)]
