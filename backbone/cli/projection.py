"""``backbone projection run|rebuild|status``: a projection made by a factory
(``module:function`` taking a Backbone and returning a backbone.Projection)."""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
from typing import Annotated, Any

import typer
from rich.table import Table

from ..connection import Backbone
from ..errors import BackboneError, ConfigurationError
from ..store.projection import Projection, ProjectionStatus, projection_status
from ..worker import load_factory
from .common import (
    DEFAULT_URL,
    USAGE,
    LogLevel,
    RedisUrl,
    configure_logging,
    console,
    errors,
    fail,
    print_table,
    run,
)

log = logging.getLogger("backbone.projection")

projection_app = typer.Typer(
    help="Run, rebuild or inspect a projection (a read model with a checkpoint).",
    no_args_is_help=True,
)

Target = Annotated[
    str,
    typer.Argument(
        help="The projection's factory, module:function (takes a backbone.Backbone, "
        "returns a backbone.Projection).",
        show_default=False,
    ),
]
Environment = Annotated[
    str,
    typer.Option(
        "--environment",
        "-e",
        envvar="BACKBONE_ENVIRONMENT",
        help="Environment part of stream keys.",
    ),
]


def _factory(target: str) -> Any:
    try:
        return load_factory(target)
    except BackboneError as exc:
        fail(str(exc), USAGE)


async def _make(factory: Any, target: str, bus: Backbone) -> Projection:
    try:
        made = factory(bus)
        if inspect.isawaitable(made):
            made = await made
    except BackboneError as exc:
        raise ConfigurationError(f"{target}: {exc}") from None
    except Exception as exc:
        raise ConfigurationError(
            f"{target} raised {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(made, Projection):
        raise ConfigurationError(
            f"{target} returned {type(made).__name__}, not a backbone.Projection"
        )
    return made


@projection_app.command("run")
def run_projection(
    target: Target,
    redis_url: RedisUrl = DEFAULT_URL,
    environment: Environment = "dev",
    log_level: LogLevel = "warning",
) -> None:
    """Catch up, then follow the stream live until SIGTERM or SIGINT (the page
    being applied is finished and its checkpoint written)."""
    configure_logging(log_level)
    factory = _factory(target)

    async def main() -> None:
        async with Backbone(redis_url, environment=environment) as bus:
            projection = await _make(factory, target, bus)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, _stopper(projection, sig))
            try:
                await projection.run()
            finally:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            stats = projection.stats
            log.warning(
                "projection %s stopped: %d applied, %d skipped, checkpoint %s",
                projection.name,
                stats.applied,
                stats.skipped,
                await projection.checkpoint(),
            )

    run(main)


def _stopper(projection: Projection, sig: signal.Signals) -> Any:
    def stop() -> None:
        log.warning(
            "projection %s: %s received, stopping after the current page",
            projection.name,
            sig.name,
        )
        projection.stop()

    return stop


@projection_app.command("rebuild")
def rebuild_projection(
    target: Target,
    redis_url: RedisUrl = DEFAULT_URL,
    environment: Environment = "dev",
    log_level: LogLevel = "warning",
) -> None:
    """Clear the checkpoint and the read model (the projection's reset hook),
    then apply the stream from the beginning up to its end."""
    configure_logging(log_level)
    factory = _factory(target)

    async def main() -> ProjectionStatus:
        async with Backbone(redis_url, environment=environment) as bus:
            projection = await _make(factory, target, bus)
            await projection.rebuild()
            return await projection.status()

    status = run(main)
    console.print(
        f"rebuilt {status.name}: {status.applied} applied, {status.skipped} "
        f"skipped, checkpoint {status.checkpoint or '-'}",
        markup=False,
        highlight=False,
    )


@projection_app.command("status")
def status_projection(
    target: Annotated[
        str | None,
        typer.Argument(
            help="The projection's factory, module:function; or give --uri and "
            "--name instead.",
            show_default=False,
        ),
    ] = None,
    uri: Annotated[
        str | None, typer.Option("--uri", "-u", help="Stream URI (without TARGET).")
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", "-n", help="Projection name (with --uri).")
    ] = None,
    redis_url: RedisUrl = DEFAULT_URL,
    environment: Environment = "dev",
) -> None:
    """Checkpoint, the stream's last id and the lag (entries behind)."""
    if target is None and (uri is None or name is None):
        fail("give a projection factory (module:function), or --uri and --name", USAGE)
    if target is not None and (uri is not None or name is not None):
        fail("give a projection factory or --uri and --name, not both", USAGE)
    factory = _factory(target) if target is not None else None

    async def main() -> ProjectionStatus:
        async with Backbone(redis_url, environment=environment) as bus:
            if factory is not None and target is not None:
                return await (await _make(factory, target, bus)).status()
            return await projection_status(bus, str(uri), str(name))

    status = run(main)
    table = Table("projection", "stream", "checkpoint", "last id", "lag", "skipped")
    lag = str(status.lag) if status.lag_exact else f">={status.lag}"
    table.add_row(
        status.name,
        status.stream,
        status.checkpoint or "-",
        status.last_id or "-",
        lag,
        str(status.skipped),
    )
    print_table(table, whole=True)
    if status.broken:
        errors.print(
            f"projection {status.name} must be rebuilt: {status.broken}",
            markup=False,
            highlight=False,
        )
    if status.ahead:
        errors.print(
            f"the checkpoint {status.checkpoint} is after the stream's last entry "
            f"{status.last_id}: the stream was replaced or the checkpoint written "
            "by hand; events before it are never applied (rebuild the projection)",
            markup=False,
            highlight=False,
        )
