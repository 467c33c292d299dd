"""``python -m benchmarks.profiling``: where backbone's client CPU goes.

Runs backbone's producer (concurrent calls, explicit batches) and its consumer
(default options and ``max_in_flight=1000``) under a profiler against a
redis-server of its own, prints the top functions by own time and by cumulative
time (as shares of the profiled wall time) and writes ``<scenario>.txt`` (and
``.prof`` for cProfile, ``.html`` for pyinstrument), named
``<scenario>-<profiler>``, to
``--output`` (default ``benchmarks/results/profile``).

``--profiler cprofile`` (default) counts every call, which adds a cost to each
Python call, so its shares lean towards code that makes many small calls.
``--profiler pyinstrument`` (``pip install pyinstrument``) samples the stack every
0.5 ms instead, so its shares are closer to the real distribution; time the loop
spends waiting for Redis shows up as ``select.epoll.poll``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import backbone
from contracts.shipment_tracking_gen import (
    shipment_tracking_producer,
    subscribe_shipment_tracking,
)

from .common import BATCH_SIZE, packing_args, write_batches
from .consumer import CountingHandler, prewrite
from .producer import _concurrent
from .server import BenchServer, open_server

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results" / "profile"


class Probe:
    """Start and stop one profiler (cProfile or pyinstrument) around a section."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.cprofile = cProfile.Profile() if kind == "cprofile" else None
        self.sampler: Any = None
        if kind == "pyinstrument":
            import pyinstrument  # type: ignore[import-not-found,unused-ignore]

            self.sampler = pyinstrument.Profiler(interval=0.0005, async_mode="disabled")

    def enable(self) -> None:
        if self.cprofile is not None:
            self.cprofile.enable()
        else:
            self.sampler.start()

    def disable(self) -> None:
        if self.cprofile is not None:
            self.cprofile.disable()
        else:
            self.sampler.stop()


Scenario = Callable[[BenchServer, int, Probe], Awaitable[float]]


async def producer_concurrent(
    server: BenchServer, events: int, profiler: Probe
) -> float:
    async with backbone.Backbone(server.url, environment=server.environment) as bus:
        producer = shipment_tracking_producer(bus, "profile.concurrent")
        args = packing_args()

        def call() -> Awaitable[backbone.EventId]:
            return producer.packing(*args)

        await _concurrent(call, 500, 64)
        started = time.perf_counter()
        profiler.enable()
        await _concurrent(call, events, 64)
        profiler.disable()
        return time.perf_counter() - started


async def producer_batch(server: BenchServer, events: int, profiler: Probe) -> float:
    async with backbone.Backbone(server.url, environment=server.environment) as bus:
        producer = shipment_tracking_producer(bus, "profile.batch")
        args = packing_args()
        await write_batches(producer, "packing", args, BATCH_SIZE, BATCH_SIZE)
        started = time.perf_counter()
        profiler.enable()
        await write_batches(producer, "packing", args, events, BATCH_SIZE)
        profiler.disable()
        return time.perf_counter() - started


def _consumer(options: backbone.SubscriptionOptions | None) -> Scenario:
    async def scenario(server: BenchServer, events: int, profiler: Probe) -> float:
        async with backbone.Backbone(server.url, environment=server.environment) as bus:
            uri = "profile.consumer"
            await prewrite(bus, uri, events, BATCH_SIZE)
            handler = CountingHandler(events)
            started = time.perf_counter()
            profiler.enable()
            async with subscribe_shipment_tracking(
                bus,
                uri,
                handler,
                group="profile",
                consumer="profile-1",
                start=backbone.StartFrom.BEGINNING,
                options=options,
            ) as subscription:
                await handler.done.wait()
                while subscription.stats.acked < events:  # noqa: ASYNC110
                    await asyncio.sleep(0.001)  # the acker has no event to wait on
                # Stop profiling before the subscription stops: only consuming
                # counts, not the shutdown.
                profiler.disable()
                elapsed = time.perf_counter() - started
            return elapsed

    return scenario


SCENARIOS: dict[str, Scenario] = {
    "producer-concurrent": producer_concurrent,
    "producer-batch": producer_batch,
    "consumer-default": _consumer(None),
    "consumer-max-in-flight-1000": _consumer(
        backbone.SubscriptionOptions(max_in_flight=1000)
    ),
}


_ROOT = Path(__file__).resolve().parent.parent


def _where(func: tuple[str, int, str]) -> str:
    """FILE:LINE(NAME), with the file relative to the repository, to
    site-packages or to the standard library."""
    filename, line, name = func
    if filename == "~":
        return name
    path = Path(filename)
    try:
        shown = str(path.resolve().relative_to(_ROOT))
    except (ValueError, OSError):
        parts = path.parts
        for anchor in ("site-packages", "lib"):
            if anchor in parts:
                parts = parts[len(parts) - parts[::-1].index(anchor) :]
                break
        shown = "/".join(parts)
    return f"{shown}:{line}({name})"


def top(stats: pstats.Stats, key: str, count: int) -> list[dict[str, Any]]:
    """The COUNT functions with the largest KEY ('tottime' or 'cumtime')."""
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = float(stats.total_tt)  # type: ignore[attr-defined]
    index = 2 if key == "tottime" else 3
    rows = sorted(raw.items(), key=lambda item: item[1][index], reverse=True)
    out: list[dict[str, Any]] = []
    for func, (_, calls, tottime, cumtime, _) in rows[:count]:
        out.append(
            {
                "function": _where(func),
                "calls": calls,
                "tottime": tottime,
                "cumtime": cumtime,
                "tottime_pct": 100 * tottime / total if total else 0.0,
                "cumtime_pct": 100 * cumtime / total if total else 0.0,
            }
        )
    return out


def sampled_top(root: Any, key: str, count: int) -> list[dict[str, Any]]:
    """Like :func:`top`, from a pyinstrument frame tree: own time is the samples
    in a function itself; cumulative time counts each function once per stack."""
    own: dict[str, float] = {}
    cum: dict[str, float] = {}
    hits: dict[str, int] = {}

    def name(frame: Any) -> str:
        path = frame.file_path or "~"
        return _where((path, frame.line_no or 0, frame.function))

    def walk(frame: Any, stack: frozenset[str]) -> None:
        if frame.is_synthetic:
            return
        label = name(frame)
        own[label] = own.get(label, 0.0) + frame.total_self_time
        hits[label] = hits.get(label, 0) + 1
        if label not in stack:
            cum[label] = cum.get(label, 0.0) + frame.time
        inner = stack | {label}
        for child in frame.children:
            walk(child, inner)

    walk(root, frozenset())
    total = float(root.time) or 1.0
    ranking = own if key == "tottime" else cum
    out: list[dict[str, Any]] = []
    for label in sorted(ranking, key=lambda k: ranking[k], reverse=True)[:count]:
        out.append(
            {
                "function": label,
                "calls": hits[label],
                "tottime": own.get(label, 0.0),
                "cumtime": cum.get(label, 0.0),
                "tottime_pct": 100 * own.get(label, 0.0) / total,
                "cumtime_pct": 100 * cum.get(label, 0.0) / total,
            }
        )
    return out


def format_top(
    title: str, rows: Sequence[dict[str, Any]], count_label: str = "calls"
) -> str:
    lines = [title, f"{'own %':>7} {'cum %':>7} {count_label:>9}  function"]
    for row in rows:
        lines.append(
            f"{row['tottime_pct']:7.1f} {row['cumtime_pct']:7.1f} "
            f"{row['calls']:9d}  {row['function']}"
        )
    return "\n".join(lines)


async def _run(server: BenchServer, name: str, events: int, profiler: Probe) -> float:
    client = server.client()
    try:
        await server.clean(client)
        return await SCENARIOS[name](server, events, profiler)
    finally:
        await server.clean(client)
        await client.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profiling")
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument(
        "--only", action="append", choices=list(SCENARIOS), metavar="SCENARIO"
    )
    parser.add_argument(
        "--profiler", choices=["cprofile", "pyinstrument"], default="cprofile"
    )
    parser.add_argument("--redis-url")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    names = [n for n in SCENARIOS if not args.only or n in args.only]
    with open_server(args.redis_url) as server:
        for name in names:
            probe = Probe(args.profiler)
            seconds = asyncio.run(_run(server, name, args.events, probe))
            stem = args.output / f"{name}-{args.profiler}"
            if probe.cprofile is not None:
                probe.cprofile.dump_stats(stem.with_suffix(".prof"))
                stats = pstats.Stats(probe.cprofile, stream=io.StringIO())
                total = float(stats.total_tt)  # type: ignore[attr-defined]
                by_own = top(stats, "tottime", args.top)
                by_cum = top(stats, "cumtime", args.top)
                count_label = "calls"
            else:
                session = probe.sampler.last_session
                root = session.root_frame()
                total = float(root.time)
                by_own = sampled_top(root, "tottime", args.top)
                by_cum = sampled_top(root, "cumtime", args.top)
                count_label = "frames"
                stem.with_suffix(".html").write_text(probe.sampler.output_html())
            header = (
                f"== {name} ({args.profiler}): {args.events} events in {seconds:.2f} s "
                f"while profiled ({args.events / seconds:,.0f} events/s), "
                f"{total:.2f} s profiled"
            )
            text = "\n\n".join(
                [
                    header,
                    format_top("-- by own time", by_own, count_label),
                    format_top("-- by cumulative time", by_cum, count_label),
                ]
            )
            stem.with_suffix(".txt").write_text(text + "\n")
            print(text, end="\n\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
