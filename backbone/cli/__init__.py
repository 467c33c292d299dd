"""The ``backbone`` command: one module per command.

This package is the composition root: it is the one place that reaches the code
generator (lazily, inside the ``codegen`` command); the runtime modules never
import it.
"""

from __future__ import annotations

import sys

import typer

from . import codegen, demo, dlq

__all__ = ["app", "main"]

app = typer.Typer(
    name="backbone",
    help="Typed event contracts on Redis Streams and hashes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.registered_commands += codegen.app.registered_commands
app.registered_commands += demo.app.registered_commands
app.add_typer(dlq.dlq_app, name="dlq")


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
