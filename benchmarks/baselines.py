"""backbone against the strongest hand-written baselines of the same work.

Four comparisons, each run in interleaved rounds (backbone, then each baseline,
then again), every producer on a clean server, every consumer with a new group
from the start of one pre-written stream:

- one await per call (latency of each call recorded): backbone; MULTI, HSET,
  XADD, EXEC in one write on a raw hiredis connection; a redis.asyncio
  transaction pipeline; the same with synchronous redis-py;
- batches of 1,000: ``producer.batch()``; one EVALSHA of a Lua script looping
  XADD + HSET on the raw connection;
- 64 tasks calling at once: backbone (it coalesces overlapping calls); the
  same raw script fed by a group commit;
- a consumer group reading pre-written events: backbone subscriptions (default
  options, ``max_in_flight=1000``); a raw XREADGROUP + pipelined HMGET + XACK
  loop; a raw one-call Lua read (XACK, XREADGROUP and HMGETs in one script).

The baselines live in :mod:`benchmarks.raw_side`.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

import backbone
from contracts.shipment_tracking_gen import shipment_tracking_producer

from . import raw_side
from .common import (
    Comparison,
    Run,
    Section,
    Settings,
    fresh_gc,
    identity,
    interleave,
    measurement,
    packing_args,
    ratio,
    write_batches,
)
from .consumer import backbone_consume, prewrite
from .latency import percentile
from .raw import RawRedis
from .server import BenchServer

__all__ = ["run"]

WARMUP = 200

BB_SINGLE = "backbone: one await per call"
RAW_MULTI = "raw hiredis: MULTI/HSET/XADD/EXEC per call"
ASYNCIO_MULTI = "redis.asyncio: MULTI pipeline per call"
SYNC_MULTI = "redis-py (sync): MULTI pipeline per call"
BB_BATCH = "backbone: producer.batch()"
RAW_BATCH = "raw hiredis: Lua script per batch"
BB_CONCURRENT = "backbone: concurrent calls"
RAW_GROUP = "raw hiredis: group commit into the Lua script"
BB_SUB = "backbone subscription (default options)"
BB_SUB_WIDE = "backbone subscription (max_in_flight=1000)"
RAW_READ = "raw hiredis: XREADGROUP + pipelined HMGET + XACK"
RAW_LUA_READ = "raw hiredis: one-call Lua read"

Call = Callable[[], Awaitable[Any]]


async def _calls(call: Call, events: int, latencies: list[float] | None) -> None:
    if latencies is None:
        for _ in range(events):
            await call()
        return
    clock = time.perf_counter
    for _ in range(events):
        started = clock()
        await call()
        latencies.append(clock() - started)


async def _concurrently(call: Call, events: int, tasks: int) -> None:
    share, extra = divmod(events, tasks)
    counts = [share + (1 if i < extra else 0) for i in range(tasks)]
    await asyncio.gather(*(_calls(call, n, None) for n in counts if n))


class _Producers:
    """The producer variants, each a ``once()`` on a clean server."""

    def __init__(
        self,
        server: BenchServer,
        client: aioredis.Redis,
        bus: backbone.Backbone,
        raw: RawRedis,
        settings: Settings,
    ) -> None:
        self.server, self.client, self.bus = server, client, bus
        self.settings = settings
        keys = bus.keys("baselines.producer")
        self.stream, self.prefix = keys.stream, keys.payload_prefix
        self.producer = shipment_tracking_producer(bus, "baselines.producer")
        self.raw = raw_side.RawProducer(raw, self.stream, self.prefix, identity())
        self.ids = self.raw.ids  # client-made ids of every per-call baseline
        self.sync = server.sync_client()
        self.writer = identity()
        self.args = packing_args()

    async def _timed(
        self, events: int, body: Callable[[list[float] | None], Awaitable[None]]
    ) -> Run:
        """BODY after a warm-up of WARMUP calls on a clean server; checks that
        every event was written."""
        await self.server.clean(self.client)
        await self.warmup()
        latencies: list[float] = []
        fresh_gc()
        started = time.perf_counter()
        await body(latencies)
        seconds = time.perf_counter() - started
        length = await self.client.xlen(self.stream)
        if length != events + WARMUP:
            raise RuntimeError(f"{length - WARMUP} entries written, not {events}")
        return Run(seconds, latencies)

    async def warmup(self) -> None:
        """A few calls of every kind, so no variant pays for first use."""
        raw_events = [self.args] * (WARMUP // 2)
        await self.raw.batch(raw_events)
        for _ in range(WARMUP - WARMUP // 2):
            await self.producer.packing(*self.args)
        self.sync.ping()  # its connection open before its clock starts
        last: list[tuple[bytes, Any]] = await self.client.xrevrange(  # type: ignore[assignment]
            self.stream, count=1
        )
        self.ids.after(last[0][0])

    def per_call(self, name: str) -> Callable[[], Awaitable[Run]]:
        events = self.settings.per_call_events
        args = self.args
        call: Call
        if name == BB_SINGLE:
            call = functools.partial(self.producer.packing, *args)
        elif name == RAW_MULTI:
            call = functools.partial(self.raw.multi, *args)
        elif name == ASYNCIO_MULTI:
            call = functools.partial(
                raw_side.asyncio_multi,
                self.client,
                self.stream,
                self.prefix,
                self.ids,
                self.writer,
                args,
            )
        else:
            return functools.partial(self._sync_once, events)

        async def once() -> Run:
            return await self._timed(
                events, lambda latencies: _calls(call, events, latencies)
            )

        return once

    async def _sync_once(self, events: int) -> Run:
        ids = self.ids

        async def body(latencies: list[float] | None) -> None:
            assert latencies is not None
            clock = time.perf_counter
            for _ in range(events):  # blocks the loop: nothing else runs here
                started = clock()
                raw_side.sync_multi(
                    self.sync, self.stream, self.prefix, ids, self.writer, self.args
                )
                latencies.append(clock() - started)

        return await self._timed(events, body)

    def batched(self, name: str) -> Callable[[], Awaitable[Run]]:
        events, size = self.settings.producer_events, self.settings.batch_size

        async def body(_: list[float] | None) -> None:
            if name == BB_BATCH:
                await write_batches(self.producer, "packing", self.args, events, size)
                return
            for start in range(0, events, size):
                await self.raw.batch([self.args] * min(size, events - start))

        return functools.partial(self._timed, events, body)

    def concurrent(self, name: str) -> Callable[[], Awaitable[Run]]:
        events, tasks = self.settings.concurrency_events, self.settings.concurrency
        args = self.args

        async def body(_: list[float] | None) -> None:
            call: Call
            if name == BB_CONCURRENT:
                call = functools.partial(self.producer.packing, *args)
            else:
                group = raw_side.GroupCommit(self.raw, self.settings.batch_size)
                call = functools.partial(group.publish, *args)
            await _concurrently(call, events, tasks)

        return functools.partial(self._timed, events, body)

    def close(self) -> None:
        self.sync.close()


async def _consumers(
    bus: backbone.Backbone,
    client: aioredis.Redis,
    raw: RawRedis,
    settings: Settings,
) -> dict[str, list[Run]]:
    events = settings.consumer_events
    uri = "baselines.consumer"
    await prewrite(bus, uri, events, settings.batch_size)
    keys = bus.keys(uri)
    timeout = max(60.0, events / 500)
    rounds = [0]

    def group() -> str:
        rounds[0] += 1
        return f"g{rounds[0]}"

    async def bb(options: backbone.SubscriptionOptions | None) -> Run:
        seconds = await backbone_consume(
            bus, client, uri, events, options, timeout, group=group()
        )
        return Run(seconds)

    async def by_hand(lua: bool) -> Run:
        seconds = await raw_side.raw_consume(
            raw, client, keys.stream, keys.payload_prefix, events, lua, group()
        )
        return Run(seconds)

    return await interleave(
        settings,
        [
            (BB_SUB, functools.partial(bb, None)),
            (BB_SUB_WIDE, functools.partial(bb, _WIDE)),
            (RAW_READ, functools.partial(by_hand, False)),
            (RAW_LUA_READ, functools.partial(by_hand, True)),
        ],
    )


_WIDE = backbone.SubscriptionOptions(max_in_flight=1000)


async def run(server: BenchServer, settings: Settings) -> Section:
    section = Section("baselines", "Against the strongest hand-written baselines")
    client = server.client()
    await server.clean(client)
    bus = backbone.Backbone(server.url, environment=server.environment)
    raw = await RawRedis.connect(server.url)
    producers = _Producers(server, client, bus, raw, settings)
    try:
        per_call = await interleave(
            settings,
            [
                (n, producers.per_call(n))
                for n in (BB_SINGLE, RAW_MULTI, ASYNCIO_MULTI, SYNC_MULTI)
            ],
        )
        batched = await interleave(
            settings, [(n, producers.batched(n)) for n in (BB_BATCH, RAW_BATCH)]
        )
        concurrent = await interleave(
            settings,
            [(n, producers.concurrent(n)) for n in (BB_CONCURRENT, RAW_GROUP)],
        )
        await server.clean(client)
        consumed = await _consumers(bus, client, raw, settings)
        await server.clean(client)
    finally:
        producers.close()
        await raw.close()
        await bus.close()
        await client.aclose()
    _summarise(section, settings, per_call, batched, concurrent, consumed)
    return section


def _ms(latencies: list[float], p: float) -> float | None:
    return percentile(sorted(latencies), p) * 1000 if latencies else None


def _summarise(
    section: Section,
    settings: Settings,
    per_call: dict[str, list[Run]],
    batched: dict[str, list[Run]],
    concurrent: dict[str, list[Run]],
    consumed: dict[str, list[Run]],
) -> None:
    figures = section.figures
    rates: dict[str, float | None] = {}
    for group, results, events, detail in (
        ("one await per call", per_call, settings.per_call_events, ""),
        ("batch", batched, settings.producer_events, f" (N={settings.batch_size})"),
        (
            "concurrent",
            concurrent,
            settings.concurrency_events,
            f" ({settings.concurrency} tasks)",
        ),
        ("consumer", consumed, settings.consumer_events, ""),
    ):
        best_raw = max(
            (
                measurement(n, events, r).rate or 0.0
                for n, r in results.items()
                if not n.startswith("backbone")
            ),
            default=None,
        )
        for name, runs in results.items():
            m = measurement(name + detail, events, runs, group=group)
            rates[name] = m.rate
            row = m.as_dict()
            latencies = [x for r in runs for x in r.latencies]
            row["p50_ms"] = _ms(latencies, 50)
            row["p99_ms"] = _ms(latencies, 99)
            row["vs_best_raw"] = ratio(m.rate, best_raw)
            section.rows.append(row)
            if latencies:
                key = _KEYS[name]
                figures[f"{key}_p50_ms"] = row["p50_ms"]
                figures[f"{key}_p99_ms"] = row["p99_ms"]
    for name, key in _KEYS.items():
        figures[key] = rates.get(name)
    subs = [r for r in (rates[BB_SUB], rates[BB_SUB_WIDE]) if r is not None]
    figures["backbone_subscription_best"] = max(subs) if subs else None
    raws = [r for r in (rates[RAW_READ], rates[RAW_LUA_READ]) if r is not None]
    figures["raw_consumer_best"] = max(raws) if raws else None
    for label, a, b in (
        ("backbone one await / redis.asyncio MULTI", BB_SINGLE, ASYNCIO_MULTI),
        ("backbone one await / raw hiredis MULTI", BB_SINGLE, RAW_MULTI),
        ("backbone one await / sync redis-py MULTI", BB_SINGLE, SYNC_MULTI),
        ("backbone batch / raw Lua batch", BB_BATCH, RAW_BATCH),
        ("backbone concurrent / raw group commit", BB_CONCURRENT, RAW_GROUP),
        ("backbone default / raw XREADGROUP+HMGET", BB_SUB, RAW_READ),
        ("backbone default / raw Lua read", BB_SUB, RAW_LUA_READ),
        ("backbone max_in_flight=1000 / raw Lua read", BB_SUB_WIDE, RAW_LUA_READ),
    ):
        section.comparisons.append(Comparison(label, ratio(rates[a], rates[b])))
    for label, a, b in (
        ("raw MULTI p50 / backbone one await p50", "raw_multi", "backbone_single"),
        ("raw MULTI p99 / backbone one await p99", "raw_multi", "backbone_single"),
    ):
        p = "p50" if "p50" in label else "p99"
        section.comparisons.append(
            Comparison(
                label, ratio(figures.get(f"{a}_{p}_ms"), figures.get(f"{b}_{p}_ms"))
            )
        )
    section.notes += [
        "same event and layout everywhere (stream entry o, v, c, p, t + payload "
        "hash, msgpack values); each group of rows runs in interleaved rounds, "
        "each keeps its best round (runs_seconds in report.json); p50/p99: every "
        "call of every round",
        "raw per-call MULTI and the redis-py rows use client-made entry ids "
        "(one writer per stream); the Lua script and backbone let Redis make them",
        "raw consumers: a batch's XACK goes in the same write as the next "
        "XREADGROUP (pipelined loop) or in the next script call (Lua read), as "
        "backbone acks with its next read; both create their group inside the clock",
        "baselines validate nothing, never retry, dedupe or dead-letter; backbone "
        "does all of that in the same figures",
    ]


_KEYS = {
    BB_SINGLE: "backbone_single",
    RAW_MULTI: "raw_multi",
    ASYNCIO_MULTI: "asyncio_multi",
    SYNC_MULTI: "sync_multi",
    BB_BATCH: "backbone_batch",
    RAW_BATCH: "raw_lua_batch",
    BB_CONCURRENT: "backbone_concurrent",
    RAW_GROUP: "raw_group_commit",
    BB_SUB: "backbone_subscription_default",
    BB_SUB_WIDE: "backbone_subscription_wide",
    RAW_READ: "raw_xreadgroup_hmget",
    RAW_LUA_READ: "raw_lua_read",
}
