"""``backbone ui``: the live dashboard, served on a local port.

Starlette and uvicorn are the ``backbone[ui]`` extra, imported only here, when
the command runs; without them the command says what to install.
"""

from __future__ import annotations

import urllib.parse
from typing import Annotated, Final

import typer

from ..connection import Backbone
from ..errors import ConfigurationError
from ..keys import validate_name
from .common import (
    DEFAULT_URL,
    USAGE,
    Environment,
    LogLevel,
    RedisUrl,
    configure_logging,
    console,
    errors,
    fail,
    run,
)

app = typer.Typer()

TOKEN_ENV: Final = "BACKBONE_UI_TOKEN"
EXTRA: Final = "pip install 'backbone[ui]'"


@app.command()
def ui(
    redis_url: RedisUrl = DEFAULT_URL,
    environment: Environment = "dev",
    host: Annotated[
        str,
        typer.Option(
            help="Address to listen on; anything but a loopback address lets "
            "other machines see the page."
        ),
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free).")
    ] = 8765,
    allow_actions: Annotated[
        bool,
        typer.Option(
            "--allow-actions",
            help="Let the page re-drive and purge dead letters (with the token).",
        ),
    ] = False,
    token: Annotated[
        str | None,
        typer.Option(
            envvar=TOKEN_ENV,
            help="The token actions need (default: a new random one, printed).",
            show_default=False,
        ),
    ] = None,
    interval: Annotated[
        float,
        typer.Option(min=0.2, max=60.0, help="Seconds between two samples."),
    ] = 1.0,
    archive_group: Annotated[
        str,
        typer.Option(help="The archive sink's consumer group (ArchiveOptions.group)."),
    ] = "archive",
    log_level: LogLevel = "warning",
) -> None:
    """Serve a live dashboard of the environment: streams, groups, dead letters,
    a live tail, projections and the archive. Read-only unless
    --allow-actions. Ctrl-C or SIGTERM stops it."""
    configure_logging(log_level)
    try:
        from ..ui.app import Dashboard
        from ..ui.auth import Guard, check_token, is_loopback, new_token
        from ..ui.monitor import Monitor
        from ..ui.server import listen, server_for
    except ImportError as exc:
        fail(f"backbone ui needs Starlette and uvicorn ({exc}); install: {EXTRA}")
    if not is_loopback(host):
        errors.print(
            f"warning: listening on {host}, not a loopback address: other machines "
            "can reach the page; prefer an SSH tunnel to a loopback address",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    try:
        validate_name("--archive-group", archive_group)
        if allow_actions:
            token = new_token() if token is None else check_token(token)
    except ConfigurationError as exc:
        fail(str(exc), USAGE)

    async def go() -> None:
        async with Backbone(redis_url, environment=environment) as bus:
            await bus.ping()  # an unreachable Redis is one line, before serving
            with listen(host, port) as listener:
                bound = int(listener.getsockname()[1])
                guard = Guard(host=host, port=bound, actions=allow_actions, token=token)
                monitor = Monitor(bus, interval=interval, archive_group=archive_group)
                dashboard = Dashboard(bus, monitor, guard)
                _announce(host, bound, environment, token if allow_actions else None)
                await server_for(dashboard.app).serve(sockets=[listener])

    run(go)


def _announce(host: str, port: int, environment: str, token: str | None) -> None:
    where = f"[{host}]" if ":" in host else host
    address = f"http://{where}:{port}/"
    mode = "actions on (re-drive, purge)" if token else "read-only"
    console.print(
        f"backbone ui: {address} (environment {environment!r}, {mode}; Ctrl-C to stop)",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    if token is not None:
        fragment = urllib.parse.quote(token, safe="")
        console.print(
            f"action token: {token}\nopen with the token: {address}#token={fragment}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
