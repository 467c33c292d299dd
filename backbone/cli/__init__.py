"""The ``backbone`` command: one module per command.

This package is the composition root: it is the one place that reaches the code
generator (lazily, inside the ``codegen`` command); the runtime modules never
import it.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from .. import __version__
from . import archive, codegen, demo, dlq, docs, erase, inspect, tail, trim, ui
from . import replay as replay_cmd
from . import run as run_cmd
from .projection import projection_app

__all__ = ["app", "main"]

app = typer.Typer(
    name="backbone",
    help="Typed event contracts on Redis Streams and hashes.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"backbone {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Typed event contracts on Redis Streams and hashes."""


app.registered_commands += archive.app.registered_commands
app.registered_commands += codegen.app.registered_commands
app.registered_commands += demo.app.registered_commands
app.add_typer(dlq.dlq_app, name="dlq")
app.add_typer(projection_app, name="projection")
app.registered_commands += docs.app.registered_commands
app.registered_commands += inspect.app.registered_commands
app.registered_commands += tail.app.registered_commands
app.registered_commands += run_cmd.app.registered_commands
app.registered_commands += replay_cmd.app.registered_commands
app.registered_commands += trim.app.registered_commands
app.registered_commands += erase.app.registered_commands
app.registered_commands += ui.app.registered_commands


def main() -> None:
    """Console-script entry point."""
    try:
        # One program name for `backbone` and `python -m backbone`: the usage
        # line and shell completion (its _BACKBONE_COMPLETE variable) agree.
        app(prog_name="backbone")
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        # `backbone inspect | head`: the reader is gone, nothing more to say;
        # point stdout at /dev/null so the interpreter's last flush stays quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)
