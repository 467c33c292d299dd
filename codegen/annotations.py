"""Rendering annotations as source text, collecting the imports they need."""

from __future__ import annotations

import builtins
import contextlib
import contextvars
import enum
import re
import sys
import types
import typing
from collections.abc import Iterator
from typing import Any

from backbone.contract import type_repr
from backbone.errors import ContractError

__all__ = ["Imports", "relative_to", "render_annotation", "render_default"]

_PACKAGE: contextvars.ContextVar[str] = contextvars.ContextVar(
    "codegen_package", default=""
)


@contextlib.contextmanager
def relative_to(package: str) -> Iterator[None]:
    """Within the block, :class:`Imports` made without a package write the modules
    inside PACKAGE (the one the generated module lives in) as relative imports."""
    token = _PACKAGE.set(package)
    try:
        yield
    finally:
        _PACKAGE.reset(token)


class Imports:
    """``from module import name`` lines, with aliases when two names collide.

    Modules inside PACKAGE (by default the one :func:`relative_to` names) are
    imported relatively, so a generated module keeps working when its package is
    installed under another name.
    """

    def __init__(
        self, reserved: set[str] | None = None, *, package: str | None = None
    ) -> None:
        self._names: dict[tuple[str, str], str] = {}
        self._taken: set[str] = set(reserved or ())
        self._modules: set[str] = set()
        self._package = _PACKAGE.get() if package is None else package

    def module(self, name: str) -> str:
        """``import NAME``; returns the name to use."""
        self._modules.add(name)
        self._taken.add(name.split(".", 1)[0])
        return name

    def name(self, module: str, name: str) -> str:
        """``from MODULE import NAME``; returns the (possibly aliased) local name."""
        key = (module, name)
        local = self._names.get(key)
        if local is not None:
            return local
        local = name
        if local in self._taken:
            prefix = "".join(part.title() for part in re.split(r"[._]", module) if part)
            local = f"{prefix}{name}"
            n = 2
            while local in self._taken:
                local = f"{prefix}{name}{n}"
                n += 1
        self._taken.add(local)
        self._names[key] = local
        return local

    def _relative(self, module: str) -> str:
        """MODULE as written in the import: relative when inside the package."""
        package = self._package
        if package and (module == package or module.startswith(package + ".")):
            return "." + module[len(package) + 1 :]
        return module

    def lines(self) -> list[str]:
        """The import block: standard library first, then everything else, then
        relative imports; plain imports before from-imports, each sorted."""
        sections: list[list[str]] = [[], [], []]
        for mod in sorted(self._modules):
            sections[_section(mod)].append(f"import {mod}")
        by_module: dict[str, list[str]] = {}
        for (mod, name), local in self._names.items():
            by_module.setdefault(self._relative(mod), []).append(
                f"{name} as {local}" if name != local else name
            )
        for mod in sorted(by_module):
            parts = sorted(by_module[mod], key=_isort_name_key)
            text = f"from {mod} import {', '.join(parts)}"
            if len(text) > 88:
                inner = "".join(f"    {p},\n" for p in parts)
                text = f"from {mod} import (\n{inner})"
            sections[_section(mod)].append(text)
        out: list[str] = []
        for block in sections:
            if block:
                if out:
                    out.append("")
                out.extend(block)
        return out


def _isort_name_key(text: str) -> tuple[int, str]:
    """isort's order within one from-import: CONSTANTS, Classes, functions."""
    name = text.split(" as ", 1)[0]
    if name.isupper() and len(name) > 1:
        kind = 0
    elif name[:1].isupper():
        kind = 1
    else:
        kind = 2
    return kind, name


def _section(module: str) -> int:
    if module.startswith("."):
        return 2
    return 0 if module.split(".", 1)[0] in sys.stdlib_module_names else 1


def render_annotation(tp: Any, imports: Imports, *, where: str) -> str:
    """Source text for annotation TP (Annotated metadata is dropped: static types
    only need the base type, validation uses the contract itself)."""
    if tp is None or tp is type(None):
        return "None"
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return render_annotation(args[0], imports, where=where)
    if origin in (typing.Union, types.UnionType):
        parts = [render_annotation(a, imports, where=where) for a in args]
        # None last, as people write it.
        parts.sort(key=lambda p: p == "None")
        return " | ".join(parts)
    if origin is typing.Literal:
        literal = imports.name("typing", "Literal")
        values = ", ".join(_render_literal(v, imports, where) for v in args)
        return f"{literal}[{values}]"
    if origin in (list, set, frozenset, dict, tuple):
        inner = ", ".join(
            "..." if a is Ellipsis else render_annotation(a, imports, where=where)
            for a in args
        )
        return f"{origin.__name__}[{inner}]"
    if isinstance(tp, type):
        return _render_class(tp, imports, where)
    raise ContractError(f"{where}: cannot render annotation {type_repr(tp)}")


def _render_class(cls: type, imports: Imports, where: str) -> str:
    module = cls.__module__
    qualname = cls.__qualname__
    if module == "builtins" and getattr(builtins, qualname, None) is cls:
        return qualname
    if "<locals>" in qualname:
        raise ContractError(
            f"{where}: type {qualname} is defined inside a function; define it at "
            "module level so generated code can import it"
        )
    if module == "__main__":
        raise ContractError(
            f"{where}: type {qualname} lives in __main__; move it into an importable "
            "module"
        )
    top, _, rest = qualname.partition(".")
    local = imports.name(module, top)
    return f"{local}.{rest}" if rest else local


def _render_literal(value: object, imports: Imports, where: str) -> str:
    if isinstance(value, enum.Enum):
        return f"{_render_class(type(value), imports, where)}.{value.name}"
    return render_default(value)


def render_default(value: object) -> str:
    """A literal as ``ruff format`` writes it (double quotes where it can)."""
    text = repr(value)
    if isinstance(value, (str, bytes)):
        prefix = "b" if isinstance(value, bytes) else ""
        body = text[len(prefix) :]
        if body.startswith("'") and '"' not in body[1:-1]:
            text = prefix + '"' + body[1:-1].replace("\\'", "'") + '"'
    return text
