"""``backbone demo``: the shipment-tracking flow in one process."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from ..connection import ENV_URL
from .common import Environment, console, run

app = typer.Typer()


@app.command()
def demo(
    redis_url: Annotated[
        str | None,
        typer.Option(
            "--redis-url",
            envvar=ENV_URL,
            help="Run on this Redis instead of the embedded in-process one.",
        ),
    ] = None,
    orders: Annotated[
        int, typer.Option(min=1, max=100_000, help="Orders to place.")
    ] = 3,
    environment: Environment = "demo",
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for every order.")
    ] = 30.0,
) -> None:
    """Run the shipment-tracking flow: producer, transit, consumer and reporter."""
    from samples.demo import run_demo

    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    ok = run(
        lambda: run_demo(
            redis_url or "memory://",
            orders=orders,
            environment=environment,
            timeout=timeout,
            out=console,
        )
    )
    if not ok:
        raise typer.Exit(1)
