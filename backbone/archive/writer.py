"""The writer stage: one transaction per batch, then the acks.

A batch is written in one PostgreSQL transaction: its rows are copied (``COPY``)
into a temporary table, inserted from there into ``events`` with ``ON CONFLICT
(event_id) DO NOTHING`` (a redelivered event is never a second row), and each
stream's checkpoint row is upserted, in one statement. Only after ``COMMIT``
returns are the entries acknowledged in Redis (``XACK``). A crash between the
two leaves them pending: they come again and are not inserted twice.

When PostgreSQL is down or slow the same batch is tried again with backoff, on
a new connection, for as long as it takes; its room stays taken, so the readers
stop reading. A row PostgreSQL refuses (a data exception or a constraint) is
found by splitting the batch in halves and dead-lettered; the rest is written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..deadletters import DeadLetterReason
from ..events import id_key
from ..faults import Fault, classify
from .deadletter import dead_letter
from .driver import PgFault, classify_pg, psycopg_module
from .schema import migrate

if TYPE_CHECKING:
    import psycopg

    from ..connection import Backbone
    from ..keys import StreamKeys
    from .batcher import Batch, Batcher
    from .options import ArchiveOptions
    from .state import ArchiveStats, Item, Outage

__all__ = ["Writer", "connect"]

log = logging.getLogger("backbone.archive")

INCOMING = "backbone_archive_incoming"
COLUMNS = (
    "event_id, stream_id, stream_type, event_type, event_data, metadata, version, "
    "created_at"
)
_INCOMING_DDL = f"""
CREATE TEMP TABLE IF NOT EXISTS {INCOMING} (
    ord integer NOT NULL, event_id text, stream_id text, stream_type text,
    event_type text, event_data jsonb, metadata jsonb, version bigint,
    created_at timestamptz
) ON COMMIT DELETE ROWS
"""
# The rows in read order (so global_position follows the stream), inserted
# unless their event is archived already; the checkpoints counting only the
# rows inserted; and that count, for the stats. {s}: the schema.
_WRITE = f"""
WITH inserted AS (
    INSERT INTO {{s}}.events ({COLUMNS})
    SELECT {COLUMNS} FROM {INCOMING} ORDER BY ord
    ON CONFLICT (event_id) DO NOTHING
    RETURNING stream_type
), counted AS (
    SELECT stream_type, count(*) AS n FROM inserted GROUP BY stream_type
), checkpoint AS (
    INSERT INTO {{s}}.subscription_checkpoints AS c
        (subscription_id, stream, last_entry_id, events_archived, updated_at)
    SELECT %s, b.stream, b.last_entry_id, coalesce(counted.n, 0), now()
    FROM unnest(%s::text[], %s::text[]) AS b(stream, last_entry_id)
    LEFT JOIN counted ON counted.stream_type = b.stream
    ON CONFLICT (subscription_id, stream) DO UPDATE SET
        last_entry_id = CASE
            WHEN (split_part(excluded.last_entry_id, '-', 1)::numeric,
                  split_part(excluded.last_entry_id, '-', 2)::numeric)
               > (split_part(c.last_entry_id, '-', 1)::numeric,
                  split_part(c.last_entry_id, '-', 2)::numeric)
            THEN excluded.last_entry_id ELSE c.last_entry_id END,
        events_archived = c.events_archived + excluded.events_archived,
        updated_at = excluded.updated_at
)
SELECT coalesce(sum(n), 0) FROM counted
"""


async def connect(
    url: str, schema: str, *, timeout: float
) -> psycopg.AsyncConnection[Any]:
    """A connection ready to write: schema migrated, temporary table made."""
    psycopg = psycopg_module()
    conn = await psycopg.AsyncConnection.connect(
        url,
        autocommit=True,
        connect_timeout=max(1, int(timeout)),
        application_name="backbone archive",
    )
    try:
        await migrate(conn, schema)
        await conn.execute(_INCOMING_DDL)
    except BaseException:
        await conn.close()
        raise
    return conn  # type: ignore[no-any-return]


class Writer:
    """Commits batches and acknowledges them; several may run, each on its own
    connection."""

    def __init__(
        self,
        backbone: Backbone,
        postgres_url: str,
        options: ArchiveOptions,
        *,
        batcher: Batcher,
        stats: ArchiveStats,
        postgres: Outage,
        redis: Outage,
        finished: Callable[[StreamKeys, list[str]], None],
    ) -> None:
        self.backbone = backbone
        self.url = postgres_url
        self.options = options
        self.batcher = batcher
        self.stats = stats
        self.postgres = postgres
        self.redis = redis
        self.finished = finished
        self.conn: psycopg.AsyncConnection[Any] | None = None
        self._rejected: set[str] = set()
        """Entries of the batch being written that were dead-lettered instead."""
        sql = psycopg_module().sql
        self._write = sql.SQL(_WRITE).format(s=sql.Identifier(options.schema))
        self._copy = f"COPY {INCOMING} (ord, {COLUMNS}) FROM STDIN"

    async def run(self) -> None:
        try:
            while (batch := await self.batcher.next()) is not None:
                await self.commit(batch)
        finally:
            if self.conn is not None:
                await self.conn.close()
                self.conn = None

    async def commit(self, batch: Batch) -> None:
        """Write BATCH's rows (until PostgreSQL takes them), then ack it all."""
        done: list[Item] = []
        rows = [item for item in batch.items if item.row is not None]
        if rows:
            await self._write_rows(rows)
        for item in batch.items:
            if item.row is None or item.entry_id not in self._rejected:
                done.append(item)
        self._rejected.clear()
        await self._ack(done)
        self.stats.batches += 1

    # --- PostgreSQL -----------------------------------------------------------

    async def _write_rows(self, rows: list[Item]) -> None:
        """Commit ROWS; a row PostgreSQL refuses is dead-lettered, found by
        halving (a refusal is rare; the halves are written on their own)."""
        while True:
            try:
                inserted = await asyncio.wait_for(
                    self._transaction(rows), self.options.write_timeout
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                fault = classify_pg(exc)
                if fault is PgFault.BUG:
                    raise
                if fault is PgFault.ROWS:
                    await self._split(rows, exc)
                    return
                await self._reset()
                self.stats.postgres_retries += 1
                await self.postgres.wait(exc)
                continue
            self.postgres.over()
            self.stats.archived += inserted
            self.stats.duplicates += len(rows) - inserted
            return

    async def _split(self, rows: list[Item], exc: BaseException) -> None:
        if len(rows) > 1:
            half = len(rows) // 2
            await self._write_rows(rows[:half])
            await self._write_rows(rows[half:])
            return
        item = rows[0]
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        written = await dead_letter(
            self.backbone,
            item.keys,
            group=self.options.group,
            consumer=self.options.consumer,
            entry_id=item.entry_id,
            fields=item.fields,
            reason=DeadLetterReason.INVALID_PAYLOAD,
            message=f"PostgreSQL refused the row: {type(exc).__name__}: {text}",
            outage=self.redis,
        )
        self.stats.dead_lettered += 1
        # Out of the batch's acks (the dead letter acked it, or it stays
        # pending), and out of the room.
        self._rejected.add(item.entry_id)
        self.finished(item.keys, [item.entry_id])
        if not written:
            log.error("%s stays pending in Redis", item.entry_id)

    async def _transaction(self, rows: list[Item]) -> int:
        conn = self.conn
        if conn is None or conn.closed:
            conn = self.conn = await connect(
                self.url, self.options.schema, timeout=self.options.write_timeout
            )
        last: dict[str, str] = {}
        async with conn.transaction():
            async with conn.cursor().copy(self._copy) as copy:
                for n, item in enumerate(rows):
                    row = item.row
                    assert row is not None
                    await copy.write_row((n, *row))
                    seen = last.get(row.stream_type)
                    if seen is None or id_key(item.entry_id) > id_key(seen):
                        last[row.stream_type] = item.entry_id
            cursor = await conn.execute(
                self._write, (self.options.group, list(last), list(last.values()))
            )
            found = await cursor.fetchone()
        return int(found[0]) if found else 0

    async def _reset(self) -> None:
        """Drop the connection after a failure: the next attempt makes a new one."""
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                await asyncio.wait_for(conn.close(), 5)
            except Exception as exc:
                log.debug("closing a failed PostgreSQL connection: %s", exc)

    # --- Redis ----------------------------------------------------------------

    async def _ack(self, items: list[Item]) -> None:
        """XACK ITEMS per stream, through Redis outages (the rows are committed:
        only the acks are left, and acking twice is harmless)."""
        by_stream: dict[StreamKeys, list[str]] = {}
        for item in items:
            by_stream.setdefault(item.keys, []).append(item.entry_id)
        for keys, ids in by_stream.items():
            for start in range(0, len(ids), 1000):
                chunk = ids[start : start + 1000]
                while True:
                    try:
                        await self.backbone.redis.xack(
                            keys.stream, self.options.group, *chunk
                        )
                    except Exception as exc:
                        fault = classify(exc)
                        if fault is Fault.BUG:
                            raise
                        if fault is Fault.NO_GROUP:
                            break  # the group is gone, and its pending list with it
                        self.stats.redis_retries += 1
                        await self.redis.wait(exc)
                        continue
                    self.redis.over()
                    break
                self.stats.acked += len(chunk)
            self.finished(keys, ids)
