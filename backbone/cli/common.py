"""What the commands share: consoles, common options, checking entry ids, JSON of
payload values, and running a coroutine so that a user's mistake or an
unreachable server is one line and an exit code, never a traceback."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import logging
import re
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Final, NoReturn, TextIO, TypeVar

import redis.exceptions as rex
import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from ..connection import ENV_URL
from ..errors import BackboneError

T = TypeVar("T")

# Where output goes to a file or a pipe, lines are as long as their content:
# a script must never see an id folded at the 80 columns rich assumes there.
PIPE_WIDTH: Final = 4096


def _console(stream: TextIO, *, stderr: bool) -> Console:
    try:
        terminal = stream.isatty()
    except (AttributeError, ValueError):
        terminal = False
    return (
        Console(stderr=stderr) if terminal else Console(stderr=stderr, width=PIPE_WIDTH)
    )


console = _console(sys.stdout, stderr=False)
errors = _console(sys.stderr, stderr=True)

RedisUrl = Annotated[
    str,
    typer.Option(
        "--redis-url",
        envvar=ENV_URL,
        help="Redis URL (redis://host:port/db, or redis+cluster://host:port for a "
        "Redis Cluster).",
        show_default=True,
    ),
]
Environment = Annotated[
    str, typer.Option("--environment", "-e", help="Environment part of stream keys.")
]
Uri = Annotated[
    str, typer.Option("--uri", "-u", help="Stream URI, e.g. hello.event-sourcing.")
]

DEFAULT_URL: Final = "redis://127.0.0.1:6379/0"
USAGE: Final = 2
"""Exit code of a command line that cannot be right (as for an unknown option)."""

_ENTRY_ID: Final = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
_MAX_PART: Final = 2**64 - 1


def fail(message: str, code: int = 1) -> NoReturn:
    """Print MESSAGE as one error line and exit with CODE."""
    errors.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def is_entry_id(text: object) -> bool:
    """True when TEXT is a stream entry id: ``<ms>-<seq>``, two numbers below
    2^64 (the check every command and ``backbone ui`` make)."""
    if not isinstance(text, str):
        return False
    match = _ENTRY_ID.fullmatch(text)
    return match is not None and max(int(match[1]), int(match[2])) <= _MAX_PART


def entry_id(text: str, what: str = "entry id") -> str:
    """TEXT when it is a stream entry id (``<ms>-<seq>``, digits); otherwise end
    the command with a line naming WHAT and the bad text (before anything is
    sent to Redis)."""
    if not is_entry_id(text):
        fail(
            f"{what} {text!r} is not an entry id: expected <ms>-<seq>, two numbers "
            "below 2^64, e.g. 1764000000000-0",
            USAGE,
        )
    return text


def printable(value: bytes | str) -> str:
    """VALUE as text safe to show on a terminal: as it is when it is UTF-8 and
    every character prints, otherwise its Python repr (escapes visible)."""
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError:
            return repr(value)
    return value if value.isprintable() else repr(value)


def print_table(table: Table, *, whole: bool = False) -> None:
    """Print TABLE no narrower than its columns that must not wrap need (ids):
    on a narrow terminal the lines grow longer instead of folding an id. WHOLE:
    no column wraps or shrinks (tables of numbers, where a squeezed column
    would hide its figures)."""
    if whole:
        for column in table.columns:
            column.no_wrap = True
    wide = console.options.update_width(PIPE_WIDTH)
    measured = Measurement.get(console, wide, table)
    needed = measured.maximum if whole else measured.minimum
    if needed <= console.width:
        console.print(table)
        return
    saved = console.width
    console.width = needed
    try:
        console.print(table)
    finally:
        console.width = saved


def json_default(value: object) -> object:
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


def jsonable(value: Any) -> Any:
    """VALUE with every mapping key JSON can take (msgpack maps may have bytes,
    tuple or other keys that json.dumps refuses)."""
    if isinstance(value, dict):
        return {_json_key(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def _json_key(key: object) -> object:
    if key is None or isinstance(key, (str, int, float, bool)):
        return key
    return str(json_default(key))


def run(factory: Callable[[], Awaitable[T]]) -> T:
    """Run the coroutine FACTORY makes; backbone's errors and an unreachable or
    refusing Redis end the command with one line."""
    try:
        return asyncio.run(factory())  # type: ignore[arg-type]
    except BackboneError as exc:
        fail(str(exc))
    except rex.AuthenticationError as exc:
        fail(
            f"Redis refused the credentials ({exc}); check the user and password "
            "in --redis-url or BACKBONE_REDIS_URL (redis://user:password@host:port/db)"
        )
    except (rex.TimeoutError, TimeoutError) as exc:
        fail(
            f"Redis did not answer in time ({type(exc).__name__}: {exc}); check "
            "--redis-url or BACKBONE_REDIS_URL and that the server is up and not "
            "overloaded"
        )
    except (rex.ConnectionError, ConnectionError, OSError) as exc:
        fail(
            f"cannot reach Redis ({type(exc).__name__}: {exc}); check --redis-url "
            "or BACKBONE_REDIS_URL and that the server is up"
        )
    except rex.NoPermissionError as exc:
        fail(
            f"the Redis user may not run this command ({exc}); grant it to the user "
            "in the server's ACL, or connect as another user"
        )
    except rex.ClusterDownError as exc:
        kind = "MASTERDOWN" if isinstance(exc, rex.MasterDownError) else "CLUSTERDOWN"
        fail(
            f"the Redis Cluster cannot serve the command now ({kind}: {exc}); a "
            "failover may be under way: try again, and check that every slot has a "
            "running master (redis-cli --cluster check host:port)"
        )
    except rex.RedisClusterException as exc:
        fail(cluster_failure(exc))
    except rex.ResponseError as exc:
        fail(f"Redis refused the command: {exc}")
    except rex.RedisError as exc:
        fail(f"Redis failed ({type(exc).__name__}: {exc}); try again")


def cluster_failure(exc: rex.RedisClusterException) -> str:
    """One line for what the Redis Cluster client raises of its own (it is not
    a RedisError): no node reachable, a slot no master serves, or a refusal."""
    text = " ".join(str(exc).split())
    if any(word in text for word in ("WRONGPASS", "NOAUTH", "username-password")):
        return (
            f"the Redis Cluster refused the credentials ({text}); check the user "
            "and password in --redis-url or BACKBONE_REDIS_URL "
            "(redis+cluster://user:password@host:port)"
        )
    if "cannot be connected" in text or "reachable" in text:
        return (
            f"cannot reach any node of the Redis Cluster ({text}); check "
            "--redis-url or BACKBONE_REDIS_URL (redis+cluster://host:port naming "
            "one of its nodes) and that the nodes are up"
        )
    if isinstance(exc, rex.SlotNotCoveredError):
        return (
            f"the Redis Cluster serves no node for a slot ({text}); a master is "
            "down with no replica to take over: check the nodes (redis-cli "
            "--cluster check host:port)"
        )
    return (
        f"the Redis Cluster client refused the command ({type(exc).__name__}: {text})"
    )


LEVELS: Final = ("debug", "info", "warning", "error")
LogLevel = Annotated[
    str,
    typer.Option(
        "--log-level", envvar="BACKBONE_LOG_LEVEL", help="debug, info, warning, error."
    ),
]


def configure_logging(level: str) -> None:
    """One log format (to stderr) for the commands that run for long."""
    if level.lower() not in LEVELS:
        fail(f"--log-level {level!r} is not one of {', '.join(LEVELS)}", code=2)
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [%(process)d]: %(message)s",
    )
