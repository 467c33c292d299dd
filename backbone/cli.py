"""The ``backbone`` command: codegen, demo and dead-letter tools.

This module is the composition root: it is the one place in the package that
reaches the code generator (lazily, inside the ``codegen`` command); the runtime
modules never import it.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from .connection import ENV_URL, Backbone
from .deadletters import DeadLetter, DeadLetters
from .errors import BackboneError, ContractError

T = TypeVar("T")

app = typer.Typer(
    name="backbone",
    help="Typed event contracts on Redis Streams and hashes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
dlq_app = typer.Typer(help="Inspect and re-drive dead letters.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")

console = Console()
errors = Console(stderr=True)

RedisUrl = Annotated[
    str,
    typer.Option(
        "--redis-url",
        envvar=ENV_URL,
        help="Redis URL (redis://host:port/db).",
        show_default=True,
    ),
]
Environment = Annotated[
    str, typer.Option("--environment", "-e", help="Environment part of stream keys.")
]
Uri = Annotated[
    str, typer.Option("--uri", "-u", help="Stream URI, e.g. hello.event-sourcing.")
]


def _run(factory: Callable[[], Awaitable[T]]) -> T:
    try:
        return asyncio.run(factory())  # type: ignore[arg-type]
    except BackboneError as exc:
        errors.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc


@app.command()
def codegen(
    paths: Annotated[
        list[Path],
        typer.Argument(help="Contract modules or packages to generate from."),
    ],
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Write nothing; exit 1 when generated code is stale."
        ),
    ] = False,
) -> None:
    """Generate typed producers, consumers and dispatchers from contracts."""
    from codegen import CodegenError, generate

    try:
        outcome = generate(paths, check=check)
    except (ContractError, CodegenError) as exc:
        errors.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(1) from exc
    if check:
        for path in outcome.stale:
            errors.print(
                f"stale: {path} (run: backbone codegen {' '.join(map(str, paths))})",
                markup=False,
            )
        for path in outcome.orphaned:
            errors.print(
                f"orphaned: {path} (its contract module is gone; delete it)",
                markup=False,
            )
        if not outcome.ok_for_check:
            raise typer.Exit(1)
        console.print(
            f"up to date: {len(outcome.unchanged)} generated module(s)", highlight=False
        )
        return
    for path in outcome.written:
        console.print(f"wrote {path}", highlight=False)
    for path in outcome.orphaned:
        console.print(f"deleted orphaned {path}", highlight=False)
    console.print(
        f"{len(outcome.written)} written, {len(outcome.unchanged)} unchanged",
        highlight=False,
    )


@app.command()
def demo(
    redis_url: Annotated[
        str | None,
        typer.Option(
            "--redis-url",
            envvar=ENV_URL,
            help="Run on this Redis instead of the embedded in-process one.",
        ),
    ] = None,
    orders: Annotated[
        int, typer.Option(min=1, max=100_000, help="Orders to place.")
    ] = 3,
    environment: Environment = "demo",
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for every order.")
    ] = 30.0,
) -> None:
    """Run the shipment-tracking flow: producer, transit, consumer and reporter."""
    from samples.demo import run_demo

    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    ok = _run(
        lambda: run_demo(
            redis_url or "memory://",
            orders=orders,
            environment=environment,
            timeout=timeout,
            out=console,
        )
    )
    if not ok:
        raise typer.Exit(1)


def _letters_table(letters: list[DeadLetter]) -> Table:
    table = Table(show_lines=False)
    for column in (
        "dead letter",
        "event",
        "group",
        "operation",
        "reason",
        "deliveries",
        "error",
    ):
        table.add_column(column, overflow="fold")
    for letter in letters:
        table.add_row(
            letter.id,
            letter.event_id.id,
            letter.group,
            letter.operation,
            letter.reason,
            str(letter.deliveries),
            f"{letter.error_type}: {letter.error_message}"[:120],
        )
    return table


@dlq_app.command("list")
def dlq_list(
    uri: Uri,
    group: Annotated[str | None, typer.Option(help="Only this consumer group.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Most dead letters to list.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines output.")] = False,
    redis_url: RedisUrl = "redis://127.0.0.1:6379/0",
    environment: Environment = "dev",
) -> None:
    """List dead letters, oldest first."""

    async def go() -> tuple[int, list[DeadLetter]]:
        async with Backbone(redis_url, environment=environment) as bus:
            letters = DeadLetters(bus, uri)
            return await letters.count(), await letters.list(group=group, limit=limit)

    total, found = _run(go)
    if as_json:
        for letter in found:
            sys.stdout.write(
                json.dumps(_letter_json(letter), default=_json_default) + "\n"
            )
        return
    console.print(
        f"{total} dead letter(s) in stream {uri!r} ({environment})", highlight=False
    )
    if found:
        console.print(_letters_table(found))


def _json_default(value: object) -> object:
    """JSON for what msgpack payloads may hold beyond JSON's types."""
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(value).decode()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    return str(value)


def _letter_json(
    letter: DeadLetter, payload: dict[str, Any] | None = None
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": letter.id,
        "event_id": str(letter.event_id),
        "group": letter.group,
        "consumer": letter.consumer,
        "handler": letter.handler,
        "reason": letter.reason,
        "error_type": letter.error_type,
        "error_message": letter.error_message,
        "deliveries": letter.deliveries,
        "at": letter.at.isoformat() if letter.at else None,
        "metadata": letter.metadata,
    }
    if payload is not None:
        data["payload"] = payload
        data["traceback"] = letter.traceback
    return data


@dlq_app.command("show")
def dlq_show(
    dead_letter_id: Annotated[str, typer.Argument(help="The dead letter's id.")],
    uri: Uri,
    redis_url: RedisUrl = "redis://127.0.0.1:6379/0",
    environment: Environment = "dev",
) -> None:
    """Show one dead letter with its error, metadata and payload."""

    async def go() -> tuple[DeadLetter, dict[str, Any]] | None:
        async with Backbone(redis_url, environment=environment) as bus:
            letters = DeadLetters(bus, uri)
            letter = await letters.get(dead_letter_id)
            if letter is None:
                return None
            return letter, await letters.payload(letter)

    found = _run(go)
    if found is None:
        errors.print(f"no dead letter {dead_letter_id} in stream {uri!r}")
        raise typer.Exit(1)
    letter, payload = found
    console.print_json(json.dumps(_letter_json(letter, payload), default=_json_default))


def _resolve_ids(
    letters: DeadLetters, ids: list[str] | None, everything: bool, group: str | None
) -> Awaitable[list[str]]:
    async def resolve() -> list[str]:
        if everything:
            return await letters.all_ids(group=group)
        return list(ids or [])

    return resolve()


@dlq_app.command("retry")
def dlq_retry(
    uri: Uri,
    ids: Annotated[list[str] | None, typer.Argument(help="Dead letter ids.")] = None,
    everything: Annotated[
        bool, typer.Option("--all", help="Every dead letter.")
    ] = False,
    group: Annotated[
        str | None, typer.Option(help="With --all: only this group.")
    ] = None,
    redis_url: RedisUrl = "redis://127.0.0.1:6379/0",
    environment: Environment = "dev",
) -> None:
    """Re-drive dead letters to their consumer group."""
    if not ids and not everything:
        errors.print("name dead letter ids, or pass --all")
        raise typer.Exit(2)

    async def go() -> int:
        async with Backbone(redis_url, environment=environment) as bus:
            letters = DeadLetters(bus, uri)
            chosen = await _resolve_ids(letters, ids, everything, group)
            return len(await letters.retry(chosen))

    console.print(f"re-driven: {_run(go)}", highlight=False)


@dlq_app.command("purge")
def dlq_purge(
    uri: Uri,
    ids: Annotated[list[str] | None, typer.Argument(help="Dead letter ids.")] = None,
    everything: Annotated[
        bool, typer.Option("--all", help="Every dead letter.")
    ] = False,
    group: Annotated[
        str | None, typer.Option(help="With --all: only this group.")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    redis_url: RedisUrl = "redis://127.0.0.1:6379/0",
    environment: Environment = "dev",
) -> None:
    """Delete dead letters and their payload copies for good."""
    if not ids and not everything:
        errors.print("name dead letter ids, or pass --all")
        raise typer.Exit(2)
    if everything and not yes:
        typer.confirm(f"delete every dead letter of {uri!r}?", abort=True)

    async def go() -> int:
        async with Backbone(redis_url, environment=environment) as bus:
            letters = DeadLetters(bus, uri)
            chosen = await _resolve_ids(letters, ids, everything, group)
            return await letters.purge(chosen)

    console.print(f"purged: {_run(go)}", highlight=False)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
