"""Invalid arguments write nothing, however they were built, and a value skips
validation only when it has the parameter's exact type."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import uuid
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

import pydantic
import pytest

import backbone
from backbone.codec import OperationCodec, pack_value
from contracts.shipment_tracking import Product
from contracts.shipment_tracking_gen import SHIPMENT_TRACKING
from helpers import moment, user
from typed_contracts.all_types import Address, Customer
from typed_contracts.all_types_gen import ALL_TYPES

URI = "types"


@backbone.contract(name="Nested", version=1)
class Nested(Protocol):
    async def nested(
        self,
        by_name: dict[str, Address],
        maybe: Customer | None,
        several: tuple[Address, ...],
    ) -> None:
        """Models inside a dict, an Optional and a tuple."""


NESTED = backbone.bind(Nested)
ORDER_PLACED = SHIPMENT_TRACKING.operation("order_placed")
MODELS = ALL_TYPES.operation("models")
SCALARS = ALL_TYPES.operation("scalars")
TIMES = ALL_TYPES.operation("times")
NESTED_OP = NESTED.operation("nested")


M = TypeVar("M", bound=pydantic.BaseModel)


def unchecked(model: type[M], **fields: Any) -> M:
    """MODEL built with ``model_construct``: its fields are not validated at all."""
    return model.model_construct(**fields)


def address(n: int = 1) -> Address:
    return Address(street=f"{n} Main St", zip_code="01234")


def customer(n: int = 1, home: Address | None = None) -> Customer:
    return Customer(
        id=uuid.UUID(int=n),
        name=f"Customer {n}",
        since=dt.date(2020, 1, 1),
        address=home or address(n),
    )


def unvalidated_customer() -> Customer:
    return unchecked(
        Customer,
        id="not-a-uuid",
        name="C",
        since=dt.date(2020, 1, 1),
        address=address(),
    )


def changed_after_it_was_built() -> Customer:
    changed = customer()
    changed.name = 42  # type: ignore[assignment]  # models do not check assignments
    return changed


async def nothing_written(bus: backbone.Backbone) -> bool:
    keys = bus.keys(URI)
    payloads = [k async for k in bus.redis.scan_iter(match=keys.payload_prefix + "*")]
    return await bus.redis.xlen(keys.stream) == 0 and payloads == []


async def decoded(
    bus: backbone.Backbone, codec: OperationCodec, event_id: backbone.EventId
) -> list[Any]:
    """The arguments a consumer gets from the stored payload."""
    key = bus.keys(URI).payload(event_id.id)
    raws: list[Any] = await bus.redis.hmget(key, list(codec.field_names))
    return codec.decode_values(raws)


BAD_MODELS: dict[str, tuple[OperationCodec, tuple[Any, ...], str, str]] = {
    "top-level model": (
        ORDER_PLACED,
        (
            user(),
            unchecked(
                Product, id="not-an-int", name="Widget", price=decimal.Decimal("1")
            ),
            moment(),
        ),
        "product",
        "id: Input should be a valid integer",
    ),
    "missing field": (
        ORDER_PLACED,
        (user(), unchecked(Product, id=1, name="Widget"), moment()),
        "product",
        "price: Field required",
    ),
    "model in a model": (
        MODELS,
        (customer(home=unchecked(Address, street=5, zip_code="0")), []),
        "customer",
        "address.street: Input should be a valid string",
    ),
    "model in a list": (
        MODELS,
        (customer(), [customer(2), unvalidated_customer()]),
        "others",
        "1.id: Input should be a valid UUID",
    ),
    "changed after it was built": (
        MODELS,
        (changed_after_it_was_built(), []),
        "customer",
        "name: Input should be a valid string",
    ),
    "model in a dict": (
        NESTED_OP,
        ({"home": address(), "work": unchecked(Address, street="x")}, None, ()),
        "by_name",
        "work.zip_code: Field required",
    ),
    "model in an Optional": (
        NESTED_OP,
        ({}, unvalidated_customer(), ()),
        "maybe",
        "id: Input should be a valid UUID",
    ),
    "model in a tuple": (
        NESTED_OP,
        ({}, None, (address(), unchecked(Address, street=None, zip_code="1"))),
        "several",
        "1.street: Input should be a valid string",
    ),
}


@pytest.mark.parametrize("case", list(BAD_MODELS))
async def test_a_model_built_without_validation_is_refused(
    bus: backbone.Backbone, case: str
) -> None:
    """model_construct, or an assignment, skips pydantic's checks; such a value
    would be refused by every consumer, so the producer refuses it first."""
    codec, args, parameter, detail = BAD_MODELS[case]
    producer = bus.producer(URI)
    with pytest.raises(backbone.ValidationError) as caught:
        await producer.publish(codec, args)
    assert caught.value.parameter == parameter
    assert detail in str(caught.value)
    assert "model_construct" in str(caught.value)  # says what to do
    batch = backbone.Batch(producer)  # an all-or-nothing batch checks each event
    with pytest.raises(backbone.ValidationError):
        batch.add(codec, args)
    assert len(batch) == 0
    assert await nothing_written(bus)


async def test_an_unvalidated_model_the_consumer_accepts_is_published(
    bus: backbone.Backbone,
) -> None:
    valid = unchecked(Product, id=7, name="Widget", price=decimal.Decimal("2.5"))
    producer = bus.producer(URI)
    event_id = await producer.publish(ORDER_PLACED, (user(), valid, moment()))
    assert (await decoded(bus, ORDER_PLACED, event_id))[1] == Product(
        id=7, name="Widget", price=decimal.Decimal("2.5")
    )


class Level(enum.IntEnum):
    HIGH = 2


class Mode(enum.StrEnum):
    FAST = "fast"


class Text(str):
    pass


class Raw(bytes):
    pass


class Day(dt.date):
    pass


def scalars(**changes: Any) -> tuple[Any, ...]:
    values: dict[str, Any] = {
        "text": "t",
        "number": 1,
        "ratio": 0.5,
        "flag": False,
        "raw": b"r",
        "nothing": None,
    }
    values.update(changes)
    return tuple(values.values())


def times(**changes: Any) -> tuple[Any, ...]:
    values: dict[str, Any] = {
        "moment": moment(),
        "naive": dt.datetime(2026, 1, 1),
        "day": dt.date(2026, 1, 2),
        "clock": dt.time(3, 4),
        "span": dt.timedelta(seconds=5),
    }
    values.update(changes)
    return tuple(values.values())


@pytest.mark.parametrize(
    ("codec", "args", "parameter"),
    [
        (SCALARS, scalars(number=True), "number"),  # bool is an int subclass
        (SCALARS, scalars(ratio=True), "ratio"),
        (TIMES, times(day=dt.datetime(2026, 1, 2)), "day"),  # a date subclass
        (TIMES, times(naive=dt.date(2026, 1, 1)), "naive"),
        (SCALARS, scalars(raw=bytearray(b"r")), "raw"),
        (SCALARS, scalars(flag=1), "flag"),
    ],
    ids=[
        "bool-for-int",
        "bool-for-float",
        "datetime-for-date",
        "date-for-datetime",
        "bytearray-for-bytes",
        "int-for-bool",
    ],
)
async def test_a_related_type_is_refused_not_taken_for_the_exact_one(
    bus: backbone.Backbone, codec: OperationCodec, args: Sequence[Any], parameter: str
) -> None:
    """The encoder skips validation only for a value of exactly the parameter's
    type; a subclass (bool for int, datetime for date) or a relative goes through
    strict validation, which refuses it."""
    with pytest.raises(backbone.ValidationError) as caught:
        await bus.producer(URI).publish(codec, args)
    assert caught.value.parameter == parameter
    assert await nothing_written(bus)


@pytest.mark.parametrize(
    ("codec", "args", "index", "expected"),
    [
        (SCALARS, scalars(number=Level.HIGH), 1, 2),
        (SCALARS, scalars(text=Mode.FAST), 0, "fast"),
        (SCALARS, scalars(text=Text("sub")), 0, "sub"),
        (SCALARS, scalars(ratio=3), 2, 3.0),
        (SCALARS, scalars(raw=Raw(b"sub")), 4, b"sub"),
        (TIMES, times(day=Day(2026, 1, 2)), 2, dt.date(2026, 1, 2)),
    ],
    ids=[
        "IntEnum-for-int",
        "StrEnum-for-str",
        "str-subclass",
        "int-for-float",
        "bytes-subclass",
        "date-subclass",
    ],
)
async def test_what_strict_validation_accepts_is_stored_as_the_parameter_type(
    bus: backbone.Backbone,
    codec: OperationCodec,
    args: Sequence[Any],
    index: int,
    expected: object,
) -> None:
    """A subclass (IntEnum, StrEnum, str, bytes, date) or an int for a float is
    stored as the parameter's own type: the consumer gets exactly that type and
    value, never the subclass (which its process may not even know)."""
    event_id = await bus.producer(URI).publish(codec, args)
    key = bus.keys(URI).payload(event_id.id)
    raw = await bus.redis.hget(key, codec.field_names[index])
    value = (await decoded(bus, codec, event_id))[index]
    assert type(value) is type(expected)
    assert value == expected
    assert raw == pack_value(expected)
