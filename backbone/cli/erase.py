"""``backbone erase``: erase a subject's personal data (delete its key)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ..connection import Backbone
from ..erasure import ErasureReport, erase
from .common import DEFAULT_URL, USAGE, Environment, RedisUrl, console, fail, run

app = typer.Typer()


@app.command("erase")
def erase_command(
    subject: Annotated[
        str,
        typer.Argument(
            help="The subject: the value of the subject parameter (a customer id, "
            "say), or the aggregate id."
        ),
    ],
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")
    ] = False,
    redis_url: RedisUrl = DEFAULT_URL,
    environment: Environment = "dev",
) -> None:
    """Erase SUBJECT's personal data in every event, dead letter and snapshot of
    the environment: its key is deleted, so those values read as <erased> from
    now on (the rest of every event stays). It cannot be undone."""
    if not subject:
        fail("the subject is empty; name the subject to erase", USAGE)
    if not yes:
        if not sys.stdin.isatty():
            fail(
                "erasing cannot be undone: confirm with --yes (no terminal to ask on)",
                USAGE,
            )
        typer.confirm(
            f"erase the personal data of this subject in environment "
            f"{environment!r}? It cannot be undone",
            abort=True,
        )

    async def go() -> ErasureReport:
        async with Backbone(redis_url, environment=environment) as bus:
            return await erase(bus, subject)

    report = run(go)
    console.print(str(report), highlight=False, markup=False, soft_wrap=True)
