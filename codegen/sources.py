"""Finding the modules under paths that declare contracts, without running them.

Every Python file is read as source (``ast``): only a module with a class
decorated by backbone's ``@contract`` (``@contract``, ``@backbone.contract(...)``,
or an alias of either) is imported; scripts, tests and helpers never run.
Virtual environments, hidden and cache directories are not entered; generated
modules are collected apart.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import tokenize
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

from .render import HEADER

__all__ = ["GENERATED_SUFFIX", "Scan", "declares_contract", "scan"]

GENERATED_SUFFIX: Final = "_gen.py"
# Modules the ``contract`` decorator can be imported from.
_CONTRACT_MODULES: Final = frozenset({"backbone", "backbone.contract"})
# Directories never searched below a given path (besides hidden ones and any
# directory holding a pyvenv.cfg, i.e. a virtual environment).
_SKIPPED_DIRS: Final = frozenset({"__pycache__", "site-packages", "node_modules"})


@dataclasses.dataclass(frozen=True, slots=True)
class Scan:
    """What a search under some paths found."""

    contract_modules: tuple[Path, ...]
    """Files that declare at least one contract: the ones to import."""
    generated: tuple[Path, ...]
    """Modules written by ``backbone codegen`` (by their first line)."""
    searched: int
    """Python files read."""
    unparsable: tuple[str, ...]
    """One line per file that mentions backbone but is not valid Python (it may
    declare a contract; nothing can tell): file, line and the syntax error."""
    skipped_dirs: tuple[Path, ...]
    """Virtual environments, hidden and cache directories not entered."""

    def describe(self, paths: Sequence[Path]) -> str:
        """One sentence: where was searched and what was left out."""
        where = ", ".join(str(p) for p in paths)
        text = f"searched {self.searched} Python file(s) under {where}"
        if self.generated:
            text += f" (and {len(self.generated)} generated module(s))"
        if self.skipped_dirs:
            names = ", ".join(sorted({p.name for p in self.skipped_dirs}))
            text += f"; not entered: {names}"
        return text


def _is_venv(directory: Path) -> bool:
    return (directory / "pyvenv.cfg").is_file()


def _skipped(directory: Path) -> bool:
    name = directory.name
    return name.startswith(".") or name in _SKIPPED_DIRS or _is_venv(directory)


def _walk(root: Path, skipped: list[Path]) -> Iterable[Path]:
    """The .py files under ROOT, in a stable order, pruning skipped directories."""
    for current, dirs, files in os.walk(root):
        here = Path(current)
        kept = []
        for name in sorted(dirs):
            if name == "__pycache__":  # no sources: not worth a mention
                continue
            if _skipped(here / name):
                skipped.append(here / name)
            else:
                kept.append(name)
        dirs[:] = kept
        for name in sorted(files):
            if name.endswith(".py") and not name.startswith("."):
                yield here / name


def _read(file: Path) -> str | None:
    """The source of FILE (honouring its encoding cookie), None when unreadable."""
    try:
        with tokenize.open(file) as handle:
            return handle.read()
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None


def declares_contract(tree: ast.Module) -> bool:
    """True when a module-level class in TREE is decorated with backbone's
    ``contract``."""
    names: set[str] = set()  # local names of the decorator itself
    modules: set[str] = set()  # local names of modules that hold it
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            if node.module in _CONTRACT_MODULES:
                for alias in node.names:
                    if alias.name == "contract":
                        names.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname is not None:
                    if alias.name in _CONTRACT_MODULES:
                        modules.add(alias.asname)
                    continue
                if alias.name.split(".", 1)[0] == "backbone":
                    modules.add("backbone")  # ``import backbone.x`` binds backbone
                if alias.name in _CONTRACT_MODULES:
                    modules.add(alias.name)
    if not names and not modules:
        return False
    return any(
        _is_contract_decorator(decorator, names, modules)
        for node in _module_level_classes(tree.body)
        for decorator in node.decorator_list
    )


def _module_level_classes(body: list[ast.stmt]) -> Iterable[ast.ClassDef]:
    """The classes defined at module level (also under ``if``, ``try``...), the
    only ones codegen reads; those inside functions or classes are not."""
    for node in body:
        if isinstance(node, ast.ClassDef):
            yield node
        elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                for child in getattr(node, field, ()):
                    if isinstance(child, (ast.ExceptHandler, ast.match_case)):
                        yield from _module_level_classes(child.body)
                    elif isinstance(child, ast.stmt):
                        yield from _module_level_classes([child])


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base is not None else None
    return None


def _is_contract_decorator(
    decorator: ast.expr, names: set[str], modules: set[str]
) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    dotted = _dotted(target)
    if dotted is None:
        return False
    if dotted in names:
        return True
    owner, _, attr = dotted.rpartition(".")
    return attr == "contract" and owner in modules


def _is_generated(source: str) -> bool:
    return source.split("\n", 1)[0].rstrip("\r") == HEADER


def scan(paths: Sequence[Path]) -> Scan:
    """Search PATHS (files or directories) for contract and generated modules."""
    skipped: list[Path] = []
    unparsable: list[str] = []
    files: list[Path] = []
    for path in paths:
        if path.is_file():
            files.append(path)
        else:
            files.extend(_walk(path, skipped))
    contract_modules: list[Path] = []
    generated: list[Path] = []
    seen: set[Path] = set()
    searched = 0
    for file in files:
        resolved = file.resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        source = _read(resolved)
        if source is None:
            continue
        if _is_generated(source):
            generated.append(resolved)
            continue
        if resolved.name.endswith(GENERATED_SUFFIX):
            continue
        searched += 1
        if "backbone" not in source:  # no way to reach the decorator
            continue
        try:
            tree = ast.parse(source, filename=str(resolved))
        except (SyntaxError, ValueError) as exc:
            line = getattr(exc, "lineno", None)
            where = f"{resolved}:{line}" if line else str(resolved)
            message = getattr(exc, "msg", None) or str(exc)
            unparsable.append(
                f"{where}: {type(exc).__name__}: {message} (it mentions backbone, "
                "so it may declare a contract)"
            )
            continue
        if declares_contract(tree):
            contract_modules.append(resolved)
    return Scan(
        contract_modules=tuple(sorted(contract_modules)),
        generated=tuple(sorted(generated)),
        searched=searched,
        unparsable=tuple(unparsable),
        skipped_dirs=tuple(skipped),
    )
