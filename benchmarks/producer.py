"""Producer throughput: the same event written by backbone, by hand, by FastStream,
and by ``redis-cli --pipe`` (the server's ceiling for the same commands)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

import backbone
from contracts.shipment_tracking_gen import (
    shipment_tracking_producer,
)

from . import faststream_side as fs
from .common import (
    Comparison,
    EntryIds,
    Measurement,
    Section,
    Settings,
    hand_fields,
    hand_meta,
    identity,
    order_placed_args,
    packing_args,
    ratio,
    repeat_count,
    timed,
    write_batches,
)
from .server import BenchServer

__all__ = ["run"]

WARMUP_EVENTS = 200

BB_SINGLE = "backbone: one await per call"
BB_CONCURRENT = "backbone: concurrent calls"
BB_BATCH = "backbone: explicit batch"
HAND = "hand-written redis.asyncio (MULTI/EXEC)"
FS_SINGLE = "FastStream: one await per publish"
FS_PIPELINE = "FastStream: pipeline"
CEILING = "server ceiling: redis-cli --pipe"


# --- the variants ----------------------------------------------------------------


async def _single(call: Callable[[], Awaitable[Any]], events: int) -> None:
    for _ in range(events):
        await call()


async def _concurrent(
    call: Callable[[], Awaitable[Any]], events: int, tasks: int
) -> None:
    share, extra = divmod(events, tasks)
    counts = [share + (1 if i < extra else 0) for i in range(tasks)]
    await asyncio.gather(*(_single(call, n) for n in counts if n))


async def hand_written(
    client: aioredis.Redis,
    stream: str,
    payload_prefix: str,
    events: int,
    batch: int,
    producer: str,
) -> None:
    """Per event HSET <payload key> + XADD <stream> with backbone's metadata fields
    and msgpack values, in MULTI/EXEC pipelines of BATCH events."""
    ids = EntryIds()
    email, product_id, time_ = packing_args()
    left = events
    while left > 0:
        n = min(batch, left)
        async with client.pipeline(transaction=True) as pipe:
            for _ in range(n):
                entry = ids.next()
                pipe.hset(
                    payload_prefix + entry, items=hand_fields(email, product_id, time_)
                )
                meta = hand_meta("packing", producer)
                pipe.xadd(
                    stream, dict(zip(meta[::2], meta[1::2], strict=True)), id=entry
                )
            await pipe.execute()
        left -= n


def _resp(*args: bytes | str) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def ceiling_file(
    path: Path, stream: str, payload_prefix: str, events: int, producer: str
) -> int:
    """Write the RESP commands of EVENTS events (HSET + XADD each, the same
    fields and bytes as backbone writes) to PATH; return its size."""
    email, product_id, time_ = packing_args()
    fields = hand_fields(email, product_id, time_)
    base = time.time_ns() // 1_000_000
    with path.open("wb") as out:
        for i in range(events):
            entry = f"{base}-{i}"
            out.write(_resp("HSET", payload_prefix + entry, *fields))
            out.write(_resp("XADD", stream, entry, *hand_meta("packing", producer)))
    return path.stat().st_size


def _pipe(cli: str, url: str, source: Path) -> float:
    with source.open("rb") as stdin:
        started = time.perf_counter()
        result = subprocess.run(
            [cli, "-u", url, "--pipe"],
            stdin=stdin,
            capture_output=True,
            timeout=300,
            check=False,
        )
        elapsed = time.perf_counter() - started
    if result.returncode != 0 or b"errors: 0" not in result.stdout:
        raise RuntimeError(
            "redis-cli --pipe failed: "
            f"{result.stdout[-500:]!r} {result.stderr[-500:]!r}"
        )
    return elapsed


def server_ceiling(
    server: BenchServer, stream: str, payload_prefix: str, events: int
) -> tuple[float | None, str]:
    """Seconds redis-cli --pipe takes to send EVENTS events and read the answers,
    less its own start-up (the same run with one PING, best of three)."""
    cli = shutil.which("redis-cli")
    if cli is None:
        return None, "redis-cli not found"
    source = server.directory / "ceiling.resp"
    size = ceiling_file(source, stream, payload_prefix, events, identity())
    ping = server.directory / "ping.resp"
    ping.write_bytes(_resp("PING"))
    startup = min(_pipe(cli, server.url, ping) for _ in range(3))
    elapsed = _pipe(cli, server.url, source)
    note = (
        f"{size / events:.0f} bytes of RESP per event; redis-cli start-up "
        f"{startup * 1000:.1f} ms subtracted from {elapsed * 1000:.0f} ms"
    )
    return max(elapsed - startup, 1e-9), note


async def stored_bytes(client: aioredis.Redis, stream: str, prefix: str | None) -> int:
    """Field and value bytes of the first event in STREAM (and its payload hash)."""
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await client.xrange(  # type: ignore[assignment]
        stream, count=1
    )
    if not entries:
        return 0
    entry_id, fields = entries[0]
    total = sum(len(k) + len(v) for k, v in fields.items())
    if prefix is not None:
        payload: dict[bytes, bytes] = await client.hgetall(prefix.encode() + entry_id)  # type: ignore[assignment]
        total += sum(len(k) + len(v) for k, v in payload.items())
    return total


_MODES = {"single": BB_SINGLE, "concurrent": BB_CONCURRENT, "batch": BB_BATCH}


def _backbone_once(
    bus: backbone.Backbone,
    client: aioredis.Redis,
    server: BenchServer,
    settings: Settings,
    operation: str,
    args: Sequence[Any],
    mode: str,
) -> Callable[[], Awaitable[float]]:
    """One timed run of settings.producer_events OPERATION(ARGS) events with
    backbone in MODE, on a clean server."""
    events = settings.producer_events
    uri = f"producer.{operation}.{mode}"
    producer = shipment_tracking_producer(bus, uri)
    method = getattr(producer, operation)

    def call() -> Awaitable[backbone.EventId]:
        result: Awaitable[backbone.EventId] = method(*args)
        return result

    async def body() -> None:
        if mode == "single":
            await _single(call, events)
        elif mode == "concurrent":
            await _concurrent(call, events, settings.concurrency)
        else:
            await write_batches(producer, operation, args, events, settings.batch_size)

    keys = bus.keys(uri)

    async def once() -> float:
        await server.clean(client)
        await _single(call, WARMUP_EVENTS)
        seconds = await timed(body)
        length = await client.xlen(keys.stream)
        if length != events + WARMUP_EVENTS:
            raise RuntimeError(f"{mode}: {length} entries written, not {events}")
        return seconds

    return once


async def _backbone_variant(
    bus: backbone.Backbone,
    client: aioredis.Redis,
    server: BenchServer,
    settings: Settings,
    operation: str,
    args: Sequence[Any],
    mode: str,
    hand: Callable[[], Awaitable[float]] | None = None,
) -> tuple[Measurement, list[float]]:
    """Write settings.producer_events OPERATION(ARGS) events with backbone in MODE;
    with HAND, each run is followed by a run of HAND (interleaved rounds, so
    that a noisy moment of the machine does not favour either side), whose
    seconds come back too."""
    events = settings.producer_events
    keys = bus.keys(f"producer.{operation}.{mode}")
    once = _backbone_once(bus, client, server, settings, operation, args, mode)
    hand_runs: list[float] = []

    async def round_() -> float:
        if hand is not None:
            hand_runs.append(await hand())
        return await once()

    runs = [await round_()]
    for _ in range(repeat_count(settings, runs[0])):
        runs.append(await round_())
    detail = {
        "single": "",
        "concurrent": f" ({settings.concurrency} tasks)",
        "batch": f" (N={settings.batch_size})",
    }[mode]
    return (
        Measurement(
            _MODES[mode] + detail,
            events,
            min(runs),
            group=operation,
            bytes_per_event=await stored_bytes(
                client, keys.stream, keys.payload_prefix
            ),
            runs=runs,
        ),
        hand_runs,
    )


async def _repeated(
    server: BenchServer,
    client: aioredis.Redis,
    settings: Settings,
    body: Callable[[], Awaitable[None]],
) -> list[float]:
    """Seconds of each run of BODY (more than one when it is short), each run
    starting from an empty database; the data of the last run stays."""
    runs = [await timed(body)]
    for _ in range(repeat_count(settings, runs[0])):
        await server.clean(client)
        runs.append(await timed(body))
    return runs


# --- the section -------------------------------------------------------------------


async def run(server: BenchServer, settings: Settings) -> Section:
    section = Section("producer", "Producer throughput (events/s)")
    events = settings.producer_events
    size = settings.batch_size
    measurements: list[Measurement] = []
    client = server.client()
    await server.clean(client)
    bus = backbone.Backbone(server.url, environment=server.environment)
    try:
        # Hand-written redis.asyncio loop, same layout and bytes. Its runs are
        # interleaved with those of backbone's explicit batches, which the
        # targets compare with it.
        hand_keys = bus.keys("producer.packing.hand")
        writer = identity()
        await hand_written(
            client,
            hand_keys.stream + ":warmup",
            hand_keys.payload_prefix,
            WARMUP_EVENTS,
            size,
            writer,
        )

        async def hand() -> float:
            await server.clean(client)

            async def body() -> None:
                await hand_written(
                    client,
                    hand_keys.stream,
                    hand_keys.payload_prefix,
                    events,
                    size,
                    writer,
                )

            seconds = await timed(body)
            hand_bytes[0] = await stored_bytes(
                client, hand_keys.stream, hand_keys.payload_prefix
            )
            return seconds

        hand_runs: list[float] = []
        hand_bytes = [0]
        for operation, args in (
            ("packing", packing_args()),
            ("order_placed", order_placed_args()),
        ):
            for mode in ("single", "concurrent", "batch"):
                paired = operation == "packing" and mode == "batch"
                measurement, extra = await _backbone_variant(
                    bus,
                    client,
                    server,
                    settings,
                    operation,
                    args,
                    mode,
                    hand if paired else None,
                )
                measurements.append(measurement)
                if paired:
                    hand_runs = extra
                await server.clean(client)
        measurements.append(
            Measurement(
                f"{HAND} (N={size})",
                events,
                min(hand_runs),
                group="packing",
                bytes_per_event=hand_bytes[0],
                runs=hand_runs,
            )
        )

        # FastStream.
        if fs.AVAILABLE:
            broker = fs.broker(server.url)
            fs_client = await broker.connect()
            try:
                stream = f"fs:{{{server.environment}:producer}}"
                await fs.publish_single(
                    broker, stream + ":warmup", WARMUP_EVENTS, writer
                )

                async def fs_single() -> None:
                    await fs.publish_single(broker, stream, events, writer)

                seconds = await timed(fs_single)
                measurements.append(
                    Measurement(
                        FS_SINGLE,
                        events,
                        seconds,
                        group="packing",
                        bytes_per_event=await stored_bytes(client, stream, None),
                    )
                )
                await server.clean(client)
                if fs.pipeline_supported():

                    async def fs_pipelined() -> None:
                        await fs.publish_pipelined(
                            broker, fs_client, stream, events, writer, size
                        )

                    runs = await _repeated(server, client, settings, fs_pipelined)
                    measurements.append(
                        Measurement(
                            f"{FS_PIPELINE} (MULTI/EXEC, N={size})",
                            events,
                            min(runs),
                            group="packing",
                            bytes_per_event=await stored_bytes(client, stream, None),
                            runs=runs,
                        )
                    )
                else:
                    measurements.append(
                        Measurement(
                            FS_PIPELINE,
                            events,
                            None,
                            group="packing",
                            note="this FastStream has no pipeline= option",
                        )
                    )
                await server.clean(client)
            finally:
                await broker.stop()
        else:
            for name in (FS_SINGLE, FS_PIPELINE):
                measurements.append(
                    Measurement(
                        name, events, None, group="packing", note="faststream missing"
                    )
                )

        # The server's ceiling for the same commands.
        # At least 100,000 events, best of three: a short pipe is mostly noise.
        keys = bus.keys("producer.packing.ceiling")
        ceiling_events = max(events, 100_000)
        best: tuple[float | None, str] = (None, "")
        for _ in range(max(1, settings.repeats)):
            await server.clean(client)
            outcome: tuple[float | None, str] = await asyncio.to_thread(
                server_ceiling, server, keys.stream, keys.payload_prefix, ceiling_events
            )
            if outcome[0] is None:
                best = outcome
                break
            if best[0] is None or outcome[0] < best[0]:
                best = outcome
        ceiling_seconds, note = best
        measurements.append(
            Measurement(
                CEILING,
                ceiling_events,
                ceiling_seconds,
                group="packing",
                note=note,
                bytes_per_event=await stored_bytes(
                    client, keys.stream, keys.payload_prefix
                )
                if ceiling_seconds is not None
                else None,
            )
        )
        await server.clean(client)
    finally:
        await bus.close()
        await client.aclose()

    _summarise(section, measurements)
    return section


def _rate(measurements: list[Measurement], prefix: str, group: str) -> float | None:
    for m in measurements:
        if m.name.startswith(prefix) and m.group == group:
            return m.rate
    return None


def _summarise(section: Section, measurements: list[Measurement]) -> None:
    hand = _rate(measurements, HAND, "packing")
    ceiling = _rate(measurements, CEILING, "packing")
    for m in measurements:
        row = m.as_dict()
        row["vs_hand_written"] = ratio(m.rate, hand)
        row["vs_ceiling"] = ratio(m.rate, ceiling)
        section.rows.append(row)

    backbone_rates = {
        name: _rate(measurements, name, "packing")
        for name in (BB_SINGLE, BB_CONCURRENT, BB_BATCH)
    }
    available = {k: v for k, v in backbone_rates.items() if v is not None}
    best_name = max(available, key=lambda k: available[k]) if available else None
    best = available.get(best_name) if best_name else None
    section.figures.update(
        {
            "backbone_single": backbone_rates[BB_SINGLE],
            "backbone_concurrent": backbone_rates[BB_CONCURRENT],
            "backbone_batch": backbone_rates[BB_BATCH],
            "backbone_best": best,
            "backbone_order_placed_best": max(
                (
                    r
                    for r in (
                        _rate(measurements, n, "order_placed")
                        for n in (BB_SINGLE, BB_CONCURRENT, BB_BATCH)
                    )
                    if r is not None
                ),
                default=None,
            ),
            "hand_written": hand,
            "faststream_single": _rate(measurements, FS_SINGLE, "packing"),
            "faststream_pipeline": _rate(measurements, FS_PIPELINE, "packing"),
            "server_ceiling": ceiling,
        }
    )
    if best_name:
        section.notes.append(f"backbone's best producer mode: {best_name}")
    section.notes += [
        "every variant writes the same packing event (order_placed rows: backbone "
        "only, with pydantic models); variants that take under 5 s run three "
        "times and keep the best run (runs_seconds in report.json)",
        "hand-written loop: per event HSET <stream>:p:<id> + XADD <stream> <id> "
        "with client-made ids, backbone's metadata fields and msgpack values, "
        "MULTI/EXEC per 1000 events; the ceiling file holds the same commands. "
        "It cannot run from two tasks on one stream: its client-made ids would "
        "reach Redis out of order; backbone's ids are made inside the script",
        "stored B/event: field and value bytes of one stored event (FastStream "
        "keeps a JSON body plus its correlation-id/content-type headers in one "
        "stream field)",
    ]
    fs_single = section.figures["faststream_single"]
    fs_pipe = section.figures["faststream_pipeline"]
    pairs: list[tuple[str, float | None, float | None, str]] = [
        (
            "backbone one await / hand-written asyncio",
            backbone_rates[BB_SINGLE],
            hand,
            "x",
        ),
        (
            "backbone concurrent / hand-written asyncio",
            backbone_rates[BB_CONCURRENT],
            hand,
            "x",
        ),
        ("backbone batch / hand-written asyncio", backbone_rates[BB_BATCH], hand, "x"),
        ("backbone best / hand-written asyncio", best, hand, "x"),
        ("backbone best / server ceiling", best, ceiling, "%"),
        ("hand-written asyncio / server ceiling", hand, ceiling, "%"),
        (
            "backbone one await / FastStream one await",
            backbone_rates[BB_SINGLE],
            fs_single,
            "x",
        ),
        (
            "backbone concurrent / FastStream pipeline",
            backbone_rates[BB_CONCURRENT],
            fs_pipe,
            "x",
        ),
        (
            "backbone batch / FastStream pipeline",
            backbone_rates[BB_BATCH],
            fs_pipe,
            "x",
        ),
        ("FastStream pipeline / server ceiling", fs_pipe, ceiling, "%"),
        (
            "backbone order_placed best / packing best",
            section.figures["backbone_order_placed_best"],
            best,
            "%",
        ),
    ]
    for label, a, b, unit in pairs:
        section.comparisons.append(Comparison(label, ratio(a, b), unit))
