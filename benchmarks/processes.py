"""Consumer processes: 1, 2 and 4 processes sharing one consumer group.

Backbone's subscription (default options) against the raw XREADGROUP +
pipelined HMGET loop and the raw one-call Lua read, in interleaved rounds at
each process count. The worker processes are started once (spawned, so none
inherits the parent's connections) and connect to Redis before any clock
starts; for each run the parent creates a new group at the start of one
pre-written stream, starts the clock, tells K workers to consume as members of
that group, and stops the clock when the group has been delivered the stream's
last entry and has nothing pending (everything handled and acked). Each worker
then reports how many events it handled; together they must be exactly the
stream's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import multiprocessing
import multiprocessing.synchronize
import queue
import time
from typing import Any

import redis.asyncio as aioredis

import backbone
from contracts.shipment_tracking_gen import subscribe_shipment_tracking

from . import raw_side
from .common import (
    Comparison,
    Run,
    Section,
    Settings,
    fresh_gc,
    interleave,
    measurement,
    ratio,
    run_loop,
)
from .consumer import CountingHandler, prewrite
from .raw import RawRedis
from .server import BenchServer

__all__ = ["run"]

BB = "backbone subscription (default options)"
RAW_READ = "raw hiredis: XREADGROUP + pipelined HMGET + XACK"
RAW_LUA_READ = "raw hiredis: one-call Lua read"
KINDS = {BB: "backbone", RAW_READ: "raw_xreadgroup_hmget", RAW_LUA_READ: "raw_lua_read"}
URI = "processes"

Command = tuple[str, str, str] | None  # (kind, group, consumer), None: exit
Report = tuple[str, int | str]  # (consumer or "ready" or "error", count or text)


# --- the worker process ----------------------------------------------------------


async def _serve(
    url: str,
    environment: str,
    commands: multiprocessing.Queue[Command],
    reports: multiprocessing.Queue[Report],
    done: multiprocessing.synchronize.Event,
) -> None:
    bus = backbone.Backbone(url, environment=environment)
    raw = await RawRedis.connect(url)
    keys = bus.keys(URI)
    try:
        await bus.redis.ping()
        await raw.call("PING")
        reports.put(("ready", 0))
        while (command := await asyncio.to_thread(commands.get)) is not None:
            kind, group, consumer = command
            handler = CountingHandler(1 << 62)
            try:
                if kind == "backbone":
                    async with subscribe_shipment_tracking(
                        bus, URI, handler, group=group, consumer=consumer
                    ):
                        await asyncio.to_thread(done.wait)
                else:
                    consume = (
                        raw_side.consume_lua
                        if kind == "raw_lua_read"
                        else raw_side.consume_pipelined
                    )
                    await consume(
                        raw,
                        keys.stream,
                        keys.payload_prefix,
                        group,
                        consumer,
                        handler,
                        done.is_set,
                    )
            except Exception as exc:  # told to the parent, which fails the run
                reports.put(("error", f"{consumer}: {type(exc).__name__}: {exc}"))
                continue
            reports.put((consumer, handler.count))
    finally:
        await raw.close()
        await bus.close()


def _worker(
    url: str,
    environment: str,
    commands: multiprocessing.Queue[Command],
    reports: multiprocessing.Queue[Report],
    done: multiprocessing.synchronize.Event,
) -> None:
    try:
        run_loop(_serve(url, environment, commands, reports, done))
    except Exception as exc:
        reports.put(("error", f"worker: {type(exc).__name__}: {exc}"))


# --- the parent --------------------------------------------------------------------


class _Pool:
    """Worker processes, started once for the whole section."""

    def __init__(self, server: BenchServer, size: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.reports: multiprocessing.Queue[Report] = context.Queue()
        self.done = context.Event()
        self.commands: list[multiprocessing.Queue[Command]] = [
            context.Queue() for _ in range(size)
        ]
        self.processes = [
            context.Process(
                target=_worker,
                args=(server.url, server.environment, q, self.reports, self.done),
                daemon=True,
            )
            for q in self.commands
        ]

    async def report(self, timeout: float) -> Report:
        """The next worker's report; fails on an error, a dead worker or TIMEOUT."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                got: Report = await asyncio.to_thread(self.reports.get, True, 0.5)
                break
            except queue.Empty:
                dead = [p.exitcode for p in self.processes if p.exitcode is not None]
                if dead:
                    raise RuntimeError(
                        f"a consumer process exited (codes {dead})"
                    ) from None
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"no word from a worker in {timeout:.0f} s"
                    ) from None
        if got[0] == "error":
            raise RuntimeError(f"a consumer process failed: {got[1]}")
        return got

    async def start(self) -> None:
        for process in self.processes:
            process.start()
        for _ in self.processes:
            await self.report(120)

    def failed(self) -> bool:
        return not self.reports.empty() or any(not p.is_alive() for p in self.processes)

    async def stop(self) -> None:
        for q in self.commands:
            with contextlib.suppress(ValueError, OSError):
                q.put(None)
        for process in self.processes:
            if process.pid is None:
                continue  # never started
            await asyncio.to_thread(process.join, 10)
            if process.is_alive():
                process.terminate()
                await asyncio.to_thread(process.join, 5)


async def _caught_up(
    client: aioredis.Redis, stream: str, group: str, last: str
) -> bool:
    groups: list[dict[str, Any]] = await client.xinfo_groups(stream)
    for info in groups:
        name = info["name"]
        if (name.decode() if isinstance(name, bytes) else name) == group:
            delivered = info["last-delivered-id"]
            if isinstance(delivered, bytes):
                delivered = delivered.decode()
            return delivered == last and int(info["pending"]) == 0
    raise RuntimeError(f"group {group} vanished")


async def _once(
    pool: _Pool,
    client: aioredis.Redis,
    stream: str,
    last: str,
    events: int,
    kind: str,
    members: int,
    group: str,
) -> Run:
    """One run: MEMBERS workers consume the stream as a new GROUP."""
    await client.xgroup_create(stream, group, id="0")
    pool.done.clear()
    timeout = max(60.0, events / 200)
    fresh_gc()
    started = time.perf_counter()
    for i in range(members):
        pool.commands[i].put((kind, group, f"{group}-{i + 1}"))
    deadline = time.monotonic() + timeout
    try:
        while not await _caught_up(client, stream, group, last):
            if pool.failed():
                break  # the reports below say what went wrong
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind} x{members}: not done in {timeout:.0f} s")
            await asyncio.sleep(0.001)
        seconds = time.perf_counter() - started
    finally:
        pool.done.set()
    handled = 0
    for _ in range(members):
        handled += int((await pool.report(60))[1])
    if handled != events:
        raise RuntimeError(f"{kind} x{members}: {handled} of {events} handled")
    return Run(seconds)


async def run(server: BenchServer, settings: Settings) -> Section:
    section = Section("processes", "Consumer processes in one group (events/s)")
    events = settings.process_events
    client = server.client()
    await server.clean(client)
    bus = backbone.Backbone(server.url, environment=server.environment)
    pool = _Pool(server, max(settings.process_counts))
    try:
        await prewrite(bus, URI, events, settings.batch_size)
        stream = bus.keys(URI).stream
        newest: list[tuple[bytes, Any]] = await client.xrevrange(stream, count=1)  # type: ignore[assignment]
        last = newest[0][0].decode()
        await pool.start()
        groups = iter(range(1, 1_000_000))

        async def once(kind: str, members: int) -> Run:
            group = f"g{next(groups)}"
            return await _once(pool, client, stream, last, events, kind, members, group)

        for members in settings.process_counts:
            results = await interleave(
                settings,
                [
                    (name, functools.partial(once, kind, members))
                    for name, kind in KINDS.items()
                ],
            )
            _summarise(section, events, members, results)
        await server.clean(client)
    finally:
        await pool.stop()
        await bus.close()
        await client.aclose()
    section.notes += [
        f"{events:,} events pre-written by backbone; each run a new group from "
        "the start; clock: from telling the workers to start (already connected) "
        "until the group was delivered the last entry and has nothing pending",
        "workers are separate processes (spawned once); the backbone subscription "
        "is opened inside the clock (its group is created before)",
    ]
    return section


def _summarise(
    section: Section, events: int, members: int, results: dict[str, list[Run]]
) -> None:
    rates = {n: measurement(n, events, r).rate for n, r in results.items()}
    raws = [r for n, r in rates.items() if n != BB and r is not None]
    best_raw = max(raws) if raws else None
    for name, runs in results.items():
        m = measurement(name, events, runs, group=f"{members} process(es)")
        row = m.as_dict()
        row["processes"] = members
        row["vs_best_raw"] = ratio(m.rate, best_raw)
        section.rows.append(row)
        section.figures[f"{KINDS[name]}_x{members}"] = m.rate
    section.figures[f"raw_best_x{members}"] = best_raw
    section.comparisons.append(
        Comparison(
            f"{members} process(es): backbone / best raw consumer",
            ratio(rates[BB], best_raw),
        )
    )
