"""Contracts: ``typing.Protocol`` classes whose ``async def`` methods are operations.

A contract is declared once and read here into a :class:`ContractSpec`, the model
that both the code generator and the runtime work from::

    @contract(name="ShipmentTracking", version=1)
    class ShipmentTracking(Protocol):
        async def packing(self, email: str, product_id: int, time: datetime) -> None:
            ...

An operation's shape may change over time: ``@operation(version=N,
upcasters=...)`` declares its current version and the functions that turn the
payload of an older version into the next one's; ``deprecated`` and ``retired``
mark older versions producers should no longer write (docs/event-lifecycle.md).
:func:`backbone.describe.describe` validates a whole contract.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import re
import typing
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final, TypeAlias, TypeVar

from .carriable import SCALAR_TYPES, type_repr, unsupported_reason
from .errors import ContractError

__all__ = [
    "SCALAR_TYPES",
    "ContractSpec",
    "OperationSpec",
    "ParamSpec",
    "Upcaster",
    "contract",
    "contract_mark",
    "is_contract",
    "operation",
    "operation_mark",
    "type_repr",
    "unsupported_reason",
]

_CONTRACT_ATTR: Final = "__backbone_contract__"
_OPERATION_ATTR: Final = "__backbone_operation__"
_NAME_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$")

_T = TypeVar("_T")

Upcaster: TypeAlias = Callable[[dict[str, Any]], Mapping[str, Any]]
"""Turns the payload of one version of an operation (parameter name -> value, as
stored) into the payload of the next version."""
_NO_UPCASTERS: Final[Mapping[int, Upcaster]] = MappingProxyType({})
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
    personal: str | None = None
    """Personal data (``Annotated[T, Personal(...)]``): the name of the parameter
    whose value is its subject, or ``"@aggregate"`` (the event's aggregate id);
    None when the parameter is not personal."""
    partition_key: bool = False
    """The event's partition key (``Annotated[T, PartitionKey()]``)."""

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
    upcasters: Mapping[int, Upcaster] = dataclasses.field(
        default_factory=lambda: _NO_UPCASTERS, hash=False, compare=False
    )
    """From-version -> function to the next version's payload (a missing step
    keeps the payload as it is)."""
    deprecated: frozenset[int] = frozenset()
    retired: frozenset[int] = frozenset()

    @property
    def partition_key(self) -> int | None:
        """The index of the partition key parameter, or None."""
        for index, param in enumerate(self.params):
            if param.partition_key:
                return index
        return None

    @property
    def qualified_name(self) -> str:
        return f"{self.contract}.{self.method}"

    def status_of(self, version: int) -> str:
        """``current``, ``deprecated``, ``retired``, ``older`` or ``newer``."""
        if version == self.version:
            return "current"
        if version > self.version:
            return "newer"
        if version in self.retired:
            return "retired"
        if version in self.deprecated:
            return "deprecated"
        return "older"


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
    partitions: int = 1
    """How many partitions the contract's streams are split into."""

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
            if op.deprecated or op.retired:
                parts.append(f"~{sorted(op.deprecated)}:{sorted(op.retired)}")
            for p in op.params:
                annotation = type_repr(p.annotation, package=package)
                parts.append(f"{p.name}={annotation}={p.default!r}")
                if p.personal is not None:
                    parts.append(f"{p.name}~personal:{p.personal}")
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True, slots=True)
class _ContractMark:
    name: str | None
    version: int
    partitions: int = 1


@dataclasses.dataclass(frozen=True, slots=True)
class _OperationMark:
    name: str | None
    version: int
    upcasters: Mapping[int, Upcaster]
    deprecated: frozenset[int]
    retired: frozenset[int]


@typing.overload
def contract(cls: type[_T], /) -> type[_T]: ...


@typing.overload
def contract(
    *, name: str | None = None, version: int = 1, partitions: int = 1
) -> Callable[[type[_T]], type[_T]]: ...


def contract(
    cls: type[_T] | None = None,
    /,
    *,
    name: str | None = None,
    version: int = 1,
    partitions: int = 1,
) -> type[_T] | Callable[[type[_T]], type[_T]]:
    """Mark a ``typing.Protocol`` class as an event contract.

    NAME defaults to the class name; it is what producers write into each event
    and what consumers match on. VERSION is the contract's version (an int >= 1).
    PARTITIONS splits its streams into that many partitions, each event going to
    the partition of its key (``Annotated[T, PartitionKey()]``; see
    :mod:`backbone.partitions`).
    """
    _check_name("contract name", name)
    _check_version("contract version", version)
    if (
        not isinstance(partitions, int)
        or isinstance(partitions, bool)
        or not 1 <= partitions <= 1024
    ):
        raise ContractError(
            f"partitions must be a whole number from 1 to 1024, not {partitions!r}"
        )

    def mark(target: type[_T]) -> type[_T]:
        if not isinstance(target, type):
            raise ContractError(
                f"@contract decorates a class, not {type(target).__name__}; "
                "put it on a typing.Protocol class"
            )
        setattr(target, _CONTRACT_ATTR, _ContractMark(name, version, partitions))
        return target

    return mark(cls) if cls is not None else mark


def operation(
    *,
    name: str | None = None,
    version: int = 1,
    upcasters: Mapping[int, Upcaster] | None = None,
    deprecated: Iterable[int] = (),
    retired: Iterable[int] = (),
) -> Callable[[_F], _F]:
    """Give one operation of a contract its own wire NAME or VERSION.

    UPCASTERS maps an older version K to a function turning a payload of
    version K (a dict, parameter name -> value) into one of version K + 1;
    consumers apply the chain on read, so handlers see only the current shape.
    A version without an upcaster is read as it is (right when the change only
    added parameters with defaults). DEPRECATED versions are still written, with
    a warning; RETIRED versions are refused when produced, and still read.
    """
    _check_name("operation name", name)
    _check_version("operation version", version)
    steps = dict(upcasters or {})
    for step, upcaster in steps.items():
        _check_older("upcaster", step, version)
        if not callable(upcaster):
            raise ContractError(
                f"the upcaster from version {step} is {upcaster!r}, not a function; "
                "pass a function taking the payload dict and returning the next "
                "version's"
            )
    old = frozenset(deprecated)
    gone = frozenset(retired)
    for marked in (*old, *gone):
        _check_older("deprecated or retired version", marked, version)
    if old & gone:
        raise ContractError(
            f"version(s) {sorted(old & gone)} are both deprecated and retired; "
            "list each in one of them"
        )
    recorded = _OperationMark(name, version, MappingProxyType(steps), old, gone)

    def mark(fn: _F) -> _F:
        setattr(fn, _OPERATION_ATTR, recorded)
        return fn

    return mark


def operation_mark(fn: object) -> _OperationMark | None:
    """What :func:`operation` recorded on FN, or None."""
    mark = getattr(fn, _OPERATION_ATTR, None)
    return mark if isinstance(mark, _OperationMark) else None


def contract_mark(cls: type) -> _ContractMark | None:
    """What :func:`contract` recorded on CLS itself (not inherited), or None."""
    mark = vars(cls).get(_CONTRACT_ATTR)
    return mark if isinstance(mark, _ContractMark) else None


def is_contract(obj: object) -> bool:
    """True when OBJ is a class marked with :func:`contract` (itself, not inherited)."""
    return isinstance(obj, type) and _CONTRACT_ATTR in vars(obj)


def _check_name(what: str, value: str | None) -> None:
    if value is not None and not _NAME_RE.match(value):
        raise ContractError(
            f"{what} {value!r} is not valid; use letters, digits, '_', '.' or '-' "
            "(at most 128, starting with a letter or '_')"
        )


def _check_version(what: str, value: int) -> None:
    if type(value) is not int or value < 1:
        raise ContractError(f"{what} must be an int >= 1, not {value!r}")


def _check_older(what: str, value: object, version: int) -> None:
    if type(value) is not int or not 1 <= value < version:
        raise ContractError(
            f"{what} {value!r} is not an older version of this operation; use an "
            f"int from 1 to {version - 1} (the operation is version {version})"
        )


def source_file(obj: Any) -> str | None:
    """The file OBJ was defined in, when Python knows it."""
    try:
        return inspect.getsourcefile(obj)
    except TypeError:
        return None


def source_line(obj: Any) -> int | None:
    """The first line of OBJ's definition, when Python knows it."""
    try:
        target = inspect.unwrap(obj)
        code = getattr(target, "__code__", None)
        if code is not None:
            return int(code.co_firstlineno)
        return inspect.getsourcelines(target)[1]
    except (OSError, TypeError):
        return None
