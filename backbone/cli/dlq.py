"""``backbone dlq``: list, show, re-drive and purge dead letters."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from ..connection import Backbone
from ..deadletters import DeadLetter, DeadLetters
from ..partitions import check_named
from .common import (
    DEFAULT_URL,
    USAGE,
    Environment,
    RedisUrl,
    Uri,
    console,
    entry_id,
    errors,
    fail,
    json_default,
    jsonable,
    print_table,
    printable,
    run,
)

dlq_app = typer.Typer(help="Inspect and re-drive dead letters.", no_args_is_help=True)

Ids = Annotated[list[str] | None, typer.Argument(help="Dead letter ids.")]
Everything = Annotated[bool, typer.Option("--all", help="Every dead letter.")]
OfGroup = Annotated[str | None, typer.Option(help="With --all: only this group.")]


def _letters_table(letters: list[DeadLetter]) -> Table:
    table = Table(show_lines=False)
    # Ids are never folded nor cut: a folded id cannot be pasted into retry.
    for column in ("dead letter", "event"):
        table.add_column(column, no_wrap=True)
    for column in ("group", "operation", "reason"):
        table.add_column(column, overflow="fold")
    table.add_column("deliveries", justify="right")
    table.add_column("error", overflow="fold")
    for letter in letters:
        table.add_row(
            letter.id,
            Text(printable(letter.event_id.id)),
            Text(printable(letter.group)),
            Text(printable(letter.operation)),
            Text(printable(letter.reason)),
            str(letter.deliveries),
            Text(printable(f"{letter.error_type}: {letter.error_message}"[:120])),
        )
    return table


@dlq_app.command("list")
def dlq_list(
    uri: Uri,
    group: Annotated[str | None, typer.Option(help="Only this consumer group.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Most dead letters to list.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines output.")] = False,
    redis_url: RedisUrl = DEFAULT_URL,
    environment: Environment = "dev",
) -> None:
    """List dead letters, oldest first."""

    async def go() -> tuple[int, list[DeadLetter]]:
        async with Backbone(redis_url, environment=environment) as bus:
            await check_named(bus, bus.keys(uri))
            letters = DeadLetters(bus, uri)
            return await letters.count(), await letters.list(group=group, limit=limit)

    total, found = run(go)
    if as_json:
        for letter in found:
            sys.stdout.write(
                json.dumps(jsonable(letter_document(letter)), default=json_default)
                + "\n"
            )
        return
    console.print(
        f"{total} dead letter(s) in stream {uri!r} ({environment})",
        highlight=False,
        markup=False,
    )
    if found:
        print_table(_letters_table(found))


def letter_document(
    letter: DeadLetter, payload: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A dead letter as ``--json`` and ``show`` print it (and ``backbone ui``)."""
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
    redis_url: RedisUrl = DEFAULT_URL,
    environment: Environment = "dev",
) -> None:
    """Show one dead letter with its error, metadata and payload."""
    entry_id(dead_letter_id, "dead letter id")

    async def go() -> tuple[DeadLetter, dict[str, Any]] | None:
        async with Backbone(redis_url, environment=environment) as bus:
            await check_named(bus, bus.keys(uri))
            letters = DeadLetters(bus, uri)
            letter = await _resolve(letters, dead_letter_id)
            if letter is None:
                return None
            return letter, await letters.payload(letter)

    found = run(go)
    if found is None:
        fail(_not_found([dead_letter_id], uri, environment, "nothing to show"))
    letter, payload = found
    console.print_json(
        json.dumps(jsonable(letter_document(letter, payload)), default=json_default)
    )


def _not_found(ids: list[str], uri: str, environment: str, outcome: str) -> str:
    what = "no dead letter" if len(ids) == 1 else "no dead letters"
    return (
        f"{what} {', '.join(ids)} in stream {uri!r} (environment {environment!r}); "
        f"{outcome}; list them with: backbone dlq list --uri {uri} "
        f"--environment {environment}"
    )


def _chosen(ids: list[str] | None, everything: bool, group: str | None) -> list[str]:
    """The ids named on the command line, checked (empty with --all)."""
    if ids and everything:
        fail("name dead letter ids or pass --all, not both", USAGE)
    if not ids and not everything:
        fail("name dead letter ids, or pass --all", USAGE)
    if group is not None and not everything:
        fail("--group chooses among all dead letters: use it with --all", USAGE)
    return [entry_id(text, "dead letter id") for text in ids or []]


async def _existing(
    letters: DeadLetters, ids: list[str], everything: bool, group: str | None
) -> tuple[list[str], list[str]]:
    """The dead letters to act on, and the named ids that are not dead letters."""
    if everything:
        return await letters.all_ids(group=group), []
    chosen: list[str] = []
    unknown: list[str] = []
    for text in ids:
        letter = await _resolve(letters, text)
        if letter is None:
            unknown.append(text)
        else:
            chosen.append(letter.id)
    return chosen, unknown


async def _resolve(letters: DeadLetters, text: str) -> DeadLetter | None:
    """The dead letter TEXT names: its own id, or the id of its event (as logs
    name it) when one group dead-lettered that event."""
    letter = await letters.get(text)
    if letter is not None:
        return letter
    of_event = await letters.of_event(text)
    if len(of_event) > 1:
        fail(
            f"{text} is an event id with {len(of_event)} dead letters (groups "
            f"{', '.join(sorted(x.group for x in of_event))}); name one of "
            f"{', '.join(x.id for x in of_event)}",
            USAGE,
        )
    if of_event:
        errors.print(
            f"{text} is an event id; its dead letter is {of_event[0].id}",
            markup=False,
            highlight=False,
        )
        return of_event[0]
    return None


@dlq_app.command("retry")
def dlq_retry(
    uri: Uri,
    ids: Ids = None,
    everything: Everything = False,
    group: OfGroup = None,
    redis_url: RedisUrl = DEFAULT_URL,
    environment: Environment = "dev",
) -> None:
    """Re-drive dead letters to their consumer group.

    Named ids must all be dead letters, or nothing is re-driven."""
    named = _chosen(ids, everything, group)

    async def go() -> tuple[int, int, list[str]]:
        async with Backbone(redis_url, environment=environment) as bus:
            await check_named(bus, bus.keys(uri))
            letters = DeadLetters(bus, uri)
            chosen, unknown = await _existing(letters, named, everything, group)
            if unknown:
                return 0, 0, unknown
            return len(chosen), len(await letters.retry(chosen)), []

    wanted, done, unknown = run(go)
    if unknown:
        fail(_not_found(unknown, uri, environment, "nothing was re-driven"))
    console.print(f"re-driven: {done}", highlight=False)
    if done < wanted:
        fail(
            f"{wanted - done} of the {wanted} dead letters were gone before they "
            "could be re-driven (another retry or purge at the same time?)"
        )


@dlq_app.command("purge")
def dlq_purge(
    uri: Uri,
    ids: Ids = None,
    everything: Everything = False,
    group: OfGroup = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    redis_url: RedisUrl = DEFAULT_URL,
    environment: Environment = "dev",
) -> None:
    """Delete dead letters and their payload copies for good.

    Named ids must all be dead letters, or nothing is deleted."""
    named = _chosen(ids, everything, group)
    if everything and not yes:
        typer.confirm(f"delete every dead letter of {uri!r}?", abort=True)

    async def go() -> tuple[int, int, list[str]]:
        async with Backbone(redis_url, environment=environment) as bus:
            await check_named(bus, bus.keys(uri))
            letters = DeadLetters(bus, uri)
            chosen, unknown = await _existing(letters, named, everything, group)
            if unknown:
                return 0, 0, unknown
            return len(chosen), await letters.purge(chosen), []

    wanted, done, unknown = run(go)
    if unknown:
        fail(_not_found(unknown, uri, environment, "nothing was purged"))
    console.print(f"purged: {done}", highlight=False)
    if done < wanted:
        fail(
            f"{wanted - done} of the {wanted} dead letters were gone before they "
            "could be purged (another retry or purge at the same time?)"
        )
