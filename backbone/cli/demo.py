"""``backbone demo``: the shipment-tracking flow in one process."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated

import typer

from ..connection import EMBEDDED_EXTRA, EMBEDDED_SCHEME, ENV_URL, require_embedded
from ..errors import ConfigurationError
from .common import Environment, console, fail, run

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
        int,
        typer.Option(
            min=1, max=100_000, help="Orders to place (accounts: accounts to open)."
        ),
    ] = 3,
    environment: Environment = "demo",
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for every order.")
    ] = 30.0,
    sample: Annotated[
        str,
        typer.Option(
            help="shipments (a flow of events through consumer groups) or accounts "
            "(the event store: aggregates racing under optimistic concurrency)."
        ),
    ] = "shipments",
) -> None:
    """Run a sample: the shipment-tracking flow (producer, transit, consumer and
    reporter), or bank accounts as event-sourced aggregates."""
    if TYPE_CHECKING:  # the repository's samples/ folder, checked as itself
        from samples.accounts import run_accounts_demo
        from samples.demo import run_demo
    else:  # installed as backbone.samples (an editable install maps it too)
        from ..samples.accounts import run_accounts_demo
        from ..samples.demo import run_demo

    if sample not in ("shipments", "accounts"):
        fail(f"--sample {sample!r} is not one of: shipments, accounts", code=2)

    if not redis_url:
        try:
            require_embedded()
        except ConfigurationError:
            fail(
                "without --redis-url the demo runs on the embedded in-process "
                f"Redis, which needs the embedded extra: {EMBEDDED_EXTRA} (or pass "
                "--redis-url redis://host:port/db)"
            )
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    url = redis_url or EMBEDDED_SCHEME
    if sample == "accounts":
        ok = run(
            lambda: run_accounts_demo(
                url,
                accounts=orders,
                environment=environment,
                timeout=timeout,
                out=console,
            )
        )
    else:
        ok = run(
            lambda: run_demo(
                url,
                orders=orders,
                environment=environment,
                timeout=timeout,
                out=console,
            )
        )
    if not ok:
        raise typer.Exit(1)
