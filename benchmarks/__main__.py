"""``python -m benchmarks``: run the benchmark sections and write the report."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from . import (
    archive,
    baselines,
    consumer,
    latency,
    memory,
    processes,
    producer,
    report,
    scaling,
    sizes,
    store,
)
from .common import LOOP_ENV, Section, Settings, run_loop
from .machine import machine_info
from .server import BenchServer, ServerUnavailable, open_server

SECTIONS: dict[str, Callable[[BenchServer, Settings], Awaitable[Section]]] = {
    "producer": producer.run,
    "consumer": consumer.run,
    "latency": latency.run,
    "memory": memory.run,
    "store": store.run,
    "archive": archive.run,
    "baselines": baselines.run,
    "sizes": sizes.run,
    "processes": processes.run,
}
# Run only when named with --only: they start servers of their own (clusters).
OPT_IN: dict[str, Callable[[BenchServer, Settings], Awaitable[Section]]] = {
    "scaling": scaling.run,
}
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=(
            "Measure backbone's producer and consumer throughput, end-to-end "
            "latency and memory per event against hand-written redis.asyncio "
            "and raw hiredis baselines, FastStream and the server's ceiling, "
            "all on one redis-server."
        ),
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes (about 30 s in all); for smoke tests",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=[*SECTIONS, *OPT_IN],
        metavar="SECTION",
        help="run only this section (repeatable): "
        + ", ".join(SECTIONS)
        + "; only when named: "
        + ", ".join(OPT_IN)
        + " (local Redis Clusters, 1 master vs 3)",
    )
    parser.add_argument(
        "--redis-url",
        help=(
            "use this Redis instead of starting a redis-server (only this run's "
            "keys are deleted; changed settings are put back)"
        ),
    )
    parser.add_argument(
        "--events",
        type=int,
        metavar="N",
        help="events per producer variant and pre-written per consumer variant "
        "(default 30,000 and 100,000; --quick 2,000)",
    )
    parser.add_argument(
        "--loop",
        choices=["asyncio", "uvloop"],
        default="asyncio",
        help="the event loop of every variant, backbone's and the hand-written "
        "ones alike (default asyncio; uvloop needs backbone[fast])",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_OUTPUT,
        metavar="DIR",
        help=f"where report.json and report.md go (default {DEFAULT_OUTPUT})",
    )
    args = parser.parse_args(argv)
    if args.events is not None and args.events < 1:
        parser.error("--events must be at least 1")
    return args


async def run_sections(
    server: BenchServer, settings: Settings, names: Sequence[str], console: Console
) -> dict[str, Section]:
    sections: dict[str, Section] = {}
    for name in names:
        console.print(f"[bold]{name}[/] ...", highlight=False)
        started = time.perf_counter()
        section = await {**SECTIONS, **OPT_IN}[name](server, settings)
        section.seconds = time.perf_counter() - started
        console.print(f"  done in {section.seconds:.1f} s", highlight=False)
        sections[name] = section
    return sections


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Wide enough for the tables when the output is a file or a pipe.
    console = Console(width=None if sys.stdout.isatty() else 180)
    settings = Settings.make(quick=args.quick, events=args.events)
    os.environ[LOOP_ENV] = args.loop  # child processes run on it too
    names = [n for n in SECTIONS if not args.only or n in args.only]
    names += [n for n in OPT_IN if args.only and n in args.only]
    started = time.perf_counter()
    try:
        with open_server(args.redis_url) as server:
            where = (
                f"own redis-server at {server.url}" if server.owned else "--redis-url"
            )
            console.print(f"redis: {where}", highlight=False)
            machine = machine_info(server)
            sections = run_loop(run_sections(server, settings, names, console))
    except ServerUnavailable as exc:
        console.print(f"[red]cannot benchmark: {exc}[/]")
        return 2
    targets = report.evaluate_targets(sections)
    against = report.evaluate_baselines(sections)
    all_tables = report.tables(sections, targets, against)
    console.print()
    for table in all_tables:
        report.render(console, table)
    data: dict[str, Any] = {
        "generated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": shlex.join(["python", "-m", "benchmarks", *(argv or sys.argv[1:])]),
        "settings": settings.as_dict(),
        "machine": machine,
        "sections": {name: s.as_dict() for name, s in sections.items()},
        "targets": [t.as_dict() for t in targets],
        "baseline_targets": [t.as_dict() for t in against],
        "duration_seconds": time.perf_counter() - started,
    }
    json_path, md_path = report.write(args.output, data, all_tables)
    console.print(f"wrote {json_path} and {md_path}", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
