"""PostgreSQL for the archive tests: a server, and a schema of its own per test.

The server is the one ``BACKBONE_POSTGRES_URL`` names, else the local one at
``postgresql://postgres@127.0.0.1:5432/test`` (``.ci/run`` installs and starts
it on a machine that lacks it). Without a reachable server, or without psycopg,
the archive tests are skipped here and fail under ``CI=true``. Each test gets a
fresh schema name; the sink creates the schema and the test drops it after.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from typing import Any, Final

import pytest

from conftest import IN_CI

POSTGRES_ENV: Final = "BACKBONE_POSTGRES_URL"
LOCAL_URL: Final = "postgresql://postgres@127.0.0.1:5432/test"


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The URL of the PostgreSQL server the archive tests use."""
    url = os.environ.get(POSTGRES_ENV) or LOCAL_URL
    try:
        import psycopg
    except ImportError:
        _unavailable("psycopg is not installed: pip install 'backbone[archive]'")
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        _unavailable(
            f"no PostgreSQL at {url} ({first}); start one, or set {POSTGRES_ENV}"
        )
    return url


@pytest.fixture
def pg_schema(postgres_url: str) -> Iterator[str]:
    """A schema name no other test uses; dropped with everything in it after."""
    import psycopg

    name = f"t_{secrets.token_hex(4)}"
    yield name
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'.encode())


async def fetch(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    """The rows of QUERY (``{s}``: the schema is given by the caller)."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(query.encode(), params or None)
        return await cursor.fetchall()


def through(url: str, port: int) -> str:
    """URL with its host and port replaced by 127.0.0.1:PORT (a proxy's)."""
    from psycopg.conninfo import make_conninfo

    return make_conninfo(url, host="127.0.0.1", port=str(port))
