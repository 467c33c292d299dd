"""A contract with a parameter of every supported kind (for round-trip tests)."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import uuid
from typing import Annotated, Literal, Optional, Protocol

import pydantic

from backbone import contract, operation


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Address(pydantic.BaseModel):
    street: str
    zip_code: str
    tags: set[str] = set()


class Customer(pydantic.BaseModel):
    """A nested model: models inside models, with supported field types."""

    id: uuid.UUID
    name: str
    since: dt.date
    address: Address
    previous: list[Address] = []
    balance: decimal.Decimal = decimal.Decimal("0")
    color: Color = Color.RED
    blob: bytes = b""


@contract(name="AllTypes", version=3)
class AllTypes(Protocol):
    """Every supported parameter type, one operation per group of types."""

    async def scalars(
        self,
        text: str,
        number: int,
        ratio: float,
        flag: bool,
        raw: bytes,
        nothing: None,
    ) -> None:
        """Plain scalars."""

    async def times(
        self,
        moment: dt.datetime,
        naive: dt.datetime,
        day: dt.date,
        clock: dt.time,
        span: dt.timedelta,
    ) -> None:
        """Dates and times, aware and naive."""

    async def identifiers(
        self, key: uuid.UUID, amount: decimal.Decimal, color: Color, level: Level
    ) -> None:
        """UUID, Decimal and enums."""

    async def containers(
        self,
        items: list[int],
        pair: tuple[str, int],
        many: tuple[float, ...],
        unique: set[str],
        frozen: frozenset[int],
        mapping: dict[str, list[int]],
        by_number: dict[int, str],
        by_key: dict[uuid.UUID, Color],
    ) -> None:
        """Collections of supported types."""

    async def optionals(
        self,
        maybe: Optional[int],  # noqa: UP045 - users write Optional too
        either: int | str,
        choice: Literal["a", "b"],
        limited: Annotated[int, pydantic.Field(ge=0, le=10)],
        defaulted: str = "fallback",
        absent: int | None = None,
    ) -> None:
        """Optional, unions, literals, constraints and defaults."""

    async def models(self, customer: Customer, others: list[Customer]) -> None:
        """Pydantic models, nested."""

    @operation(name="renamed-op", version=2)
    async def renamed(self, value: int) -> None:
        """An operation with its own wire name and version."""

    async def empty(self) -> None:
        """An operation without parameters."""
