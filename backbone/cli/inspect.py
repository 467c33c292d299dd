"""``backbone inspect``: the streams of an environment, their groups and consumers."""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from ..connection import Backbone
from ..inspection import GroupInfo, StreamInfo, entry_time, inspect_streams
from ..partitions import check_named
from .common import (
    DEFAULT_URL,
    Environment,
    RedisUrl,
    console,
    fail,
    print_table,
    printable,
    run,
)

app = typer.Typer()

JSON_FORMAT = 1
"""Version of the ``--json`` document; it changes only when a field changes
meaning or goes away (new fields may be added)."""


@app.command()
def inspect(
    uri: Annotated[
        str | None,
        typer.Argument(help="Only this stream (e.g. hello.event-sourcing)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON document, for scripts.")
    ] = False,
    redis_url: RedisUrl = DEFAULT_URL,
    environment: Environment = "dev",
) -> None:
    """Show every stream of the environment (or one): length, first and last
    event, memory, dead letters, and each consumer group's consumers, lag and
    pending events."""

    async def go() -> list[StreamInfo]:
        async with Backbone(redis_url, environment=environment) as bus:
            if uri is not None:
                # A URI backbone cannot have, or the whole of a partitioned
                # stream: say so before reading.
                await check_named(bus, bus.keys(uri))
            return await inspect_streams(bus, uri)

    streams = run(go)
    if uri is not None and not streams:
        fail(
            f"no stream {uri!r} in environment {environment!r} (its key does not "
            f"exist); list the environment's streams with: backbone inspect "
            f"--environment {environment}"
        )
    if as_json:
        document = {
            "format": JSON_FORMAT,
            "environment": environment,
            "streams": [_stream_json(stream) for stream in streams],
        }
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return
    _print_tables(streams, environment)


# --- JSON ------------------------------------------------------------------------


def _time(entry_id: str | None) -> str | None:
    moment = entry_time(entry_id)
    return moment.isoformat(timespec="milliseconds") if moment else None


def _stream_json(stream: StreamInfo) -> dict[str, Any]:
    return {
        "uri": stream.uri,
        "key": stream.key,
        "length": stream.length,
        "first_id": stream.first_id,
        "first_time": _time(stream.first_id),
        "last_id": stream.last_id,
        "last_time": _time(stream.last_id),
        "last_generated_id": stream.last_generated_id,
        "entries_added": stream.entries_added,
        "memory_bytes": stream.memory_bytes,
        "dead_letters": stream.dead_letters,
        "groups": [_group_json(group) for group in stream.groups],
    }


def _group_json(group: GroupInfo) -> dict[str, Any]:
    return {
        "name": group.name,
        "pending": group.pending,
        "lag": group.lag,
        "entries_read": group.entries_read,
        "last_delivered_id": group.last_delivered_id,
        "oldest_pending_id": group.oldest_pending_id,
        "oldest_pending_time": _time(group.oldest_pending_id),
        "oldest_pending_idle_ms": group.oldest_pending_idle_ms,
        "oldest_pending_consumer": group.oldest_pending_consumer,
        "oldest_pending_deliveries": group.oldest_pending_deliveries,
        "consumers": [
            {
                "name": consumer.name,
                "pending": consumer.pending,
                "idle_ms": consumer.idle_ms,
                "inactive_ms": consumer.inactive_ms,
            }
            for consumer in group.consumers
        ],
    }


# --- tables ----------------------------------------------------------------------


def _print_tables(streams: list[StreamInfo], environment: str) -> None:
    if not streams:
        console.print(
            f"no backbone streams in environment {environment!r}",
            highlight=False,
            markup=False,
        )
        return
    console.print(
        f"{len(streams)} stream(s) in environment {environment!r}",
        highlight=False,
        markup=False,
    )
    print_table(_streams_table(streams), whole=True)
    groups = [(stream, group) for stream in streams for group in stream.groups]
    if groups:
        print_table(_groups_table(groups), whole=True)
    if any(group.consumers for _, group in groups):
        print_table(_consumers_table(groups), whole=True)


def _streams_table(streams: list[StreamInfo]) -> Table:
    table = Table(title="streams", title_justify="left")
    table.add_column("stream", no_wrap=True)
    table.add_column("events", justify="right")
    table.add_column("first event", no_wrap=True)
    table.add_column("last event", no_wrap=True)
    table.add_column("memory (stream key only)", justify="right")
    table.add_column("dead letters", justify="right")
    table.add_column("groups", justify="right")
    for stream in streams:
        table.add_row(
            Text(printable(stream.uri)),
            str(stream.length),
            _id_and_time(stream.first_id),
            _id_and_time(stream.last_id),
            _size(stream.memory_bytes),
            _number(stream.dead_letters),
            str(len(stream.groups)),
        )
    return table


def _groups_table(groups: list[tuple[StreamInfo, GroupInfo]]) -> Table:
    table = Table(title="consumer groups", title_justify="left")
    table.add_column("stream", no_wrap=True)
    table.add_column("group", no_wrap=True)
    table.add_column("consumers", justify="right")
    table.add_column("lag", justify="right")
    table.add_column("pending", justify="right")
    table.add_column("oldest pending", no_wrap=True)
    table.add_column("oldest delivered", justify="right")
    table.add_column("last delivered id", no_wrap=True)
    for stream, group in groups:
        oldest = "-"
        if group.oldest_pending_id is not None:
            oldest = f"{group.oldest_pending_id} to {group.oldest_pending_consumer}"
        delivered = "-"
        if group.oldest_pending_idle_ms is not None:
            delivered = f"{_duration(group.oldest_pending_idle_ms)} ago"
        table.add_row(
            Text(printable(stream.uri)),
            Text(printable(group.name)),
            str(len(group.consumers)),
            _number(group.lag),
            str(group.pending),
            Text(printable(oldest)),
            delivered,
            group.last_delivered_id,
        )
    return table


def _consumers_table(groups: list[tuple[StreamInfo, GroupInfo]]) -> Table:
    table = Table(title="consumers", title_justify="left")
    table.add_column("stream", no_wrap=True)
    table.add_column("group", no_wrap=True)
    table.add_column("consumer", no_wrap=True)
    table.add_column("pending", justify="right")
    table.add_column("idle", justify="right")
    for stream, group in groups:
        for consumer in group.consumers:
            table.add_row(
                Text(printable(stream.uri)),
                Text(printable(group.name)),
                Text(printable(consumer.name)),
                str(consumer.pending),
                _duration(consumer.idle_ms),
            )
    return table


def _id_and_time(entry_id: str | None) -> str:
    if entry_id is None:
        return "-"
    moment = entry_time(entry_id)
    if moment is None:
        return entry_id
    return f"{entry_id} ({moment.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC)"


def _number(value: int | None) -> str:
    return "?" if value is None else str(value)


def _size(value: int | None) -> str:
    if value is None:
        return "?"
    if value < 1024:
        return f"{value} B"
    size = value / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _duration(millis: int | None) -> str:
    if millis is None:
        return "?"
    if millis < 1000:
        return f"{millis} ms"
    seconds = millis / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, second = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {second} s"
    hours, minute = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minute} min"
    return f"{hours // 24} d {hours % 24} h"
