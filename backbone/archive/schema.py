"""The archive's tables, created and migrated by the sink itself.

Every change of the schema is a numbered migration; ``backbone_archive_schema``
records those applied. :func:`migrate` runs at every start, in one transaction
under an advisory lock (so two sinks starting together never race), applies
what is missing and refuses a schema newer than this code. DDL is transactional
in PostgreSQL: a migration is applied whole or not at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from ..errors import BackboneError
from .driver import psycopg_module

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "SchemaError",
    "migrate",
    "schema_version",
]

VERSION_TABLE: Final = "backbone_archive_schema"

# Each migration: (version, description, statements). {s} is the schema,
# quoted. Never edit one that was released: add the next.
MIGRATIONS: Final[tuple[tuple[int, str, tuple[str, ...]], ...]] = (
    (
        1,
        "events and subscription_checkpoints",
        (
            """
            CREATE TABLE {s}.events (
                event_id text PRIMARY KEY,
                stream_id text NOT NULL,
                stream_type text NOT NULL,
                event_type text NOT NULL,
                event_data jsonb NOT NULL,
                metadata jsonb NOT NULL,
                version bigint,
                global_position bigint GENERATED ALWAYS AS IDENTITY,
                created_at timestamptz NOT NULL,
                archived_at timestamptz NOT NULL DEFAULT now()
            )
            """,
            "CREATE INDEX events_stream_version ON {s}.events (stream_id, version)",
            "CREATE UNIQUE INDEX events_global_position "
            "ON {s}.events (global_position)",
            "CREATE INDEX events_event_type ON {s}.events (event_type)",
            """
            CREATE TABLE {s}.subscription_checkpoints (
                subscription_id text NOT NULL,
                stream text NOT NULL,
                last_entry_id text NOT NULL,
                events_archived bigint NOT NULL DEFAULT 0,
                updated_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (subscription_id, stream)
            )
            """,
        ),
    ),
)
SCHEMA_VERSION: Final = MIGRATIONS[-1][0]
"""The schema version this code writes."""


class SchemaError(BackboneError):
    """The archive's schema cannot be used: newer than this code, or tables of
    the same names that the archive did not make."""


async def schema_version(conn: psycopg.AsyncConnection[Any], schema: str) -> int:
    """The schema version applied in SCHEMA (0: none)."""
    sql = psycopg_module().sql
    found = await conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL",
        (f"{_quoted(schema)}.{VERSION_TABLE}",),
    )
    row = await found.fetchone()
    if row is None or not row[0]:
        return 0
    cursor = await conn.execute(
        sql.SQL("SELECT coalesce(max(version), 0) FROM {}.{}").format(
            sql.Identifier(schema), sql.Identifier(VERSION_TABLE)
        )
    )
    got = await cursor.fetchone()
    return int(got[0]) if got else 0


async def migrate(conn: psycopg.AsyncConnection[Any], schema: str) -> int:
    """Bring SCHEMA up to :data:`SCHEMA_VERSION`; returns the version found
    before. Raises :class:`SchemaError` for a schema newer than this code, or an
    ``events`` table the archive did not create. CONN must not be in a
    transaction; it is left out of one."""
    sql = psycopg_module().sql
    async with conn.transaction():
        # One lock per schema: a second sink waits here, then finds it done.
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))",
            (f"backbone.archive:{schema}",),
        )
        await conn.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
        )
        found = await schema_version(conn, schema)
        if found > SCHEMA_VERSION:
            raise SchemaError(
                f"the archive schema {schema!r} is at version {found}, newer than "
                f"this backbone knows ({SCHEMA_VERSION}); upgrade backbone (the "
                "newer sink that migrated it is the one to run)"
            )
        if found == SCHEMA_VERSION:
            return found
        if found == 0:
            await _refuse_foreign_tables(conn, schema)
            await conn.execute(
                sql.SQL(
                    "CREATE TABLE {}.{} (version integer PRIMARY KEY, "
                    "description text NOT NULL, "
                    "applied_at timestamptz NOT NULL DEFAULT now())"
                ).format(sql.Identifier(schema), sql.Identifier(VERSION_TABLE))
            )
        quoted = sql.Identifier(schema).as_string(conn)
        for version, description, statements in MIGRATIONS:
            if version <= found:
                continue
            for statement in statements:
                await conn.execute(statement.replace("{s}", quoted).encode())
            await conn.execute(
                sql.SQL(
                    "INSERT INTO {}.{} (version, description) VALUES (%s, %s)"
                ).format(sql.Identifier(schema), sql.Identifier(VERSION_TABLE)),
                (version, description),
            )
        return found


async def _refuse_foreign_tables(
    conn: psycopg.AsyncConnection[Any], schema: str
) -> None:
    cursor = await conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
        "AND table_name IN ('events', 'subscription_checkpoints') ORDER BY 1",
        (schema,),
    )
    taken = [row[0] for row in await cursor.fetchall()]
    if taken:
        raise SchemaError(
            f"schema {schema!r} already has {' and '.join(taken)} but no "
            f"{VERSION_TABLE}: they were not made by backbone's archive; archive "
            "into another schema (backbone archive --schema NAME)"
        )


def _quoted(schema: str) -> str:
    return '"' + schema.replace('"', '""') + '"'
