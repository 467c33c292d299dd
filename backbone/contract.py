"""Contracts: ``typing.Protocol`` classes whose ``async def`` methods are operations.

A contract is declared once and read here into a :class:`ContractSpec`, the model
that both the code generator and the runtime work from::

    @contract(name="ShipmentTracking", version=1)
    class ShipmentTracking(Protocol):
        async def packing(self, email: str, product_id: int, time: datetime) -> None:
            ...

``describe`` validates the whole contract and raises :class:`ContractError` naming
the file, line, method and the change to make when something cannot be carried.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import re
import typing
from collections.abc import Callable
from typing import Any, Final, TypeVar

from .carriable import SCALAR_TYPES, type_repr, unsupported_reason
from .errors import ContractError

__all__ = [
    "SCALAR_TYPES",
    "ContractSpec",
    "OperationSpec",
    "ParamSpec",
    "contract",
    "describe",
    "is_contract",
    "operation",
    "type_repr",
    "unsupported_reason",
]

_CONTRACT_ATTR: Final = "__backbone_contract__"
_OPERATION_ATTR: Final = "__backbone_operation__"
_NAME_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$")

_T = TypeVar("_T")
_F = TypeVar("_F", bound=Callable[..., Any])


class _NoDefault:
    """Marks a parameter without a default value."""

    _instance: _NoDefault | None = None

    def __repr__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT: Final = _NoDefault()


@dataclasses.dataclass(frozen=True, slots=True)
class ParamSpec:
    """One parameter of an operation: one field of the event's payload hash."""

    name: str
    annotation: Any
    default: Any = NO_DEFAULT

    @property
    def has_default(self) -> bool:
        return self.default is not NO_DEFAULT


@dataclasses.dataclass(frozen=True, slots=True)
class OperationSpec:
    """One operation (event type) of a contract."""

    contract: str
    name: str
    method: str
    version: int
    params: tuple[ParamSpec, ...]
    doc: str | None
    line: int | None

    @property
    def qualified_name(self) -> str:
        return f"{self.contract}.{self.method}"


@dataclasses.dataclass(frozen=True, slots=True)
class ContractSpec:
    """A validated contract: its name, version and operations, in declaration order."""

    name: str
    version: int
    protocol: type
    operations: tuple[OperationSpec, ...]
    module: str
    file: str | None
    line: int | None
    doc: str | None

    def operation(self, name: str) -> OperationSpec:
        """The operation with wire name NAME; KeyError names the known ones."""
        for op in self.operations:
            if op.name == name:
                return op
        known = ", ".join(op.name for op in self.operations) or "none"
        raise KeyError(
            f"contract {self.name} has no operation {name!r} (known: {known})"
        )

    @property
    def fingerprint(self) -> str:
        """A short hash of everything generated code depends on.

        Types from the contract's own package count by their name inside it, so
        the package keeps its fingerprint under another name (the demo's
        ``contracts`` is ``backbone.samples.contracts`` once installed).
        """
        package = self.module.rpartition(".")[0]
        parts = [f"{self.name}:{self.version}"]
        for op in self.operations:
            parts.append(f"{op.name}:{op.method}:{op.version}")
            for p in op.params:
                annotation = type_repr(p.annotation, package=package)
                parts.append(f"{p.name}={annotation}={p.default!r}")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True, slots=True)
class _ContractMark:
    name: str | None
    version: int


@dataclasses.dataclass(frozen=True, slots=True)
class _OperationMark:
    name: str | None
    version: int


@typing.overload
def contract(cls: type[_T], /) -> type[_T]: ...


@typing.overload
def contract(
    *, name: str | None = None, version: int = 1
) -> Callable[[type[_T]], type[_T]]: ...


def contract(
    cls: type[_T] | None = None, /, *, name: str | None = None, version: int = 1
) -> type[_T] | Callable[[type[_T]], type[_T]]:
    """Mark a ``typing.Protocol`` class as an event contract.

    NAME defaults to the class name; it is what producers write into each event
    and what consumers match on. VERSION is the contract's version (an int >= 1).
    """
    _check_name("contract name", name)
    _check_version("contract version", version)

    def mark(target: type[_T]) -> type[_T]:
        if not isinstance(target, type):
            raise ContractError(
                f"@contract decorates a class, not {type(target).__name__}; "
                "put it on a typing.Protocol class"
            )
        setattr(target, _CONTRACT_ATTR, _ContractMark(name, version))
        return target

    return mark(cls) if cls is not None else mark


def operation(*, name: str | None = None, version: int = 1) -> Callable[[_F], _F]:
    """Give one operation of a contract its own wire NAME or VERSION."""
    _check_name("operation name", name)
    _check_version("operation version", version)

    def mark(fn: _F) -> _F:
        setattr(fn, _OPERATION_ATTR, _OperationMark(name, version))
        return fn

    return mark


def is_contract(obj: object) -> bool:
    """True when OBJ is a class marked with :func:`contract` (itself, not inherited)."""
    return isinstance(obj, type) and _CONTRACT_ATTR in vars(obj)


def describe(cls: type) -> ContractSpec:
    """Validate contract class CLS and return its model."""
    mark = vars(cls).get(_CONTRACT_ATTR)
    if not isinstance(mark, _ContractMark):
        raise ContractError(
            f"{cls.__qualname__} is not a contract; decorate it with "
            "@backbone.contract",
            file=_source_file(cls),
            line=_source_line(cls),
        )
    name = mark.name or cls.__name__
    file = _source_file(cls)
    if not getattr(cls, "_is_protocol", False):
        raise ContractError(
            "a contract must be a typing.Protocol class; declare it as "
            f"`class {cls.__name__}(Protocol):`",
            file=file,
            line=_source_line(cls),
            contract=name,
        )
    operations: list[OperationSpec] = []
    seen: dict[str, str] = {}
    for attr, member in _own_members(cls):
        op = _describe_operation(cls, name, attr, member, file)
        if op is None:
            continue
        if op.name in seen:
            raise ContractError(
                f"two operations share the name {op.name!r} (methods {seen[op.name]} "
                f"and {attr}); give one of them another name with "
                "@operation(name=...)",
                file=file,
                line=op.line,
                contract=name,
                method=attr,
            )
        seen[op.name] = attr
        operations.append(op)
    if not operations:
        raise ContractError(
            "the contract declares no operations; add at least one "
            "`async def name(self, ...) -> None` method",
            file=file,
            line=_source_line(cls),
            contract=name,
        )
    return ContractSpec(
        name=name,
        version=mark.version,
        protocol=cls,
        operations=tuple(operations),
        module=cls.__module__,
        file=file,
        line=_source_line(cls),
        doc=inspect.cleandoc(cls.__doc__) if cls.__doc__ else None,
    )


def _own_members(cls: type) -> list[tuple[str, Any]]:
    """Methods declared by the contract and its contract-free Protocol bases."""
    members: dict[str, Any] = {}
    for base in reversed(cls.__mro__):
        if base in (object, typing.Protocol, typing.Generic):
            continue
        if not getattr(base, "_is_protocol", False):
            continue
        for attr, member in vars(base).items():
            if attr.startswith("_"):
                continue
            members[attr] = member
    return list(members.items())


def _describe_operation(
    cls: type, contract_name: str, attr: str, member: Any, file: str | None
) -> OperationSpec | None:
    if isinstance(member, (staticmethod, classmethod)):
        raise ContractError(
            "static and class methods cannot be operations; make it a plain "
            "`async def` method or move it out of the contract",
            file=file,
            line=_source_line(member.__func__),
            contract=contract_name,
            method=attr,
        )
    if isinstance(member, property) or not callable(member):
        raise ContractError(
            "contracts hold only operations (async methods); remove this attribute "
            "or move it out of the contract",
            file=file,
            line=_source_line(cls),
            contract=contract_name,
            method=attr,
        )
    line = _source_line(member)

    def fail(message: str) -> ContractError:
        return ContractError(
            message, file=file, line=line, contract=contract_name, method=attr
        )

    if not inspect.iscoroutinefunction(member):
        raise fail(f"operations must be coroutines; declare it as `async def {attr}`")
    mark = getattr(member, _OPERATION_ATTR, None)
    op_name = attr
    op_version = 1
    if isinstance(mark, _OperationMark):
        op_name = mark.name or attr
        op_version = mark.version
    try:
        hints = typing.get_type_hints(member, include_extras=True)
    except Exception as exc:  # NameError, TypeError from unresolvable annotations
        raise fail(
            f"its annotations cannot be resolved ({exc}); import every type the "
            "signature names at module level"
        ) from exc
    signature = inspect.signature(member)
    params: list[ParamSpec] = []
    for index, (pname, param) in enumerate(signature.parameters.items()):
        if index == 0:
            if pname != "self" or param.kind is not param.POSITIONAL_OR_KEYWORD:
                raise fail("the first parameter of an operation must be `self`")
            continue
        if param.kind is param.VAR_POSITIONAL:
            raise fail(
                f"*{pname} is not allowed: an event has named fields; list each "
                "parameter explicitly"
            )
        if param.kind is param.VAR_KEYWORD:
            raise fail(
                f"**{pname} is not allowed: an event has named fields; list each "
                "parameter explicitly"
            )
        if param.kind is param.POSITIONAL_ONLY:
            raise fail(
                f"parameter {pname!r} is positional-only; remove the `/` so it can "
                "be passed by name"
            )
        if pname == "context":
            raise fail(
                "'context' is reserved for the event context handlers may take; "
                "rename the parameter"
            )
        if pname.startswith("_"):
            raise fail(
                f"parameter {pname!r} starts with '_', which is reserved; rename it"
            )
        if pname not in hints:
            raise fail(
                f"parameter {pname!r} has no type annotation; annotate it, "
                f"e.g. `{pname}: str`"
            )
        annotation = hints[pname]
        problem = unsupported_reason(annotation)
        if problem is not None:
            raise fail(f"parameter {pname!r}: {problem}")
        default: Any = NO_DEFAULT
        if param.default is not param.empty:
            default = param.default
            if not _is_literal_default(default):
                raise fail(
                    f"parameter {pname!r} has default {default!r}; only None, bool, "
                    "int, float, str and bytes literals can be defaults"
                )
        params.append(ParamSpec(pname, annotation, default))
    if "return" not in hints:
        raise fail("the return type is missing; declare `-> None`")
    if hints["return"] is not type(None):
        raise fail(
            f"operations return nothing, but this one returns "
            f"{type_repr(hints['return'])}; declare `-> None` (an event is a "
            "one-way message)"
        )
    return OperationSpec(
        contract=contract_name,
        name=op_name,
        method=attr,
        version=op_version,
        params=tuple(params),
        doc=inspect.cleandoc(member.__doc__) if member.__doc__ else None,
        line=line,
    )


def _is_literal_default(value: object) -> bool:
    return value is None or type(value) in (bool, int, float, str, bytes)


def _check_name(what: str, value: str | None) -> None:
    if value is not None and not _NAME_RE.match(value):
        raise ContractError(
            f"{what} {value!r} is not valid; use letters, digits, '_', '.' or '-' "
            "(at most 128, starting with a letter or '_')"
        )


def _check_version(what: str, value: int) -> None:
    if type(value) is not int or value < 1:
        raise ContractError(f"{what} must be an int >= 1, not {value!r}")


def _source_file(obj: Any) -> str | None:
    try:
        return inspect.getsourcefile(obj)
    except TypeError:
        return None


def _source_line(obj: Any) -> int | None:
    try:
        target = inspect.unwrap(obj)
        code = getattr(target, "__code__", None)
        if code is not None:
            return int(code.co_firstlineno)
        return inspect.getsourcelines(target)[1]
    except (OSError, TypeError):
        return None
