"""``backbone codegen``: generate typed code from contracts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import ContractError
from .common import console, errors

app = typer.Typer()


@app.command()
def codegen(
    paths: Annotated[
        list[Path],
        typer.Argument(help="Contract modules or packages to generate from."),
    ],
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Write nothing; exit 1 when generated code is stale."
        ),
    ] = False,
) -> None:
    """Generate typed producers, consumers and dispatchers from contracts.

    Only modules whose source declares a contract are imported; virtual
    environments, hidden and cache directories are not searched.
    """
    if TYPE_CHECKING:  # the repository's codegen/ folder, checked as itself
        from codegen import CodegenError, ImportFailures, generate
    else:  # installed as backbone.codegen (an editable install maps it too)
        from ..codegen import CodegenError, ImportFailures, generate

    try:
        outcome = generate(paths, check=check)
    except ImportFailures as exc:
        for line in exc.lines:
            errors.print(
                f"error: {line}", markup=False, highlight=False, soft_wrap=True
            )
        raise typer.Exit(1) from exc
    except (ContractError, CodegenError) as exc:
        errors.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from exc
    if check:
        for path in outcome.stale:
            errors.print(
                f"stale: {path} (run: backbone codegen {' '.join(map(str, paths))})",
                markup=False,
            )
        for path in outcome.orphaned:
            errors.print(
                f"orphaned: {path} (its contract module is gone; delete it)",
                markup=False,
            )
        if not outcome.ok_for_check:
            raise typer.Exit(1)
        console.print(
            f"up to date: {len(outcome.unchanged)} generated module(s)", highlight=False
        )
        return
    for path in outcome.written:
        console.print(f"wrote {path}", highlight=False)
    for path in outcome.orphaned:
        console.print(f"deleted orphaned {path}", highlight=False)
    console.print(
        f"{len(outcome.written)} written, {len(outcome.unchanged)} unchanged",
        highlight=False,
    )
