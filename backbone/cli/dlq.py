"""``backbone dlq``: list, show, re-drive and purge dead letters."""

from __future__ import annotations

import base64
import datetime as dt
import json
import sys
from collections.abc import Awaitable
from typing import Annotated, Any

import typer
from rich.table import Table

from ..connection import Backbone
from ..deadletters import DeadLetter, DeadLetters
from .common import Environment, RedisUrl, Uri, console, errors, run

dlq_app = typer.Typer(help="Inspect and re-drive dead letters.", no_args_is_help=True)


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

    total, found = run(go)
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

    found = run(go)
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

    console.print(f"re-driven: {run(go)}", highlight=False)


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

    console.print(f"purged: {run(go)}", highlight=False)
