"""``backbone docs``: the AsyncAPI 3.0 document of contracts."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import BackboneError
from .common import console, errors, fail

app = typer.Typer()


@app.command()
def docs(
    paths: Annotated[
        list[Path],
        typer.Argument(
            metavar="PATH", help="Contract modules or packages to describe."
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="Write the document to FILE, not standard output.",
        ),
    ] = None,
    environment: Annotated[
        str | None,
        typer.Option(
            "--environment",
            "-e",
            metavar="ENV",
            help="Environment part of the stream keys (with --uri: dev if not given).",
        ),
    ] = None,
    uris: Annotated[
        list[str] | None,
        typer.Option(
            "--uri",
            "-u",
            metavar="URI",
            help="Describe the stream of this URI (repeatable); without any, one "
            "channel per contract with the stream key as a parameter.",
        ),
    ] = None,
) -> None:
    """Write the AsyncAPI 3.0 document (JSON) of the contracts under PATHS.

    Only modules whose source declares a contract are imported.
    """
    if TYPE_CHECKING:  # the repository's codegen/ folder, checked as itself
        from codegen import CodegenError, ImportFailures, load_contracts
        from codegen.asyncapi import build_document
    else:  # installed as backbone.codegen (an editable install maps it too)
        from ..codegen import CodegenError, ImportFailures, load_contracts
        from ..codegen.asyncapi import build_document

    try:
        specs = [spec for found in load_contracts(paths) for spec in found.specs]
        document = build_document(specs, environment=environment, uris=uris or ())
    except ImportFailures as exc:
        for line in exc.lines:
            errors.print(
                f"error: {line}", markup=False, highlight=False, soft_wrap=True
            )
        raise typer.Exit(1) from exc
    except (BackboneError, CodegenError) as exc:
        fail(str(exc))
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}")
    console.print(
        f"wrote {output}: {len(specs)} contract(s), "
        f"{len(document['channels'])} channel(s), "
        f"{len(document['components']['messages'])} message(s)",
        highlight=False,
        markup=False,
    )
