"""`backbone archive` as a process against a real Redis and PostgreSQL: a SIGKILL
mid-run then a restart (no loss, no duplicate), SIGTERM flushing the open batch,
the final count, and the one-line errors."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
from pathlib import Path

import backbone
from backbone.archive import migrate
from conftest import eventually, free_port
from contracts.shipment_tracking_gen import shipment_tracking_producer
from pg import POSTGRES_ENV, fetch
from test_dlq_cli import assert_one_error_line, command_env

ROOT = Path(__file__).resolve().parent.parent
URI = "orders"


def archive_args(
    real_url: str, postgres_url: str, schema: str, environment: str, *more: str
) -> list[str]:
    return [
        sys.executable, "-m", "backbone", "archive", URI,
        "--redis-url", real_url, "--postgres-url", postgres_url,
        "--schema", schema, "--environment", environment, *more,
    ]  # fmt: skip


def start(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        args,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=command_env(),
    )


async def publish(bus: backbone.Backbone, count: int) -> list[str]:
    producer = shipment_tracking_producer(bus, URI)
    ids: list[str] = []
    for first in range(0, count, 1000):
        async with producer.batch() as batch:
            for n in range(first, min(count, first + 1000)):
                batch.packing(f"u{n}@example.com", n, backbone_time())
        ids += [event.id for event in batch.event_ids]
    return ids


def backbone_time() -> dt.datetime:
    return dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


async def count_rows(postgres_url: str, schema: str) -> int:
    try:
        [(count,)] = await fetch(postgres_url, f"SELECT count(*) FROM {schema}.events")
    except Exception:
        return 0  # not created yet
    return int(count)


async def pending(bus: backbone.Backbone) -> int:
    try:
        summary = await bus.redis.xpending(bus.keys(URI).stream, "archive")
    except Exception:
        return 0  # no group yet
    return int(summary["pending"])


async def test_a_sink_killed_mid_run_then_restarted_archives_each_event_once(
    real_bus: backbone.Backbone,
    real_url: str,
    environment: str,
    postgres_url: str,
    pg_schema: str,
) -> None:
    total = 30_000
    ids = await publish(real_bus, total)
    args = archive_args(real_url, postgres_url, pg_schema, environment)
    first = start([*args, "--consumer", "sink-1", "--max-batch", "200"])
    try:

        async def under_way() -> bool:
            return await count_rows(postgres_url, pg_schema) >= 3000

        await eventually(under_way, timeout=60, message="the first sink under way")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
        first.communicate()
    archived_at_kill = await count_rows(postgres_url, pg_schema)
    assert archived_at_kill < total, "killed too late: nothing was left to do"
    assert await pending(real_bus) > 0  # read, not acknowledged: the dead sink's

    # Another sink of the group claims what the dead one held (after 1 s idle).
    second = await asyncio.to_thread(
        subprocess.run,
        [*args, "--consumer", "sink-2", "--claim-idle", "1", "--until-idle"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=command_env(),
        check=False,
    )
    assert second.returncode == 0, second.stderr
    assert f"archived {total - archived_at_kill} events from {URI}" in second.stdout

    found = await fetch(
        postgres_url,
        f"SELECT event_id, count(*) OVER () FROM {pg_schema}.events",
    )
    assert len(found) == total
    assert {row[0] for row in found} == {f"{environment}:{URI}/{i}" for i in ids}
    [(archived,)] = await fetch(
        postgres_url,
        f"SELECT events_archived FROM {pg_schema}.subscription_checkpoints",
    )
    assert archived == total
    assert await pending(real_bus) == 0


async def test_sigterm_flushes_the_open_batch_and_prints_the_count(
    real_bus: backbone.Backbone,
    real_url: str,
    environment: str,
    postgres_url: str,
    pg_schema: str,
) -> None:
    await publish(real_bus, 100)
    args = archive_args(real_url, postgres_url, pg_schema, environment)
    # A batch that never closes by itself: only the stop writes it.
    sink = start([*args, "--max-batch", "5000", "--max-latency", "600"])
    try:

        async def read_into_the_open_batch() -> bool:
            return await pending(real_bus) == 100

        await eventually(read_into_the_open_batch, timeout=30, message="100 read")
        assert await count_rows(postgres_url, pg_schema) == 0
        sink.send_signal(signal.SIGTERM)
        out, err = sink.communicate(timeout=30)
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.communicate()
    assert sink.returncode == 0, err
    assert out.strip().splitlines()[-1].startswith(f"archived 100 events from {URI}")
    assert await count_rows(postgres_url, pg_schema) == 100
    assert await pending(real_bus) == 0


def test_mistakes_and_unreachable_servers_are_one_line(
    real_url: str, postgres_url: str, pg_schema: str
) -> None:
    def archive(
        *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "backbone", "archive", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env=env or command_env(),
            check=False,
        )

    common = ["--redis-url", real_url, "--schema", pg_schema]
    no_postgres = {k: v for k, v in command_env().items() if k != POSTGRES_ENV}
    assert_one_error_line(
        archive(URI, *common, env=no_postgres),
        2,
        f"pass --postgres-url or set {POSTGRES_ENV}",
    )
    assert_one_error_line(
        archive("--postgres-url", postgres_url, *common),
        2,
        "name at least one stream URI",
    )
    assert_one_error_line(
        archive(URI, "--postgres-url", "mysql://db", *common),
        2,
        "PostgreSQL URL 'mysql://db' is not valid",
    )
    assert_one_error_line(
        archive(URI, "--postgres-url", postgres_url, "--max-batch", "0", *common),
        2,
        "max_batch must be >= 1",
    )
    down = f"postgresql://postgres:secret@127.0.0.1:{free_port()}/test"
    line = assert_one_error_line(
        archive(URI, "--postgres-url", down, *common),
        1,
        "cannot reach PostgreSQL at postgresql://postgres:***@127.0.0.1:",
    )
    assert "secret" not in line


async def test_a_schema_newer_than_the_code_is_refused_in_one_line(
    real_url: str, postgres_url: str, pg_schema: str
) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(
        postgres_url, autocommit=True
    ) as conn:
        await migrate(conn, pg_schema)
        table = f"{pg_schema}.backbone_archive_schema"
        await conn.execute(f"INSERT INTO {table} VALUES (7, 'later')".encode())
    result = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable, "-m", "backbone", "archive", URI, "--redis-url", real_url,
            "--postgres-url", postgres_url, "--schema", pg_schema, "--until-idle",
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env=command_env(),
        check=False,
    )  # fmt: skip
    assert_one_error_line(result, 1, "is at version 7, newer than this backbone knows")


def test_without_psycopg_backbone_imports_and_the_command_names_the_extra() -> None:
    program = (
        "import sys\n"
        "sys.modules['psycopg'] = None  # as if it were not installed\n"
        "import backbone, backbone.archive\n"
        "assert str(backbone.archive.decode_archived({'$decimal': '1.50'})) == '1.50'\n"
        "from backbone.cli import main\n"
        "sys.argv = ['backbone', 'archive', 'orders', '--postgres-url',\n"
        "            'postgresql://postgres@127.0.0.1/test']\n"
        "main()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
        check=False,
    )
    assert_one_error_line(result, 1, "install it with: pip install 'backbone[archive]'")
