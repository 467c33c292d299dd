"""Reading a contract class into its :class:`~backbone.contract.ContractSpec`.

``describe`` validates the whole contract and raises :class:`ContractError` naming
the file, line, method and the change to make when something cannot be carried.
"""

from __future__ import annotations

import inspect
import typing
import uuid
from collections.abc import Mapping
from typing import Any

from .carriable import unsupported_reason
from .contract import (
    NO_DEFAULT,
    ContractSpec,
    OperationSpec,
    ParamSpec,
    Upcaster,
    contract_mark,
    operation_mark,
    source_file,
    source_line,
    type_repr,
)
from .errors import ContractError
from .partitions import PartitionKey
from .personal import AGGREGATE_SUBJECT, personal_marker

__all__ = ["describe"]


def describe(cls: type) -> ContractSpec:
    """Validate contract class CLS and return its model."""
    mark = contract_mark(cls)
    if mark is None:
        raise ContractError(
            f"{cls.__qualname__} is not a contract; decorate it with "
            "@backbone.contract",
            file=source_file(cls),
            line=source_line(cls),
        )
    name = mark.name or cls.__name__
    file = source_file(cls)
    if not getattr(cls, "_is_protocol", False):
        raise ContractError(
            "a contract must be a typing.Protocol class; declare it as "
            f"`class {cls.__name__}(Protocol):`",
            file=file,
            line=source_line(cls),
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
            line=source_line(cls),
            contract=name,
        )
    return ContractSpec(
        name=name,
        version=mark.version,
        protocol=cls,
        operations=tuple(operations),
        module=cls.__module__,
        file=file,
        line=source_line(cls),
        doc=inspect.cleandoc(cls.__doc__) if cls.__doc__ else None,
        partitions=mark.partitions,
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
            line=source_line(member.__func__),
            contract=contract_name,
            method=attr,
        )
    if isinstance(member, property) or not callable(member):
        raise ContractError(
            "contracts hold only operations (async methods); remove this attribute "
            "or move it out of the contract",
            file=file,
            line=source_line(cls),
            contract=contract_name,
            method=attr,
        )
    line = source_line(member)

    def fail(message: str) -> ContractError:
        return ContractError(
            message, file=file, line=line, contract=contract_name, method=attr
        )

    if not inspect.iscoroutinefunction(member):
        raise fail(f"operations must be coroutines; declare it as `async def {attr}`")
    mark = operation_mark(member)
    op_name = attr
    op_version = 1
    upcasters: Mapping[int, Upcaster] = {}
    deprecated: frozenset[int] = frozenset()
    retired: frozenset[int] = frozenset()
    if mark is not None:
        op_name = mark.name or attr
        op_version = mark.version
        upcasters = mark.upcasters
        deprecated, retired = mark.deprecated, mark.retired
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
        try:
            marker = personal_marker(annotation)
        except ValueError as exc:
            raise fail(f"parameter {pname!r}: {exc}") from None
        subject = None
        if marker is not None:
            subject = marker.subject or AGGREGATE_SUBJECT
        keyed = _is_partition_key(annotation)
        if keyed:
            problem = _key_problem(pname, annotation, subject)
            if problem is not None:
                raise fail(problem)
        params.append(ParamSpec(pname, annotation, default, subject, keyed))
    problem = _subject_problem(params)
    if problem is not None:
        raise fail(problem)
    keys = [p.name for p in params if p.partition_key]
    if len(keys) > 1:
        raise fail(
            f"parameters {', '.join(map(repr, keys))} are all marked PartitionKey; "
            "an event has one partition key: keep one marker"
        )
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
        upcasters=upcasters,
        deprecated=deprecated,
        retired=retired,
    )


_SUBJECT_TYPES = (str, int, uuid.UUID)


def _is_partition_key(annotation: Any) -> bool:
    if typing.get_origin(annotation) is not typing.Annotated:
        return False
    return any(
        m is PartitionKey or isinstance(m, PartitionKey)
        for m in typing.get_args(annotation)[1:]
    )


def _key_problem(name: str, annotation: Any, subject: str | None) -> str | None:
    """Why parameter NAME cannot be a partition key."""
    base = typing.get_args(annotation)[0]
    if base not in _SUBJECT_TYPES:
        return (
            f"parameter {name!r} is the partition key but its type is "
            f"{type_repr(base)}; a partition key is a str, int or UUID (one value "
            "has one spelling, so it always lands in the same partition)"
        )
    if subject is not None:
        return (
            f"parameter {name!r} is both Personal and the partition key; a sealed "
            "value cannot be hashed to a partition: key by an id that is not "
            "personal data"
        )
    return None


def _subject_problem(params: list[ParamSpec]) -> str | None:
    """Why the subjects of the personal parameters of PARAMS cannot work."""
    by_name = {p.name: p for p in params}
    for p in params:
        if p.personal is None or p.personal == AGGREGATE_SUBJECT:
            continue
        subject = by_name.get(p.personal)
        if subject is None:
            known = ", ".join(by_name)
            return (
                f"parameter {p.name!r} is Personal({p.personal!r}), but the operation "
                f"has no parameter {p.personal!r} (it has: {known}); name the "
                "parameter whose value is the subject, or write Personal() for the "
                "aggregate id"
            )
        if subject.personal is not None and subject.personal != subject.name:
            return (
                f"the subject of parameter {p.name!r}, {subject.name!r}, is itself "
                "personal with another subject; a subject is either a plain "
                "parameter or its own subject (Personal("
                f"{subject.name!r}))"
            )
        base = subject.annotation
        if typing.get_origin(base) is typing.Annotated:
            base = typing.get_args(base)[0]
        if base not in _SUBJECT_TYPES:
            return (
                f"the subject of parameter {p.name!r}, {subject.name!r}, is "
                f"{type_repr(base)}; a subject is a str, int or UUID (one value has "
                "one spelling, so it always names the same key)"
            )
    return None


def _is_literal_default(value: object) -> bool:
    return value is None or type(value) in (bool, int, float, str, bytes)
