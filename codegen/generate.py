"""Finding contract modules under paths; writing or checking their generated code."""

from __future__ import annotations

import dataclasses
import importlib
import sys
import traceback
from collections.abc import Iterable, Sequence
from pathlib import Path

from backbone.contract import ContractSpec, describe, is_contract
from backbone.errors import ContractError

from .render import HEADER, render_module

__all__ = ["CodegenError", "Outcome", "generate", "module_name_for"]

GENERATED_SUFFIX = "_gen.py"


class CodegenError(Exception):
    """A path cannot be generated from; the message says where and why."""


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """What one run did or would do."""

    written: tuple[Path, ...]
    unchanged: tuple[Path, ...]
    stale: tuple[Path, ...]
    orphaned: tuple[Path, ...]

    @property
    def ok_for_check(self) -> bool:
        return not self.stale and not self.orphaned


def _is_generated(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8") as handle:
            return handle.readline().rstrip("\n") == HEADER
    except (OSError, UnicodeDecodeError):
        return False


def module_name_for(path: Path) -> tuple[str, Path]:
    """The dotted module name of PATH and the sys.path root it imports from."""
    path = path.resolve()
    parts = [path.stem] if path.name != "__init__.py" else []
    parent = path.parent
    while (parent / "__init__.py").exists():
        parts.insert(0, parent.name)
        parent = parent.parent
    if not parts:
        raise CodegenError(f"{path}: cannot tell its module name")
    return ".".join(parts), parent


def _python_files(paths: Sequence[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if not path.exists():
            raise CodegenError(f"{path}: no such file or directory")
        if path.is_file():
            if path.suffix != ".py":
                raise CodegenError(f"{path}: not a Python file")
            found.append(path)
            continue
        for file in sorted(path.rglob("*.py")):
            rel = file.relative_to(path)
            if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
                continue
            found.append(file)
    unique = sorted({f.resolve() for f in found})
    return unique


def _import(module: str, root: Path, file: Path) -> object:
    root_text = str(root)
    if root_text not in sys.path:
        sys.path.insert(0, root_text)
    try:
        return importlib.import_module(module)
    except ContractError:
        raise
    except Exception as exc:
        detail = "".join(traceback.format_exception_only(exc)).strip()
        raise CodegenError(
            f"{file}: importing {module} failed: {detail}; fix the module (codegen "
            "imports it to read its contracts)"
        ) from exc


def _contracts_of(module: object) -> list[ContractSpec]:
    name = getattr(module, "__name__", "")
    specs = []
    for value in vars(module).values():
        if is_contract(value) and value.__module__ == name:
            specs.append(describe(value))
    return specs


def generate(paths: Iterable[Path], *, check: bool = False) -> Outcome:
    """Generate (or with CHECK, only compare) the modules for contracts under PATHS.

    Generated modules under PATHS whose contract module is gone (or holds no
    contract any more) are orphaned: deleted, or with CHECK reported.

    Raises :class:`ContractError` or :class:`CodegenError` on the first contract
    that cannot be generated.
    """
    files = _python_files([Path(p) for p in paths])
    written: list[Path] = []
    unchanged: list[Path] = []
    stale: list[Path] = []
    orphaned: list[Path] = []
    expected: set[Path] = set()
    generated_seen: list[Path] = []
    for file in files:
        if _is_generated(file):
            generated_seen.append(file)
            continue
        module_name, root = module_name_for(file)
        module = _import(module_name, root, file)
        specs = _contracts_of(module)
        if not specs:
            continue
        target = file.with_name(file.stem + GENERATED_SUFFIX)
        expected.add(target)
        text = render_module(module_name, specs)
        current = target.read_text(encoding="utf-8") if target.exists() else None
        if current == text:
            unchanged.append(target)
        elif check:
            stale.append(target)
        else:
            target.write_text(text, encoding="utf-8")
            written.append(target)
    for file in generated_seen:
        if file not in expected:
            orphaned.append(file)
            if not check:
                file.unlink()
    return Outcome(tuple(written), tuple(unchanged), tuple(stale), tuple(orphaned))
