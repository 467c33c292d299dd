"""The PostgreSQL archive: every event of some streams, kept in SQL.

:class:`ArchiveSink` consumes streams as a consumer group and writes every event
into a PostgreSQL table, in batches closed by size or time, committed before
they are acknowledged, idempotent by event id (``docs/archive.md``). The
package imports psycopg only when a sink runs, so ``decode_archived`` (and
``import backbone``) need nothing beyond backbone; running a sink needs the
``backbone[archive]`` extra.
"""

from __future__ import annotations

from .mapper import ArchiveRow, decode_archived, map_payload
from .options import ArchiveOptions
from .schema import SCHEMA_VERSION, SchemaError, migrate
from .sink import ArchiveSink
from .state import ArchiveStats

__all__ = [
    "SCHEMA_VERSION",
    "ArchiveOptions",
    "ArchiveRow",
    "ArchiveSink",
    "ArchiveStats",
    "SchemaError",
    "decode_archived",
    "map_payload",
    "migrate",
]
