"""Which annotations an event can carry, and their stable text.

A parameter's annotation decides what the codec validates and what the payload
holds; :func:`unsupported_reason` refuses what cannot travel (``Any``, a bare
``list``, a type variable...) with the change to make, and :func:`type_repr`
renders annotations the same way in messages, fingerprints and generated code.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import types
import typing
import uuid
from typing import Any, Final

import pydantic

__all__ = ["SCALAR_TYPES", "type_repr", "unsupported_reason"]

SCALAR_TYPES: Final[tuple[type, ...]] = (
    str,
    int,
    float,
    bool,
    bytes,
    type(None),
    dt.datetime,
    dt.date,
    dt.time,
    dt.timedelta,
    uuid.UUID,
    decimal.Decimal,
)
_SEQUENCE_ORIGINS: Final = (list, set, frozenset)
_LITERAL_VALUE_TYPES: Final = (str, int, bool, bytes, enum.Enum, type(None))


def unsupported_reason(tp: Any) -> str | None:
    """Why annotation TP cannot be carried in an event, or None when it can."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return unsupported_reason(args[0])
    if tp is typing.Any or tp is object:
        return (
            f"{type_repr(tp)} is not a type an event can carry; name the concrete "
            "type (consumers decode into it)"
        )
    if isinstance(tp, typing.TypeVar):
        return f"type variable {tp.__name__} is not supported; use a concrete type"
    if isinstance(tp, str | typing.ForwardRef):
        return f"annotation {tp!r} could not be resolved; import the type it names"
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            reason = unsupported_reason(arg)
            if reason is not None:
                return reason
        return None
    if origin is typing.Literal:
        for value in args:
            if not isinstance(value, _LITERAL_VALUE_TYPES):
                return f"Literal value {value!r} is not a str, int, bool, bytes or Enum"
        return None
    if origin in _SEQUENCE_ORIGINS:
        if not args:
            return (
                f"bare {origin.__name__} has no element type; write "
                f"{origin.__name__}[T], e.g. {origin.__name__}[str]"
            )
        return unsupported_reason(args[0])
    if origin is tuple:
        if not args:
            return "bare tuple has no element types; write tuple[T, ...] or tuple[A, B]"
        for arg in args:
            if arg is Ellipsis:
                continue
            reason = unsupported_reason(arg)
            if reason is not None:
                return reason
        return None
    if origin is dict:
        if not args:
            return "bare dict has no key and value types; write dict[K, V]"
        key, value = args
        if key not in (str, int, uuid.UUID) and not (
            isinstance(key, type) and issubclass(key, enum.Enum)
        ):
            return f"dict keys must be str, int, UUID or an Enum, not {type_repr(key)}"
        return unsupported_reason(value)
    if origin is not None:
        return (
            f"{type_repr(tp)} is not supported; use list, tuple, set, frozenset, dict, "
            "Optional/Union, Literal or Annotated of supported types"
        )
    if tp in (list, tuple, set, frozenset, dict):
        return f"bare {tp.__name__} has no element types; write e.g. {tp.__name__}[str]"
    if tp in SCALAR_TYPES or tp is None:
        return None
    if isinstance(tp, type):
        if issubclass(tp, enum.Enum):
            return None
        if issubclass(tp, pydantic.BaseModel):
            return None
    return (
        f"type {type_repr(tp)} is not supported; use str, int, float, bool, bytes, "
        "None, datetime, date, time, timedelta, UUID, Decimal, an Enum, a pydantic "
        "model, or list/tuple/set/dict/Optional of those"
    )


def type_repr(tp: Any, *, package: str = "") -> str:
    """A readable, stable rendering of an annotation (used in messages and hashes).

    With PACKAGE, classes of modules inside it are named relative to it
    (``.models.User``)."""
    if tp is type(None) or tp is None:
        return "None"
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        extras = ", ".join(repr(a) for a in args[1:])
        return f"Annotated[{type_repr(args[0], package=package)}, {extras}]"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_repr(a, package=package) for a in args)
    if origin is typing.Literal:
        return "Literal[" + ", ".join(repr(a) for a in args) + "]"
    if origin is not None:
        name = getattr(origin, "__name__", repr(origin))
        inner = ", ".join(
            "..." if a is Ellipsis else type_repr(a, package=package) for a in args
        )
        return f"{name}[{inner}]"
    if isinstance(tp, type):
        module = tp.__module__
        if module == "builtins":
            return tp.__qualname__
        if package and module.startswith(package + "."):
            module = module[len(package) :]
        return f"{module}.{tp.__qualname__}"
    return repr(tp)
