"""psycopg, imported only when the archive runs, and what its errors mean.

``import backbone`` never needs psycopg: the archive's modules name its types
for the type checker only and get the module through :func:`psycopg_module`,
which says how to install it when it is missing.

A failed PostgreSQL transaction means one of three things, decided here once:

* :attr:`PgFault.ROWS`: the server refused what a row holds (a data exception,
  class 22, or a constraint, class 23): the batch is split to find the row, which
  is dead-lettered;
* :attr:`PgFault.RETRY`: anything else the server or the connection says (lost
  connection, shutdown, too many clients, a missing table, a lock timeout): the
  same batch is tried again with backoff, nothing is acknowledged meanwhile;
* :attr:`PgFault.BUG`: an error of this program; it propagates.
"""

from __future__ import annotations

import enum
import types
from typing import Final

from ..errors import ConfigurationError

__all__ = ["ARCHIVE_EXTRA", "PgFault", "classify_pg", "psycopg_module", "redact"]

ARCHIVE_EXTRA: Final = "pip install 'backbone[archive]'"


def psycopg_module() -> types.ModuleType:
    """psycopg 3, or a :class:`ConfigurationError` naming the extra to install."""
    try:
        import psycopg
    except ImportError as exc:
        raise ConfigurationError(
            f"the PostgreSQL archive needs psycopg 3, which is not installed "
            f"({exc.name or exc}); install it with: {ARCHIVE_EXTRA}"
        ) from None
    return psycopg


class PgFault(enum.Enum):
    ROWS = "rows"
    RETRY = "retry"
    BUG = "bug"


def classify_pg(exc: BaseException) -> PgFault:
    """The kind of failure EXC is (see the module documentation)."""
    psycopg = psycopg_module()
    if isinstance(exc, psycopg.errors.DataError | psycopg.errors.IntegrityError):
        return PgFault.ROWS
    if isinstance(exc, psycopg.Error | OSError | TimeoutError):
        return PgFault.RETRY
    return PgFault.BUG


def redact(url: str) -> str:
    """URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url
