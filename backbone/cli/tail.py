"""``backbone tail``: follow a stream live, without joining a consumer group.

It reads with ``XREAD`` (which consumes nothing: no group sees a difference)
and reads each event's payload hash, decoded untyped, so no contract is needed.
Whatever an entry or its payload holds is shown, never a crash: a missing or
unreadable payload key, a field that is not msgpack, odd metadata.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Annotated, Any, Final, TypeVar

import typer

from ..codec import unpack_value
from ..connection import Backbone
from ..consume.reader import discard_outcome
from ..events import (
    F_CAUSATION,
    F_CONTRACT,
    F_CORRELATION,
    F_OPERATION,
    F_PRODUCER,
    F_REDRIVE_GROUP,
    F_REDRIVE_ORIGIN,
    F_TIME,
    F_VERSION,
    as_text,
)
from ..inspection import NotAStreamError
from ..keyring import Keyring, open_for_display
from ..keys import StreamKeys
from ..partitions import check_named
from .common import (
    DEFAULT_URL,
    USAGE,
    Environment,
    LogLevel,
    RedisUrl,
    configure_logging,
    entry_id,
    errors,
    fail,
    json_default,
    jsonable,
    printable,
    run,
)

app = typer.Typer()

T = TypeVar("T")

_BLOCK_MS: Final = 2000  # below the connection's command timeout
_BATCH: Final = 100
_MAX_SHOWN: Final = 300  # characters of one value in the text form
_KNOWN: Final = (
    F_OPERATION,
    F_VERSION,
    F_CONTRACT,
    F_TIME,
    F_PRODUCER,
    F_CORRELATION,
    F_CAUSATION,
    F_REDRIVE_GROUP,
    F_REDRIVE_ORIGIN,
)

Entry = tuple[str, dict[bytes, bytes]]
Payload = dict[str, Any] | str
"""The decoded fields of an event's payload hash, or why there are none."""


@app.command()
def tail(
    uri: Annotated[str, typer.Argument(help="The stream, e.g. hello.event-sourcing.")],
    start: Annotated[
        str,
        typer.Option(
            "--from",
            help="now (new events only), beginning, or an entry id <ms>-<seq> "
            "(that event, when the stream holds it, and the ones after it).",
        ),
    ] = "now",
    count: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many events.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per event, for scripts.")
    ] = False,
    redis_url: RedisUrl = DEFAULT_URL,
    environment: Environment = "dev",
    log_level: LogLevel = "warning",
) -> None:
    """Print a stream's events as they arrive, without joining a group.
    Ctrl-C or SIGTERM ends it."""
    configure_logging(log_level)
    cursor = _cursor(start)
    where = "from the beginning" if start == "beginning" else f"from {start}"
    show = _json_line if as_json else _text_line

    async def go() -> None:
        async with Backbone(redis_url, environment=environment) as bus:
            keys = bus.keys(uri)
            await check_named(bus, keys)
            await _until_signal(_follow(bus, keys, cursor, count, show, where))

    with contextlib.suppress(KeyboardInterrupt):  # before the handlers are set
        run(go)


def _cursor(start: str) -> str | None:
    """The id to read after (XREAD is exclusive), or None for "now"."""
    if start == "now":
        return None
    if start == "beginning":
        return "0-0"
    if not start[:1].isdigit():
        fail(
            f"--from {start!r} is not now, beginning or an entry id "
            "(<ms>-<seq> in digits, e.g. 1764000000000-0)",
            USAGE,
        )
    millis, sequence = (int(part) for part in entry_id(start, "--from").split("-"))
    # The entry just before START, so that START itself is printed.
    if sequence:
        return f"{millis}-{sequence - 1}"
    if millis:
        return f"{millis - 1}-{2**64 - 1}"
    return "0-0"


async def _until_signal(work: Coroutine[Any, Any, None]) -> None:
    """Run WORK until it ends or SIGINT/SIGTERM arrives (then quietly)."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    handled = []
    for number in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(number, task.cancel)
            handled.append(number)
        except (NotImplementedError, RuntimeError):  # not the main thread, Windows
            pass
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if not task.cancelled() or (current is not None and current.cancelling()):
            raise
    finally:
        for number in handled:
            loop.remove_signal_handler(number)


async def _cancellable(command: Awaitable[T]) -> T:
    """Await a blocking COMMAND in a task of its own: redis-py can swallow a
    cancellation that arrives as a blocking command starts, and a Ctrl-C must
    end the tail at once, not after the block (or never)."""
    running = asyncio.ensure_future(command)
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        running.cancel()
        running.add_done_callback(discard_outcome)
        raise


async def _follow(
    bus: Backbone,
    keys: StreamKeys,
    cursor: str | None,
    count: int | None,
    show: Callable[[StreamKeys, Entry, Payload], str],
    where: str,
) -> None:
    redis = bus.redis
    kind = as_text(await redis.type(keys.stream))
    if kind not in ("stream", "none"):
        raise NotAStreamError(keys.stream, kind)
    if cursor is None:
        last = await redis.xrevrange(keys.stream, count=1)
        cursor = as_text(last[0][0]) if last else "0-0"
        where = f"new events (after {cursor})"
    errors.print(
        f"following {keys.stream}: {where} (Ctrl-C to stop)",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    seen = 0
    while count is None or seen < count:
        wakeup = bus.wakeup_event(keys.stream)
        room = _BATCH if count is None else min(_BATCH, count - seen)
        reply: Any = await _cancellable(
            redis.xread({keys.stream: cursor}, count=room, block=_BLOCK_MS)
        )
        entries: list[Entry] = [
            (as_text(entry), fields or {})
            for entry, fields in (reply[0][1] if reply else [])
        ]
        if not entries:
            if wakeup is not None:  # embedded Redis: XREAD does not block
                await wakeup.wait()
            continue
        payloads = await read_payloads(bus, keys, [entry for entry, _ in entries])
        lines = [
            show(keys, entry, payload)
            for entry, payload in zip(entries, payloads, strict=True)
        ]
        if not _write(lines):
            return
        seen += len(entries)
        cursor = entries[-1][0]


def _write(lines: Sequence[str]) -> bool:
    """Print LINES now; False when nobody reads any more (a closed pipe)."""
    try:
        sys.stdout.write("".join(line + "\n" for line in lines))
        sys.stdout.flush()
    except BrokenPipeError:
        # Keep the interpreter's last flush from failing on the closed pipe.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return False
    return True


async def read_payloads(
    bus: Backbone, keys: StreamKeys, entry_ids: Sequence[str]
) -> list[Payload]:
    """The payloads of the events ENTRY_IDS, decoded untyped (personal values
    sealed), or why each cannot be read; ``backbone ui`` shows them too."""
    async with bus.redis.pipeline(transaction=False) as pipe:
        for entry in entry_ids:
            pipe.hgetall(keys.payload(entry))
        replies = await pipe.execute(raise_on_error=False)
    refused = [i for i, reply in enumerate(replies) if isinstance(reply, Exception)]
    kinds: list[Any] = []
    if refused:
        async with bus.redis.pipeline(transaction=False) as pipe:
            for index in refused:
                pipe.type(keys.payload(entry_ids[index]))
            kinds = await pipe.execute(raise_on_error=False)
    kind_of = dict(zip(refused, kinds, strict=True))
    # Personal values show as <personal>, or <erased> once their subject was.
    await open_for_display(
        Keyring.of(bus), [reply for reply in replies if isinstance(reply, dict)]
    )
    found: list[Payload] = []
    for index, (entry, reply) in enumerate(zip(entry_ids, replies, strict=True)):
        key = keys.payload(entry)
        if index in kind_of:
            kind = kind_of[index]
            what = as_text(kind) if not isinstance(kind, Exception) else "key"
            found.append(f"unreadable: {key} is a {what}, not a hash ({reply})")
        elif not reply:
            found.append(f"missing: {key} does not exist")
        else:
            found.append(
                {printable(name): _decode(value) for name, value in reply.items()}
            )
    return found


class Undecodable:
    """A payload field that is not msgpack: its raw bytes."""

    def __init__(self, raw: bytes, error: Exception) -> None:
        self.raw = raw
        self.error = f"{type(error).__name__}: {error}"

    def __repr__(self) -> str:
        return f"<undecodable {len(self.raw)} bytes {_cut(repr(self.raw))}>"


def _decode(raw: bytes) -> Any:
    try:
        return unpack_value(raw)
    except Exception as exc:
        return Undecodable(raw, exc)


# --- the text form ---------------------------------------------------------------


def _text_line(keys: StreamKeys, entry: Entry, payload: Payload) -> str:
    ident, fields = entry
    operation = fields.get(F_OPERATION)
    name = printable(operation) if operation else "<no operation>"
    if isinstance(payload, str):
        arguments = f"<payload {payload}>"
    else:
        arguments = ", ".join(
            f"{field}={_cut(_show(value))}" for field, value in payload.items()
        )
    meta = " ".join(_metadata_words(fields))
    return f"{ident} {name}({arguments}) [{meta}]"


def _metadata_words(fields: Mapping[bytes, bytes]) -> list[str]:
    words: list[str] = []
    produced = _millis(fields.get(F_TIME))
    if produced is not None:
        words.append(f"produced={produced.isoformat(timespec='milliseconds')}")
    elif F_TIME in fields:
        words.append(f"t={_raw(fields[F_TIME])}")
    labels = (
        (F_PRODUCER, "producer"),
        (F_CONTRACT, "contract"),
        (F_VERSION, "version"),
        (F_CORRELATION, "correlation"),
        (F_CAUSATION, "causation"),
        (F_REDRIVE_GROUP, "redriven-for"),
        (F_REDRIVE_ORIGIN, "original"),
    )
    for field, label in labels:
        if field in fields:
            words.append(f"{label}={printable(fields[field])}")
    for field, value in fields.items():
        if field not in _KNOWN:
            words.append(f"{printable(field)}={_raw(value)}")
    return words


def _raw(value: bytes) -> str:
    """A metadata value as it is stored (for values backbone does not expect)."""
    return _cut(repr(as_text(value)) if _is_text(value) else repr(value))


def _is_text(value: bytes) -> bool:
    try:
        value.decode()
    except UnicodeDecodeError:
        return False
    return True


def _millis(value: bytes | None) -> dt.datetime | None:
    text = as_text(value)
    if not text.isascii() or not text.isdigit():
        return None
    try:
        return dt.datetime.fromtimestamp(int(text) / 1000, tz=dt.UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _show(value: Any) -> str:
    """One payload value, readable and safe on a terminal."""
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dict):
        items = (f"{_show(k)}: {_show(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, (str, bytes, int, float, bool, type(None), Undecodable)):
        return repr(value)
    return printable(str(value))  # UUID, Decimal, timedelta, unknown extension


def _cut(text: str) -> str:
    if len(text) <= _MAX_SHOWN:
        return text
    return f"{text[:_MAX_SHOWN]}...({len(text) - _MAX_SHOWN} more characters)"


# --- the JSON form ---------------------------------------------------------------


def _json_line(keys: StreamKeys, entry: Entry, payload: Payload) -> str:
    return json.dumps(event_document(keys, entry, payload), default=json_default)


def event_document(keys: StreamKeys, entry: Entry, payload: Payload) -> dict[str, Any]:
    """One event as the ``--json`` line shows it (and ``backbone ui``)."""
    ident, fields = entry

    def text(field: bytes) -> str | None:
        value = fields.get(field)
        return None if value is None else as_text(value)

    version = text(F_VERSION)
    produced = _millis(fields.get(F_TIME))
    document = {
        "id": ident,
        "stream": keys.stream,
        "uri": keys.uri,
        "operation": text(F_OPERATION),
        "version": int(version) if version and version.isdigit() else None,
        "contract": text(F_CONTRACT),
        "producer": text(F_PRODUCER),
        "produced_at": produced.isoformat(timespec="milliseconds")
        if produced
        else None,
        "correlation_id": text(F_CORRELATION),
        "causation_id": text(F_CAUSATION),
        "redriven_for": text(F_REDRIVE_GROUP),
        "original_id": text(F_REDRIVE_ORIGIN),
        "metadata": {
            as_text(name): json_default(value) for name, value in fields.items()
        },
        "payload": None
        if isinstance(payload, str)
        else jsonable({name: _json_value(value) for name, value in payload.items()}),
        "payload_error": payload if isinstance(payload, str) else None,
    }
    return document


def _json_value(value: Any) -> Any:
    if isinstance(value, Undecodable):
        return f"<undecodable: {value.error}; raw: {json_default(value.raw)}>"
    return value
