"""``backbone trim``: remove old events and dead letters with their payloads,
up to what consumer groups, projections and the event store still need."""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Annotated, Any

import typer

from ..connection import Backbone
from ..errors import ConfigurationError
from ..keys import StreamKeys
from ..partitions import check_named
from ..retention import TrimReport, parse_duration, trim_keys
from .common import (
    DEFAULT_URL,
    USAGE,
    Environment,
    RedisUrl,
    console,
    fail,
    run,
)

app = typer.Typer()


@app.command()
def trim(
    uris: Annotated[
        list[str] | None,
        typer.Argument(
            help="Stream URIs (e.g. hello.event-sourcing).", metavar="URI..."
        ),
    ] = None,
    max_len: Annotated[
        str | None,
        typer.Option(
            "--max-len", metavar="N", help="Keep at most the newest N events."
        ),
    ] = None,
    max_age: Annotated[
        str | None,
        typer.Option(
            "--max-age",
            metavar="DURATION",
            help="Remove events older than this: 30m, 12h, 7d, 2w, 1h30m.",
        ),
    ] = None,
    dead_letters_max_len: Annotated[
        str | None,
        typer.Option(
            "--dead-letters-max-len",
            metavar="N",
            help="Keep at most the newest N dead letters.",
        ),
    ] = None,
    dead_letters_max_age: Annotated[
        str | None,
        typer.Option(
            "--dead-letters-max-age",
            metavar="DURATION",
            help="Remove dead letters older than this.",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Remove also events consumer groups have not read or acknowledged, "
            "projections have not applied, and events of aggregates.",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would go; remove nothing.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per stream and part.")
    ] = False,
    redis_url: RedisUrl = DEFAULT_URL,
    environment: Environment = "dev",
) -> None:
    """Remove the oldest events of streams (and, with --dead-letters-*, dead
    letters) with their payloads, in atomic steps. Events a consumer group has
    not read or acknowledged, that a projection has not applied, and events of
    aggregates stay unless --force; what held them back is printed."""
    if not uris:
        fail("name the stream(s) to trim: backbone trim URI... --max-age 7d", USAGE)
    parts = [
        (False, _length(max_len, "--max-len"), _age(max_age, "--max-age")),
        (
            True,
            _length(dead_letters_max_len, "--dead-letters-max-len"),
            _age(dead_letters_max_age, "--dead-letters-max-age"),
        ),
    ]
    parts = [part for part in parts if part[1] is not None or part[2] is not None]
    if not parts:
        fail(
            "give a bound: --max-len N or --max-age DURATION (events), "
            "--dead-letters-max-len N or --dead-letters-max-age DURATION",
            USAGE,
        )
    try:
        streams = [StreamKeys.parse(environment, uri) for uri in uris]
    except ConfigurationError as exc:
        fail(str(exc), USAGE)

    async def go() -> tuple[list[str], list[tuple[str, TrimReport]]]:
        async with Backbone(redis_url, environment=environment) as bus:
            for keys in streams:
                await check_named(bus, keys)
            unknown = [
                keys.name
                for keys in streams
                if not await bus.redis.exists(keys.stream, keys.dead_letters)
            ]
            if unknown:
                return unknown, []
            reports = []
            for keys in streams:
                for dead_letters, length, age in parts:
                    report = await trim_keys(
                        bus,
                        keys,
                        dead_letters=dead_letters,
                        max_len=length,
                        max_age=age,
                        force=force,
                        dry_run=dry_run,
                    )
                    reports.append((keys.uri, report))
            return [], reports

    unknown, reports = run(go)
    if unknown:
        fail(
            f"no stream{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(uri) for uri in unknown)} in environment "
            f"{environment!r}; nothing was trimmed; list the environment's streams "
            f"with: backbone inspect --environment {environment}"
        )
    for uri, report in reports:
        if as_json:
            sys.stdout.write(json.dumps(_json(uri, report)) + "\n")
            continue
        label = f"{uri} dead letters" if report.dead_letters else uri
        for line in report.lines(label):
            console.print(line, markup=False, highlight=False, soft_wrap=True)


def _length(text: str | None, option: str) -> int | None:
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        fail(f"{option} {text!r} is not a whole number of entries to keep", USAGE)
    if value < 0:
        fail(f"{option} {text} must be 0 or more (entries to keep)", USAGE)
    return value


def _age(text: str | None, option: str) -> str | None:
    if text is not None:
        try:
            parse_duration(text, option)
        except ConfigurationError as exc:
            fail(str(exc), USAGE)
    return text


def _json(uri: str, report: TrimReport) -> dict[str, Any]:
    return {"uri": uri, **dataclasses.asdict(report)}
