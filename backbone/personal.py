"""Personal data in contracts: the :class:`Personal` marker, and :data:`ERASED`.

A parameter that holds personal data is marked in its annotation, naming the
parameter whose value is the *subject* the data belongs to::

    async def registered(
        self,
        customer_id: str,
        email: Annotated[str, Personal("customer_id")],
    ) -> None: ...

``Annotated[str, Personal]`` (or ``Personal()``) makes the event's aggregate id
the subject: such events are recorded on an aggregate and saved through a
:class:`~backbone.Repository`. A parameter may be its own subject
(``email: Annotated[str, Personal("email")]``).

Producers store a personal value sealed with its subject's key
(:mod:`backbone.sealing`); :func:`backbone.erase` deletes that key, after which
every copy of the value reads as :data:`ERASED`: handlers, replays, aggregates
and tools see the marker, never a crash (docs/event-lifecycle.md).
"""

from __future__ import annotations

import typing
from typing import Any, Final

__all__ = [
    "AGGREGATE_SUBJECT",
    "ERASED",
    "SEALED",
    "Erased",
    "Personal",
    "Sealed",
    "personal_marker",
]

AGGREGATE_SUBJECT: Final = "@aggregate"
"""``ParamSpec.personal`` of a parameter whose subject is the aggregate id (no
parameter can have this name)."""


class Personal:
    """Marks a parameter as personal data of a subject (``Annotated[T,
    Personal("param")]``): SUBJECT names the parameter whose value (its
    ``str()``) is the subject; without it (``Personal()``, or the class itself),
    the subject is the event's aggregate id."""

    __slots__ = ("subject",)

    def __init__(self, subject: str | None = None) -> None:
        if subject is not None and (
            not isinstance(subject, str) or not subject.isidentifier()
        ):
            raise TypeError(
                f"Personal takes the name of the subject's parameter, not {subject!r}"
            )
        self.subject = subject

    def __repr__(self) -> str:
        return "Personal()" if self.subject is None else f"Personal({self.subject!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Personal) and other.subject == self.subject

    def __hash__(self) -> int:
        return hash((Personal, self.subject))


class Erased:
    """The type of :data:`ERASED`: what a personal value reads as once its
    subject was erased. Falsy; there is one instance."""

    __slots__ = ()
    _instance: Erased | None = None

    def __new__(cls) -> Erased:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "<erased>"

    __str__ = __repr__

    def __reduce__(self) -> str:
        return "ERASED"

    def __copy__(self) -> Erased:
        return self

    def __deepcopy__(self, memo: object) -> Erased:
        return self


ERASED: Final = Erased()
"""A personal value whose subject was erased (``value is backbone.ERASED``)."""


class Sealed:
    """A sealed personal value shown without being opened (by tools such as
    ``backbone tail`` and ``backbone dlq show``): ``<personal>``."""

    __slots__ = ()
    _instance: Sealed | None = None

    def __new__(cls) -> Sealed:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<personal>"

    __str__ = __repr__

    def __reduce__(self) -> str:
        return "SEALED"


SEALED: Final = Sealed()


def _is_marker(item: object) -> bool:
    return item is Personal or isinstance(item, Personal)


def personal_marker(annotation: Any) -> Personal | None:
    """The :class:`Personal` marker of a parameter's ANNOTATION (at its top
    level: ``Annotated[T, Personal(...)]``), or None.

    Raises ValueError (the message names the fix) for two markers, or a marker
    nested inside the type (``list[Annotated[str, Personal]]``): a whole
    parameter is sealed or not."""
    found: list[Personal] = []
    if typing.get_origin(annotation) is typing.Annotated:
        base, *extras = typing.get_args(annotation)
        found = [
            m if isinstance(m, Personal) else Personal()
            for m in extras
            if _is_marker(m)
        ]
        if len(found) > 1:
            raise ValueError("it is marked Personal more than once; keep one marker")
        annotation = base
    if _nested_marker(annotation):
        raise ValueError(
            "Personal marks a whole parameter, not a part of its type; write "
            "Annotated[<the whole type>, Personal(...)]"
        )
    return found[0] if found else None


def _nested_marker(annotation: Any) -> bool:
    if typing.get_origin(annotation) is typing.Annotated:
        base, *extras = typing.get_args(annotation)
        return any(_is_marker(m) for m in extras) or _nested_marker(base)
    if typing.get_origin(annotation) is typing.Literal:
        return False
    return any(_nested_marker(arg) for arg in typing.get_args(annotation))
