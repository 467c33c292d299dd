"""What the commands share: consoles, common options, and running a coroutine
so that a user's mistake or an unreachable server is one line and an exit code,
never a traceback."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, NoReturn, TypeVar

import redis.exceptions as rex
import typer
from rich.console import Console

from ..connection import ENV_URL
from ..errors import BackboneError

T = TypeVar("T")

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


def fail(message: str, code: int = 1) -> NoReturn:
    """Print MESSAGE as one error line and exit with CODE."""
    errors.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def run(factory: Callable[[], Awaitable[T]]) -> T:
    """Run the coroutine FACTORY makes; backbone's errors and an unreachable or
    refusing Redis end the command with one line."""
    try:
        return asyncio.run(factory())  # type: ignore[arg-type]
    except BackboneError as exc:
        fail(str(exc))
    except (rex.ConnectionError, rex.TimeoutError, ConnectionError, OSError) as exc:
        fail(
            f"cannot reach Redis ({type(exc).__name__}: {exc}); check --redis-url "
            "or BACKBONE_REDIS_URL and that the server is up"
        )
    except rex.ResponseError as exc:
        fail(f"Redis refused the command: {exc}")
