"""``backbone archive``: streams into PostgreSQL, as a consumer group.

On a terminal a live table shows what is read, archived and in flight; else one
plain line every few seconds on stderr. The last line, on stdout, is the final
count. SIGTERM or SIGINT flush the open batch, commit and acknowledge it, and
exit 0; ``--until-idle`` stops by itself once everything is archived.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer
from rich.live import Live
from rich.table import Table

from ..connection import Backbone
from ..errors import BackboneError, ConfigurationError
from ..keys import StreamKeys
from ..partitions import check_named
from .common import (
    DEFAULT_URL,
    USAGE,
    LogLevel,
    RedisUrl,
    configure_logging,
    console,
    errors,
    fail,
    run,
)

if TYPE_CHECKING:
    from ..archive import ArchiveSink

app = typer.Typer()

POSTGRES_ENV: Final = "BACKBONE_POSTGRES_URL"
_PLAIN_EVERY: Final = 5.0


@app.command("archive")
def archive_command(
    uris: Annotated[
        list[str] | None,
        typer.Argument(
            help="Stream URIs to archive (e.g. hello.event-sourcing).",
            metavar="URI...",
            show_default=False,
        ),
    ] = None,
    redis_url: RedisUrl = DEFAULT_URL,
    postgres_url: Annotated[
        str | None,
        typer.Option(
            "--postgres-url",
            envvar=POSTGRES_ENV,
            help="PostgreSQL URL (postgresql://user:password@host:port/database).",
            show_default=False,
        ),
    ] = None,
    environment: Annotated[
        str,
        typer.Option(
            "--environment",
            "--env",
            "-e",
            envvar="BACKBONE_ENVIRONMENT",
            help="Environment part of stream keys.",
        ),
    ] = "dev",
    group: Annotated[
        str, typer.Option("--group", help="The archive's consumer group.")
    ] = "archive",
    consumer: Annotated[
        str | None,
        typer.Option(
            "--consumer",
            help="This sink's name in the group (default <host>-<pid>); a restart "
            "under the same name finishes what it left pending at once.",
            show_default=False,
        ),
    ] = None,
    schema: Annotated[
        str, typer.Option("--schema", help="PostgreSQL schema of the tables.")
    ] = "public",
    max_batch: Annotated[
        int, typer.Option("--max-batch", metavar="N", help="Rows per transaction.")
    ] = 1000,
    max_latency: Annotated[
        float,
        typer.Option(
            "--max-latency",
            metavar="SECONDS",
            help="Longest an event waits for its batch to fill.",
        ),
    ] = 0.5,
    max_in_flight: Annotated[
        int | None,
        typer.Option(
            "--max-in-flight",
            metavar="N",
            help="Most events read and not yet committed (default 4 batches).",
            show_default=False,
        ),
    ] = None,
    writers: Annotated[
        int, typer.Option("--writers", metavar="N", help="Concurrent transactions.")
    ] = 1,
    claim_idle: Annotated[
        float,
        typer.Option(
            "--claim-idle",
            metavar="SECONDS",
            help="Idle time after which a dead sink's events are claimed.",
        ),
    ] = 60.0,
    contracts: Annotated[
        list[Path] | None,
        typer.Option(
            "--contracts",
            metavar="PATH",
            help="Contract modules (as for backbone codegen): their operations "
            "without parameters have no payload hash to miss (repeatable).",
            show_default=False,
        ),
    ] = None,
    until_idle: Annotated[
        bool,
        typer.Option(
            "--until-idle", help="Stop once everything the streams hold is archived."
        ),
    ] = False,
    log_level: LogLevel = "warning",
) -> None:
    """Archive every event of the streams URI... into PostgreSQL (table events of
    --schema, created and migrated by the sink), as consumer group --group."""
    configure_logging(log_level)
    if not uris:
        fail("name at least one stream URI to archive (backbone archive URI...)", USAGE)
    if not postgres_url:
        fail(
            f"no PostgreSQL URL: pass --postgres-url or set {POSTGRES_ENV} "
            "(postgresql://user:password@host:port/database)",
            USAGE,
        )
    from ..archive import ArchiveOptions, ArchiveSink
    from ..archive.driver import psycopg_module
    from ..archive.options import default_consumer
    from ..archive.sink import check_postgres_url

    try:
        psycopg_module()
    except BackboneError as exc:
        fail(str(exc))
    try:
        check_postgres_url(postgres_url)
        for uri in uris:
            StreamKeys.parse(environment, uri)
        options = ArchiveOptions(
            group=group,
            schema=schema,
            max_batch=max_batch,
            max_latency=max_latency,
            max_in_flight=max_in_flight,
            writers=writers,
            claim_idle=claim_idle,
            contracts=_load_contracts(contracts or []),
            consumer=consumer or default_consumer(),
        )
    except BackboneError as exc:
        fail(str(exc), USAGE)
    done: list[ArchiveSink] = []

    async def go() -> None:
        async with Backbone(redis_url, environment=environment) as bus:
            for uri in uris:
                await check_named(bus, bus.keys(uri))
            sink = ArchiveSink(bus, postgres_url, uris, options)
            done.append(sink)
            await _start(sink, postgres_url)
            sink.stop_on_signals()
            with _progress(sink):
                await sink.run(until_idle=until_idle)

    with contextlib.suppress(KeyboardInterrupt):  # before the handlers are set
        run(go)
    if done:
        console.print(_summary(done[0]), markup=False, highlight=False, soft_wrap=True)


def _load_contracts(paths: list[Path]) -> list[Any]:
    if not paths:
        return []
    if TYPE_CHECKING:  # the repository's codegen/ folder, checked as itself
        from codegen import CodegenError, ImportFailures, load_contracts
    else:  # installed as backbone.codegen
        from ..codegen import CodegenError, ImportFailures, load_contracts
    try:
        return [spec for found in load_contracts(paths) for spec in found.specs]
    except ImportFailures as exc:
        fail("; ".join(exc.lines), USAGE)
    except CodegenError as exc:
        fail(str(exc), USAGE)


async def _start(sink: ArchiveSink, url: str) -> None:
    """Start SINK; PostgreSQL's refusals become one line."""
    from ..archive.driver import psycopg_module, redact

    psycopg = psycopg_module()
    where = redact(url)
    try:
        await sink.start()
    except psycopg.ProgrammingError as exc:
        raise ConfigurationError(
            f"PostgreSQL URL {where!r} is not valid ({_first_line(exc)}); use "
            "postgresql://user:password@host:port/database"
        ) from None
    except psycopg.OperationalError as exc:
        raise ConfigurationError(
            f"cannot reach PostgreSQL at {where} ({_first_line(exc)}); check "
            f"--postgres-url or {POSTGRES_ENV} and that the server is up"
        ) from None
    except psycopg.Error as exc:
        raise ConfigurationError(
            f"PostgreSQL at {where} refused to set up the archive "
            f"({type(exc).__name__}: {_first_line(exc)}); check the user's "
            "rights on the database and --schema"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def _progress(sink: ArchiveSink) -> Iterator[None]:
    """A live table on a terminal, a plain line every few seconds elsewhere."""
    if errors.is_terminal:
        with Live(_table(sink), console=errors, refresh_per_second=4) as live:
            task = asyncio.ensure_future(_refresh(lambda: live.update(_table(sink))))
            try:
                yield
            finally:
                task.cancel()
        return

    def line() -> None:
        errors.print(_line(sink), markup=False, highlight=False, soft_wrap=True)

    task = asyncio.ensure_future(_refresh(line, _PLAIN_EVERY))
    try:
        yield
    finally:
        task.cancel()


async def _refresh(show: Any, every: float = 0.25) -> None:
    while True:
        await asyncio.sleep(every)
        show()


def _elapsed(sink: ArchiveSink) -> float:
    return time.monotonic() - sink.started_at if sink.started_at else 0.0


def _table(sink: ArchiveSink) -> Table:
    stats = sink.stats
    seconds = _elapsed(sink)
    rate = stats.archived / seconds if seconds > 0 else 0.0
    table = Table(title="backbone archive", show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("streams", ", ".join(k.uri for k in sink.readers))
    table.add_row("archived", f"{stats.archived:,} ({rate:,.0f}/s)")
    table.add_row("read", f"{stats.read:,}")
    table.add_row("in flight", f"{sink.in_flight:,} / {sink.options.room:,}")
    table.add_row("already archived", f"{stats.duplicates:,}")
    table.add_row("dead-lettered", f"{stats.dead_lettered:,}")
    table.add_row("batches", f"{stats.batches:,}")
    state = "down, retrying" if sink.postgres_down else "up"
    table.add_row("PostgreSQL", state)
    return table


def _line(sink: ArchiveSink) -> str:
    stats = sink.stats
    seconds = _elapsed(sink)
    rate = stats.archived / seconds if seconds > 0 else 0.0
    down = "; PostgreSQL down, retrying" if sink.postgres_down else ""
    return (
        f"archived {stats.archived} ({rate:.0f}/s), read {stats.read}, in flight "
        f"{sink.in_flight}, dead-lettered {stats.dead_lettered}{down}"
    )


def _summary(sink: ArchiveSink) -> str:
    stats = sink.stats
    streams = ", ".join(k.uri for k in sink.readers)
    return (
        f"archived {stats.archived} events from {streams} into schema "
        f"{sink.options.schema} in {_elapsed(sink):.1f}s ({stats.duplicates} "
        f"already archived, {stats.dead_lettered} dead-lettered, {stats.skipped} "
        f"skipped)"
    )
