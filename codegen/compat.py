"""Compatibility of a contract with the one its generated code came from.

Events outlive the code that wrote them: a stream still holds events of every
version of an operation that was ever produced. Each generated module records
the shape of its contracts (``_SHAPES``: per operation, its version and its
parameters' names, types and whether they have a default); the next
``backbone codegen`` compares the contracts with it and names each change that
would break stored events, the way a schema registry checks compatibility, but at
build time:

* an operation removed (its events would be dead-lettered ``unknown-operation``);
  given the operations the streams hold (``backbone codegen --redis-url``), only
  one whose events are still stored;
* a version that went down;
* at the same version, or at a higher one without any upcaster on the way: a
  parameter removed, retyped, or added without a default (a new consumer could
  not read older events, or an older consumer newer ones).

Adding operations, or parameters with defaults, is compatible. A higher version
with an upcaster between the two versions is trusted to bridge them.
"""

from __future__ import annotations

import ast
from collections.abc import Container, Iterable
from typing import Any, Final

from backbone.contract import ContractSpec, OperationSpec, type_repr

__all__ = ["SHAPES_NAME", "breaking_changes", "read_shapes", "render_shapes"]

SHAPES_NAME: Final = "_SHAPES"
_MAX_LINE: Final = 88

Shapes = dict[str, dict[str, dict[str, Any]]]


def _shape(op: OperationSpec, package: str) -> dict[str, Any]:
    return {
        "version": op.version,
        "params": [
            [p.name, type_repr(p.annotation, package=package), p.has_default]
            for p in op.params
        ],
    }


def shapes_of(specs: Iterable[ContractSpec]) -> Shapes:
    """Contract name -> operation name -> its version and parameters."""
    shapes: Shapes = {}
    for spec in specs:
        package = spec.module.rpartition(".")[0]
        shapes[spec.name] = {op.name: _shape(op, package) for op in spec.operations}
    return shapes


def render_shapes(specs: Iterable[ContractSpec]) -> str:
    """The ``_SHAPES`` block of a generated module (ruff-formatted source)."""
    lines = [
        "",
        "",
        "# The shape of the contracts above, which the next `backbone codegen`",
        "# compares them with to name changes that would break stored events.",
        f"{SHAPES_NAME} = {{",
    ]
    for contract, ops in shapes_of(specs).items():
        lines.append(f"    {_quote(contract)}: {{")
        for name, shape in ops.items():
            lines.append(f"        {_quote(name)}: {{")
            lines.append(f'            "version": {shape["version"]},')
            if not shape["params"]:
                lines.append('            "params": [],')
                lines.append("        },")
                continue
            lines.append('            "params": [')
            for pname, annotation, has_default in shape["params"]:
                line = (
                    f"                [{_quote(pname)}, {_quote(annotation)}, "
                    f"{has_default}],"
                )
                if len(line) <= _MAX_LINE:
                    lines.append(line)
                    continue
                # ruff format's layout of a list too long for one line.
                lines.append("                [")
                lines.append(f"                    {_quote(pname)},")
                typed = f"                    {_quote(annotation)},"
                if len(typed) > _MAX_LINE:
                    typed += "  # noqa: E501"
                lines.append(typed)
                lines.append(f"                    {has_default},")
                lines.append("                ],")
            lines.append("            ],")
            lines.append("        },")
        lines.append("    },")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    """A double-quoted Python string literal, as ruff format writes it."""
    literal = repr(text)
    if literal.startswith('"'):  # repr chose double quotes: TEXT holds a '
        return literal
    return '"' + literal[1:-1].replace("\\'", "'").replace('"', '\\"') + '"'


def read_shapes(source: str) -> Shapes | None:
    """The ``_SHAPES`` recorded in a generated module's SOURCE; None when it has
    none (generated before shapes were recorded) or it cannot be read (not a
    literal, or not laid out as :func:`render_shapes` writes it)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id == SHAPES_NAME
        ):
            try:
                value = ast.literal_eval(node.value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                return None
            return value if _well_formed(value) else None
    return None


def _well_formed(shapes: object) -> bool:
    """SHAPES has the layout :func:`render_shapes` writes (a hand edit or a
    merge may have left anything)."""
    if not isinstance(shapes, dict):
        return False
    for contract, operations in shapes.items():
        if not isinstance(contract, str) or not isinstance(operations, dict):
            return False
        for name, shape in operations.items():
            if not isinstance(name, str) or not isinstance(shape, dict):
                return False
            version = shape.get("version", 1)
            params = shape.get("params", [])
            if type(version) is not int or not isinstance(params, list):
                return False
            if not all(
                isinstance(p, list)
                and len(p) == 3
                and isinstance(p[0], str)
                and isinstance(p[1], str)
                for p in params
            ):
                return False
    return True


def breaking_changes(
    old: Shapes,
    specs: Iterable[ContractSpec],
    stored: Container[tuple[str, str]] | None = None,
) -> list[str]:
    """Each change from OLD to SPECS that would break stored events, one line each.

    STORED, when known, holds the (contract, operation) pairs that streams (and
    their dead letters) still hold: an operation or contract removed whose
    events no stream holds breaks nothing. Unknown (None), every removal counts.
    """
    problems: list[str] = []
    current = {spec.name: spec for spec in specs}

    def gone(contract: str, operation: str) -> bool:
        return stored is not None and (contract, operation) not in stored

    for contract, ops in old.items():
        spec = current.get(contract)
        if spec is None and all(gone(contract, name) for name in ops):
            continue
        if spec is None:
            problems.append(
                f"contract {contract} was removed: streams still hold its events; "
                "keep it, or accept the break once no stream holds them"
            )
            continue
        package = spec.module.rpartition(".")[0]
        now = {op.name: op for op in spec.operations}
        for name, shape in ops.items():
            op = now.get(name)
            if op is None and gone(contract, name):
                continue
            if op is None:
                problems.append(
                    f"{contract}.{name} was removed: its events still in streams "
                    "would be dead-lettered as unknown-operation; keep the operation "
                    "(mark its versions retired: still readable, no longer written), "
                    "or accept the break once no stream holds its events"
                )
                continue
            problems.extend(_operation_changes(contract, shape, op, package))
    return problems


def _operation_changes(
    contract: str, shape: dict[str, Any], op: OperationSpec, package: str
) -> list[str]:
    where = f"{contract}.{op.name}"
    before = int(shape.get("version", 1))
    if op.version < before:
        return [
            f"{where}: its version went down from {before} to {op.version}; "
            "versions only grow (events of the higher one are stored)"
        ]
    if op.version > before and any(
        step in op.upcasters for step in range(before, op.version)
    ):
        return []  # an upcaster bridges the versions
    old_params = {str(p[0]): (str(p[1]), bool(p[2])) for p in shape.get("params", [])}
    new_params = {
        p.name: (type_repr(p.annotation, package=package), p.has_default)
        for p in op.params
    }
    if op.version == before:
        fix = (
            f"raise the version (@operation(version={before + 1}, upcasters="
            f"{{{before}: ...}})) with an upcaster from version {before}"
        )
    else:
        fix = (
            f"add an upcaster from version {before} "
            f"(@operation(version={op.version}, upcasters={{{before}: ...}}))"
        )
    problems = []
    for name, (annotation, _) in old_params.items():
        if name not in new_params:
            problems.append(
                f"{where}: parameter {name!r} was removed, which consumers of "
                f"version {before} still need; {fix}"
            )
        elif new_params[name][0] != annotation:
            problems.append(
                f"{where}: parameter {name!r} changed type from {annotation} to "
                f"{new_params[name][0]}, which stored events may not fit; {fix}"
            )
    for name, (_, has_default) in new_params.items():
        if name not in old_params and not has_default:
            problems.append(
                f"{where}: parameter {name!r} was added without a default, so "
                f"stored events of version {before} cannot be read; give it a "
                f"default or {fix}"
            )
    return problems
