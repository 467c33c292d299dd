"""``backbone replay``: a stream, or a range of it, into a handler.

The handler comes from ``module:function`` (called with no argument, or with
the :class:`Backbone` when it takes one): a handler object, routed through the
generated dispatcher of the stream's contract with ``partial=True``, or a
dispatcher. On a terminal a progress bar shows how far it is; the last line is
always the summary. Ctrl-C or SIGTERM stop it after the event being handled,
printing the id to resume from.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import inspect
import re
from typing import Annotated, Any, Final

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from ..connection import Backbone
from ..errors import BackboneError
from ..partitions import check_named
from ..store.ranges import Bound, count_range, next_id, range_ids
from ..store.replay import ReplaySummary, replay
from ..worker import load_object
from .common import (
    DEFAULT_URL,
    USAGE,
    Environment,
    LogLevel,
    RedisUrl,
    configure_logging,
    console,
    fail,
    run,
)
from .tail import _until_signal

app = typer.Typer()

INTERRUPTED: Final = 130
"""Exit code after Ctrl-C or SIGTERM (the replay did not reach its end)."""
_COUNT_CAP: Final = 1_000_000
_ID: Final = re.compile(r"[0-9]+-[0-9]+")


@app.command("replay")
def replay_command(
    uri: Annotated[str, typer.Argument(help="The stream, e.g. hello.event-sourcing.")],
    handler: Annotated[
        str,
        typer.Option(
            "--handler",
            help="module:function returning the handler object (or a generated "
            "dispatcher); called with the Backbone when it takes an argument.",
            show_default=False,
        ),
    ],
    start: Annotated[
        str,
        typer.Option(
            "--from",
            help="beginning, an entry id <ms>-<seq> (inclusive) or an ISO-8601 "
            "time with a UTC offset (2026-11-23T12:00:00Z).",
        ),
    ] = "beginning",
    end: Annotated[
        str,
        typer.Option(
            "--to",
            help="end, an entry id <ms>-<seq> (inclusive) or an ISO-8601 time with "
            "a UTC offset.",
        ),
    ] = "end",
    count: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many events.")
    ] = None,
    redis_url: RedisUrl = DEFAULT_URL,
    environment: Environment = "dev",
    log_level: LogLevel = "warning",
) -> None:
    """Replay a stream's events, from --from to --to, into a handler, without a
    consumer group. A handler that raises stops the replay at that event."""
    configure_logging(log_level)
    first = _bound(start, "--from", "beginning")
    last = _bound(end, "--to", "end")
    try:
        range_ids(first, last)
        target = load_object(handler)
    except BackboneError as exc:
        fail(str(exc), USAGE)
    seen: list[ReplaySummary] = []
    done: list[ReplaySummary] = []

    async def go() -> None:
        async with Backbone(redis_url, environment=environment) as bus:
            made = await _make(target, handler, bus)
            await check_named(bus, bus.keys(uri))
            stream = bus.keys(uri).stream
            seen.append(ReplaySummary(stream))
            work = _replay(bus, uri, made, first, last, count, seen, done)
            await _until_signal(work)

    with contextlib.suppress(KeyboardInterrupt):  # before the handlers are set
        run(go)
    if done:
        console.print(str(done[0]), markup=False, highlight=False, soft_wrap=True)
        return
    summary = seen[-1] if seen else None
    if summary is None:
        raise typer.Exit(INTERRUPTED)
    resume = next_id(summary.last_id) if summary.last_id else start
    console.print(
        f"interrupted: {summary}; resume with --from {resume}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(INTERRUPTED)


def _bound(text: str, option: str, word: str) -> Bound:
    """TEXT as a bound: WORD, an entry id or an aware ISO-8601 time."""
    if text == word or _ID.fullmatch(text):
        return text  # an entry id is checked by range_ids
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        fail(
            f"{option} {text!r} is not {word}, an entry id (<ms>-<seq>, e.g. "
            "1764000000000-0) or an ISO-8601 time (e.g. 2026-11-23T12:00:00Z)",
            USAGE,
        )
    if moment.tzinfo is None:
        stem = moment.isoformat()
        fail(
            f"{option} {text!r} has no UTC offset; add one, e.g. {stem}Z for UTC or "
            f"{stem}+01:00",
            USAGE,
        )
    return moment


async def _make(target: object, name: str, bus: Backbone) -> object:
    """The handler (or dispatcher) TARGET names: called when it is a function."""
    if not inspect.isfunction(target) and not inspect.ismethod(target):
        return target
    try:
        wants = bool(inspect.signature(target).parameters)
        made = target(bus) if wants else target()
        if inspect.isawaitable(made):
            made = await made
    except BackboneError:
        raise
    except Exception as exc:
        fail(f"{name} failed to make the handler: {type(exc).__name__}: {exc}")
    return made


async def _replay(
    bus: Backbone,
    uri: str,
    handler: object,
    first: Bound,
    last: Bound,
    count: int | None,
    seen: list[ReplaySummary],
    done: list[ReplaySummary],
) -> None:
    def note(summary: ReplaySummary) -> None:
        seen[-1] = summary

    if not console.is_terminal:
        done.append(
            await replay(
                bus, uri, handler, start=first, end=last, count=count, progress=note
            )
        )
        return
    total = await count_range(bus, uri, first, last, cap=_COUNT_CAP)
    if total is not None and count is not None:
        total = min(total, count)
    columns: list[Any] = [
        TextColumn("replaying"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("replay", total=total)

        def show(summary: ReplaySummary) -> None:
            note(summary)
            bar.update(task, completed=summary.read)

        done.append(
            await replay(
                bus, uri, handler, start=first, end=last, count=count, progress=show
            )
        )
