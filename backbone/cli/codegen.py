"""``backbone codegen``: generate typed code from contracts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import ContractError
from .common import Environment, console, errors, run

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
    accept_breaking: Annotated[
        bool,
        typer.Option(
            "--accept-breaking",
            help="Write even when a contract changed in a way that breaks stored "
            "events (a removed or retyped parameter without an upcaster, a removed "
            "operation).",
        ),
    ] = False,
    redis_url: Annotated[
        str | None,
        typer.Option(
            "--redis-url",
            help="Look up which operations the environment's streams (and dead "
            "letters) still hold: removing an operation none holds is no break. "
            "Reads every entry, once.",
        ),
    ] = None,
    environment: Environment = "dev",
) -> None:
    """Generate typed producers, consumers and dispatchers from contracts.

    Each contract is compared with the one its code was last generated from;
    changes that would break events already stored are named and refused.

    Only modules whose source declares a contract are imported; virtual
    environments, hidden and cache directories are not searched.
    """
    if TYPE_CHECKING:  # the repository's codegen/ folder, checked as itself
        from codegen import BreakingChanges, CodegenError, ImportFailures, generate
    else:  # installed as backbone.codegen (an editable install maps it too)
        from ..codegen import BreakingChanges, CodegenError, ImportFailures, generate

    stored = None
    if redis_url is not None:
        stored = run(lambda: stored_operations(redis_url, environment))
    try:
        outcome = generate(
            paths, check=check, accept_breaking=accept_breaking, stored=stored
        )
    except (ImportFailures, BreakingChanges) as exc:
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
        for line in outcome.breaking:
            errors.print(
                f"breaking: {line}", markup=False, highlight=False, soft_wrap=True
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


async def stored_operations(url: str, environment: str) -> set[tuple[str, str]]:
    """The (contract, operation) pairs of every event the streams of ENVIRONMENT
    hold, dead letters included (they can be re-driven)."""
    from ..connection import Backbone
    from ..events import F_CONTRACT, F_OPERATION, as_text

    found: set[tuple[str, str]] = set()
    bus = Backbone(url, environment=environment)
    try:
        pattern = "bb:{" + environment + ":*"
        async for key in bus.redis.scan_iter(match=pattern, _type="stream"):
            # A dead letter copies its event's fields as m:<field>.
            prefix = b"m:" if as_text(key).endswith(":dlq") else b""
            start = "-"
            while True:
                page: Any = await bus.redis.xrange(key, start, "+", count=10_000)
                for _, fields in page:
                    contract = fields.get(prefix + F_CONTRACT)
                    operation = fields.get(prefix + F_OPERATION)
                    if contract is not None and operation is not None:
                        found.add((as_text(contract), as_text(operation)))
                if len(page) < 10_000:
                    break
                start = "(" + as_text(page[-1][0])
    finally:
        await bus.close()
    return found
