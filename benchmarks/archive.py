"""The PostgreSQL archive: rows per second of the sink against hand-written
inserts of the same rows, in one run against one PostgreSQL.

``archive_events`` packing events (50,000; ``--quick`` 2,000) are published,
then archived by an :class:`~backbone.archive.ArchiveSink` until it is idle:
reading from Redis, mapping, writing (``COPY`` into a temporary table, ``INSERT
... SELECT ... ON CONFLICT DO NOTHING``, the checkpoint, ``COMMIT``) and
acknowledging, all included. The same events are then archived by hand-written
loops that do the same work more simply, each as a consumer group of its own
(``XREADGROUP COUNT 1000``, a pipelined ``HGETALL`` per entry, msgpack to JSON,
``XACK`` after the insert), into fresh tables (same schema, same indexes):

* a plain loop, one ``INSERT ... ON CONFLICT DO NOTHING`` per row, each its own
  transaction (a handler that writes each event as it comes);
* ``executemany`` of the same statement, 1,000 rows per transaction (psycopg
  pipelines it).

Last, the write path alone, on the rows the sink wrote: ``executemany`` against
the sink's ``COPY`` + ``INSERT ... SELECT``, 1,000 rows per transaction, the
measurement behind the sink's choice of COPY.

PostgreSQL is the one ``BACKBONE_POSTGRES_URL`` names, else the local
``postgresql://postgres@127.0.0.1:5432/test``; every table lives in a schema of
this run, dropped at the end. Without psycopg or a server, the section reports
no figures and says why.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import time
from typing import Any, Final

import backbone
from backbone.archive import ArchiveOptions, ArchiveSink, migrate
from contracts.shipment_tracking_gen import shipment_tracking_producer

from .common import (
    BATCH_SIZE,
    Comparison,
    Measurement,
    Section,
    Settings,
    decode_field,
    packing_args,
    ratio,
    write_batches,
)
from .server import BenchServer

__all__ = ["run"]

URI = "archive.bench"
LOCAL_URL: Final = "postgresql://postgres@127.0.0.1:5432/test"
COLUMNS: Final = (
    "event_id, stream_id, stream_type, event_type, event_data, metadata, version, "
    "created_at"
)
INSERT: Final = (
    "INSERT INTO {s}.events (" + COLUMNS + ") VALUES "
    "(%s, %s, %s, %s, %s::jsonb, %s::jsonb, %s, %s) ON CONFLICT (event_id) DO NOTHING"
)
NAMES: Final = {
    "sink": "ArchiveSink (read, map, COPY + INSERT SELECT, ack)",
    "row_by_row": "hand-written: one INSERT per row, one transaction each",
    "executemany": "hand-written: executemany, 1,000 rows per transaction",
    "write_executemany": "write path alone: executemany, 1,000 per transaction",
    "write_copy": "write path alone: COPY + INSERT SELECT, 1,000 per transaction",
}


async def run(server: BenchServer, settings: Settings) -> Section:
    events = settings.archive_events
    section = Section("archive", f"PostgreSQL archive: {events:,} events")
    url = os.environ.get("BACKBONE_POSTGRES_URL") or LOCAL_URL
    why = await _unavailable(url)
    if why:
        section.rows += [
            Measurement(name, events, None, key, note=why).as_dict()
            for key, name in NAMES.items()
        ]
        section.figures.update(dict.fromkeys(f"{key}_per_s" for key in NAMES))
        section.notes.append(why)
        return section
    import psycopg

    run_id = secrets.token_hex(3)
    schemas = {key: f"bench_{run_id}_{key}" for key in NAMES}
    bus = backbone.Backbone(server.url, environment=server.environment)
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    try:
        producer = shipment_tracking_producer(bus, URI)
        await write_batches(producer, "packing", packing_args(), events, BATCH_SIZE)

        sink = ArchiveSink(
            bus,
            url,
            [URI],
            ArchiveOptions(schema=schemas["sink"], block=0.1, max_latency=0.05),
        )
        started = time.perf_counter()
        stats = await sink.run(until_idle=True)
        sink_seconds = time.perf_counter() - started
        if stats.archived != events:
            raise AssertionError(f"the sink archived {stats.archived} of {events}")

        # The JSON columns as the text the sink sends, so every variant
        # inserts the same bytes.
        select = COLUMNS.replace("event_data", "event_data::text").replace(
            "metadata", "metadata::text"
        )
        cursor = await conn.execute(
            f"SELECT {select} FROM {schemas['sink']}.events "
            "ORDER BY global_position".encode()
        )
        rows = await cursor.fetchall()
        singles = min(events, settings.archive_row_by_row)
        for key in NAMES:
            if key != "sink":
                await migrate(conn, schemas[key])
        row_by_row = await _timed(
            _hand(bus, conn, schemas["row_by_row"], singles, many=False)
        )
        executemany = await _timed(
            _hand(bus, conn, schemas["executemany"], events, many=True)
        )
        write_many = await _timed(
            _executemany(conn, schemas["write_executemany"], rows)
        )
        write_copy = await _timed(_copy(conn, schemas["write_copy"], rows))
        for key, expected in (
            ("row_by_row", singles),
            ("executemany", events),
            ("write_executemany", events),
            ("write_copy", events),
        ):
            await _check(conn, schemas[key], expected)
    finally:
        for schema in schemas.values():
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE".encode())
        await conn.close()
        await bus.close()

    measured = {
        "sink": Measurement(NAMES["sink"], events, sink_seconds, "end to end"),
        "row_by_row": Measurement(
            NAMES["row_by_row"], singles, row_by_row, "end to end"
        ),
        "executemany": Measurement(
            NAMES["executemany"], events, executemany, "end to end"
        ),
        "write_executemany": Measurement(
            NAMES["write_executemany"], events, write_many, "write path"
        ),
        "write_copy": Measurement(
            NAMES["write_copy"], events, write_copy, "write path"
        ),
    }
    base = measured["row_by_row"].rate
    for key, row in measured.items():
        data = row.as_dict()
        data["vs_row_by_row"] = ratio(row.rate, base)
        data["key"] = key
        section.rows.append(data)
    rates = {key: row.rate for key, row in measured.items()}
    section.figures.update({f"{key}_per_s": rate for key, rate in rates.items()})
    section.comparisons += [
        Comparison("sink / row-by-row loop", ratio(rates["sink"], rates["row_by_row"])),
        Comparison(
            "sink / executemany loop", ratio(rates["sink"], rates["executemany"])
        ),
        Comparison(
            "write path: COPY + INSERT SELECT / executemany",
            ratio(rates["write_copy"], rates["write_executemany"]),
        ),
    ]
    section.notes.append(
        "end to end: from the Redis stream to committed rows and acks; the "
        "hand-written loops map payloads more simply (msgpack to JSON, datetimes "
        "as text) and read no aggregate versions. Each commit waits for the disk "
        "(synchronous_commit on)"
    )
    return section


async def _unavailable(url: str) -> str:
    """Why the section cannot run ("" when it can)."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'backbone[archive]')"
    try:
        conn = await psycopg.AsyncConnection.connect(url, connect_timeout=3)
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"no PostgreSQL at {url} ({first}); set BACKBONE_POSTGRES_URL"
    await conn.close()
    return ""


async def _timed(work: Any) -> float:
    started = time.perf_counter()
    await work
    return time.perf_counter() - started


async def _hand(
    bus: backbone.Backbone, conn: Any, schema: str, events: int, *, many: bool
) -> None:
    """A hand-written archiver: a consumer group of its own, XREADGROUP, a
    pipelined HGETALL, msgpack to JSON, the inserts (one transaction per row,
    or executemany per read), XACK."""
    keys = bus.keys(URI)
    group = f"hand-{schema}"
    redis = bus.redis
    await redis.xgroup_create(keys.stream, group, id="0")
    statement = INSERT.replace("{s}", schema).encode()
    stream_type = f"{bus.environment}:{URI}"
    done = 0
    while done < events:
        reply: Any = await redis.xreadgroup(
            group, "hand", {keys.stream: ">"}, count=min(BATCH_SIZE, events - done)
        )
        entries: list[Any] = reply[0][1] if reply else []
        if not entries:
            break
        async with redis.pipeline(transaction=False) as pipe:
            for entry_id, _ in entries:
                pipe.hgetall(keys.payload(entry_id.decode()))
            payloads: list[Any] = await pipe.execute()
        rows = []
        for (raw_id, fields), payload in zip(entries, payloads, strict=True):
            entry_id = raw_id.decode()
            data = {k.decode(): decode_field(v) for k, v in payload.items()}
            meta = {k.decode(): v.decode() for k, v in fields.items()}
            rows.append(
                (
                    f"{stream_type}/{entry_id}",
                    stream_type,
                    stream_type,
                    meta.pop("o"),
                    json.dumps(data, default=str),
                    json.dumps(meta),
                    None,
                    dt.datetime.fromtimestamp(int(meta["t"]) / 1000, dt.UTC),
                )
            )
        if many:
            async with conn.transaction(), conn.cursor() as cursor:
                await cursor.executemany(statement, rows)
        else:
            for row in rows:
                await conn.execute(statement, row)
        await redis.xack(keys.stream, group, *(e[0] for e in entries))
        done += len(entries)


async def _executemany(conn: Any, schema: str, rows: list[Any]) -> None:
    statement = INSERT.replace("{s}", schema).encode()
    for start in range(0, len(rows), BATCH_SIZE):
        async with conn.transaction(), conn.cursor() as cursor:
            await cursor.executemany(statement, rows[start : start + BATCH_SIZE])


async def _copy(conn: Any, schema: str, rows: list[Any]) -> None:
    await conn.execute(
        b"CREATE TEMP TABLE IF NOT EXISTS bench_incoming (ord integer, "
        b"event_id text, stream_id text, stream_type text, event_type text, "
        b"event_data jsonb, metadata jsonb, version bigint, created_at timestamptz) "
        b"ON COMMIT DELETE ROWS"
    )
    insert = (
        f"INSERT INTO {schema}.events ({COLUMNS}) SELECT {COLUMNS} "
        "FROM bench_incoming ORDER BY ord ON CONFLICT (event_id) DO NOTHING"
    ).encode()
    for start in range(0, len(rows), BATCH_SIZE):
        async with conn.transaction():
            async with conn.cursor().copy(
                f"COPY bench_incoming (ord, {COLUMNS}) FROM STDIN".encode()
            ) as copy:
                for n, row in enumerate(rows[start : start + BATCH_SIZE]):
                    await copy.write_row((n, *row))
            await conn.execute(insert)


async def _check(conn: Any, schema: str, expected: int) -> None:
    cursor = await conn.execute(f"SELECT count(*) FROM {schema}.events".encode())
    (count,) = await cursor.fetchone()
    if count != expected:
        raise AssertionError(f"{schema}: {count} rows, expected {expected}")
