"""Finding contract modules under paths; writing or checking their generated code."""

from __future__ import annotations

import dataclasses
import importlib
import os
import site
import sys
import sysconfig
import traceback
from collections.abc import Container, Iterable, Sequence
from pathlib import Path
from types import ModuleType

import backbone
from backbone.contract import ContractSpec, is_contract
from backbone.describe import describe

from .annotations import relative_to
from .compat import breaking_changes, read_shapes, render_shapes
from .render import render_module
from .sources import GENERATED_SUFFIX, scan

__all__ = [
    "BreakingChanges",
    "CodegenError",
    "ContractModule",
    "ImportFailures",
    "Outcome",
    "generate",
    "load_contracts",
    "module_name_for",
]

HOW_TO_DECLARE = (
    "a contract is a typing.Protocol class decorated with backbone's contract "
    "(`from backbone import contract` and `@contract(...)`, or `import backbone` "
    "and `@backbone.contract(...)`)"
)


class CodegenError(Exception):
    """A path cannot be generated from; the message says where and why."""


class ImportFailures(CodegenError):
    """Contract modules that cannot be parsed or imported: one line per error,
    each naming the file and line where it happened."""

    def __init__(self, lines: Sequence[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = tuple(lines)


class BreakingChanges(CodegenError):
    """Contracts changed in ways that would break stored events: one line per
    change, naming the file, the operation and the fix."""

    def __init__(self, lines: Sequence[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = tuple(lines)


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """What one run did or would do."""

    written: tuple[Path, ...]
    unchanged: tuple[Path, ...]
    stale: tuple[Path, ...]
    orphaned: tuple[Path, ...]
    breaking: tuple[str, ...] = ()
    """Changes that would break stored events (with ``check``, or accepted)."""

    @property
    def ok_for_check(self) -> bool:
        return not self.stale and not self.orphaned and not self.breaking


@dataclasses.dataclass(frozen=True, slots=True)
class ContractModule:
    """An imported module that declares contracts."""

    file: Path
    name: str
    specs: tuple[ContractSpec, ...]


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


def _check_paths(paths: Sequence[Path]) -> None:
    for path in paths:
        if not path.exists():
            raise CodegenError(f"{path}: no such file or directory")
        if path.is_file() and path.suffix != ".py":
            raise CodegenError(f"{path}: not a Python file")


def _library_dirs() -> tuple[str, ...]:
    """Directories whose files are not the user's: the standard library, the
    installed packages, backbone and this generator."""
    paths = sysconfig.get_paths()
    dirs = {paths.get(key, "") for key in ("stdlib", "platstdlib", "purelib")}
    dirs.update(site.getsitepackages())
    dirs.add(site.getusersitepackages())
    dirs.add(os.path.dirname(backbone.__file__ or ""))
    dirs.add(os.path.dirname(__file__))
    return tuple(os.path.realpath(d) + os.sep for d in dirs if d)


def _users_file(filename: str, library: tuple[str, ...]) -> bool:
    if filename.startswith("<"):  # <frozen importlib._bootstrap>, <string>
        return False
    return not os.path.realpath(filename).startswith(library)


def _where(exc: BaseException, file: Path) -> tuple[str, int | None]:
    """The file and line in the user's code where EXC happened (the deepest
    frame there); FILE when no frame is the user's."""
    library = _library_dirs()
    source = exc.filename if isinstance(exc, SyntaxError) else None
    if source and _users_file(source, library):
        return source, getattr(exc, "lineno", None)
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if _users_file(frame.filename, library):
            return frame.filename, frame.lineno
    return str(file), None


def _failure(exc: BaseException, module: str, file: Path) -> str:
    where_file, line = _where(exc, file)
    where = f"{where_file}:{line}" if line else where_file
    if isinstance(exc, SyntaxError):
        message = exc.msg
    else:
        message = "; ".join(t.strip() for t in str(exc).splitlines() if t.strip())
    text = f"{where}: {type(exc).__qualname__}"
    if message:
        text += f": {message}"
    if Path(where_file).resolve() != file:
        text += f" (while importing {module} from {file})"
    return text


def _import(module: str, root: Path) -> ModuleType:
    root_text = str(root)
    if root_text not in sys.path:
        sys.path.insert(0, root_text)
    return importlib.import_module(module)


def _contracts_of(module: ModuleType) -> tuple[ContractSpec, ...]:
    name = module.__name__
    specs = []
    for value in vars(module).values():
        if is_contract(value) and value.__module__ == name:
            specs.append(describe(value))
    return tuple(specs)


def _load(
    files: Sequence[Path], failures: list[str]
) -> list[tuple[Path, str, ModuleType]]:
    """Import FILES; every failure becomes one line of :class:`ImportFailures`,
    after those already in FAILURES."""
    loaded: list[tuple[Path, str, ModuleType]] = []
    for file in files:
        module_name, root = module_name_for(file)
        try:
            loaded.append((file, module_name, _import(module_name, root)))
        except (Exception, SystemExit) as exc:
            line = _failure(exc, module_name, file)
            if line not in failures:
                failures.append(line)
    if failures:
        raise ImportFailures(failures)
    return loaded


def _find(paths: Iterable[Path]) -> tuple[list[ContractModule], list[Path]]:
    """The contract modules under PATHS, and the generated modules there."""
    roots = [Path(p) for p in paths]
    _check_paths(roots)
    found = scan(roots)
    modules = []
    for file, name, module in _load(found.contract_modules, [*found.unparsable]):
        specs = _contracts_of(module)
        if specs:
            modules.append(ContractModule(file, name, specs))
    if not modules:
        raise CodegenError(
            f"no contract found: {found.describe(roots)}; {HOW_TO_DECLARE}"
        )
    return modules, list(found.generated)


def load_contracts(paths: Iterable[Path]) -> list[ContractModule]:
    """Import the modules under PATHS that declare contracts (found by reading
    their source; nothing else is imported) and describe their contracts.

    Raises :class:`CodegenError` when there is none or a path is wrong,
    :class:`ImportFailures` when modules fail to parse or import (naming each),
    and :class:`ContractError` for the first contract that cannot be carried.
    """
    return _find(paths)[0]


def generate(
    paths: Iterable[Path],
    *,
    check: bool = False,
    accept_breaking: bool = False,
    stored: Container[tuple[str, str]] | None = None,
) -> Outcome:
    """Generate (or with CHECK, only compare) the modules for contracts under PATHS.

    Each contract is also compared with the shape its generated module recorded
    (:mod:`codegen.compat`), wherever the contract is now; the contracts an
    orphaned module recorded count as removed. A change that would break stored
    events raises :class:`BreakingChanges` and writes (or deletes) nothing,
    unless ACCEPT_BREAKING; with CHECK it is reported in the outcome. STORED,
    when given, is the (contract, operation) pairs streams still hold: removing
    any other operation is fine.

    Only modules whose source declares a contract are imported. Generated
    modules under PATHS whose contract module is gone (or holds no contract any
    more) are orphaned: deleted, or with CHECK reported. Nothing is written when
    anything fails.

    Raises :class:`CodegenError` when no contract is found or a path is wrong,
    :class:`ImportFailures` when contract modules fail to parse or import, and
    :class:`ContractError` for the first contract that cannot be generated.
    """
    modules, generated_seen = _find(paths)
    rendered: list[tuple[Path, str]] = []
    # Where each generated module's recorded shapes came from: its contract
    # module, or for an orphan (its contract module gone) the orphan itself.
    recorded: list[tuple[Path, Path]] = []
    for found in modules:
        target = found.file.with_name(found.file.stem + GENERATED_SUFFIX)
        with relative_to(found.name.rpartition(".")[0]):
            text = render_module(found.name, found.specs)
        rendered.append((target, text + render_shapes(found.specs)))
        recorded.append((target, found.file))
    expected = {target for target, _ in rendered}
    orphaned = [file for file in generated_seen if file not in expected]
    recorded += [(file, file) for file in orphaned]
    breaking = _breaking(recorded, modules, stored)
    if breaking and not check and not accept_breaking:
        raise BreakingChanges(
            [
                *breaking,
                "nothing was written; fix the contracts, or run `backbone codegen "
                "--accept-breaking` once you know no stored event needs them",
            ]
        )
    written: list[Path] = []
    unchanged: list[Path] = []
    stale: list[Path] = []
    for target, text in rendered:
        current = target.read_text(encoding="utf-8") if target.exists() else None
        if current == text:
            unchanged.append(target)
        elif check:
            stale.append(target)
        else:
            target.write_text(text, encoding="utf-8")
            written.append(target)
    if not check:
        for file in orphaned:
            file.unlink()
    return Outcome(
        tuple(written),
        tuple(unchanged),
        tuple(stale),
        tuple(orphaned),
        tuple(breaking) if check else (),
    )


def _breaking(
    recorded: Sequence[tuple[Path, Path]],
    modules: Sequence[ContractModule],
    stored: Container[tuple[str, str]] | None,
) -> list[str]:
    """The changes that would break stored events, each line naming a file.

    RECORDED pairs each generated module with the file its shapes are told
    about. Every contract a generated module recorded is compared with the
    contract of that name wherever it is now (a contract may move between
    modules), or counted as removed when none is left (also when its contract
    module was deleted: the generated module is an orphan)."""
    specs = [spec for module in modules for spec in module.specs]
    where = {spec.name: module.file for module in modules for spec in module.specs}
    lines: list[str] = []
    for target, file in recorded:
        old = (
            read_shapes(target.read_text(encoding="utf-8")) if target.exists() else None
        )
        for contract, operations in (old or {}).items():
            lines += [
                f"{where.get(contract, file)}: {line}"
                for line in breaking_changes({contract: operations}, specs, stored)
            ]
    return lines
