"""``backbone run``: run subscription factories as a long-lived service."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Annotated

import typer

from ..errors import BackboneError
from ..worker import (
    START_FAILED,
    StartError,
    WorkerSettings,
    load_factory,
    run_worker,
    supervise,
)
from .common import LogLevel, RedisUrl, configure_logging, fail

app = typer.Typer()


@app.command("run")
def run_command(
    targets: Annotated[
        list[str],
        typer.Argument(
            help="Subscription factories, module:function (each takes a "
            "backbone.Backbone and returns subscriptions).",
            show_default=False,
        ),
    ],
    workers: Annotated[
        int,
        typer.Option(
            min=1, max=256, envvar="BACKBONE_WORKERS", help="Worker processes."
        ),
    ] = 1,
    redis_url: RedisUrl = "redis://127.0.0.1:6379/0",
    environment: Annotated[
        str,
        typer.Option(
            "--environment",
            "-e",
            envvar="BACKBONE_ENVIRONMENT",
            help="Environment part of stream keys.",
        ),
    ] = "dev",
    log_level: LogLevel = "warning",
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            envvar="BACKBONE_METRICS_PORT",
            help="Serve Prometheus metrics on this port, 0 for a free one (logged; "
            "needs backbone[telemetry]).",
        ),
    ] = None,
    metrics_addr: Annotated[
        str,
        typer.Option(
            envvar="BACKBONE_METRICS_ADDR", help="Address of the metrics port."
        ),
    ] = "127.0.0.1",
    loop: Annotated[
        str,
        typer.Option(
            envvar="BACKBONE_LOOP",
            help="Event loop: auto (uvloop when installed, else asyncio), asyncio, "
            "or uvloop (pip install 'backbone[fast]').",
        ),
    ] = "auto",
) -> None:
    """Run subscriptions as a service until SIGTERM or SIGINT (graceful stop)."""
    configure_logging(log_level)
    loop_factory = event_loop(loop)
    settings = WorkerSettings(
        tuple(targets),
        redis_url,
        environment,
        metrics_port,
        metrics_addr,
    )
    try:
        for target in targets:
            load_factory(target)  # fail fast, before any process starts
    except BackboneError as exc:
        fail(str(exc), code=2)
    if workers > 1:
        if metrics_port is not None:
            fail(
                "--metrics-port serves one process; with --workers N give each "
                "worker its own port (run N commands) or omit it",
                code=2,
            )
        command = [
            sys.executable,
            "-m",
            "backbone",
            "run",
            *targets,
            "--workers",
            "1",
            "--redis-url",
            redis_url,
            "--environment",
            environment,
            "--log-level",
            log_level,
            "--loop",
            loop,
        ]
        raise typer.Exit(supervise(command, workers))
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            code = runner.run(run_worker(settings))
    except StartError as exc:
        fail(str(exc), code=START_FAILED)
    except BackboneError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(
            f"cannot reach Redis ({type(exc).__name__}: {exc}); check --redis-url "
            "or BACKBONE_REDIS_URL and that the server is up"
        )
    raise typer.Exit(code)


def event_loop(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop factory ``--loop NAME`` asks for (None: asyncio's)."""
    if name not in ("auto", "asyncio", "uvloop"):
        fail(f"--loop {name!r} is not one of auto, asyncio, uvloop", code=2)
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            fail(
                "--loop uvloop needs uvloop: pip install 'backbone[fast]' (or "
                "--loop asyncio)",
                code=2,
            )
        return None
    return uvloop.new_event_loop
