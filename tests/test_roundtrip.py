"""Every supported parameter type survives producer -> Redis -> consumer unchanged."""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import uuid
from typing import Any

import pytest

import backbone
from conftest import eventually
from typed_contracts.all_types import Address, Color, Customer, Level
from typed_contracts.all_types_gen import all_types_producer, subscribe_all_types


class AllTypesRecorder:
    def __init__(self) -> None:
        self.calls: dict[str, tuple[Any, ...]] = {}
        self.contexts: dict[str, backbone.EventContext] = {}

    def _keep(self, op: str, context: backbone.EventContext, *args: Any) -> None:
        self.calls[op] = args
        self.contexts[op] = context

    async def scalars(
        self,
        text: str,
        number: int,
        ratio: float,
        flag: bool,
        raw: bytes,
        nothing: None,
        *,
        context: backbone.EventContext = backbone.NO_CONTEXT,
    ) -> None:
        self._keep("scalars", context, text, number, ratio, flag, raw, nothing)

    async def times(
        self,
        moment: dt.datetime,
        naive: dt.datetime,
        day: dt.date,
        clock: dt.time,
        span: dt.timedelta,
        *,
        context: backbone.EventContext = backbone.NO_CONTEXT,
    ) -> None:
        self._keep("times", context, moment, naive, day, clock, span)

    async def identifiers(
        self,
        key: uuid.UUID,
        amount: decimal.Decimal,
        color: Color,
        level: Level,
        *,
        context: backbone.EventContext = backbone.NO_CONTEXT,
    ) -> None:
        self._keep("identifiers", context, key, amount, color, level)

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
        *,
        context: backbone.EventContext = backbone.NO_CONTEXT,
    ) -> None:
        self._keep(
            "containers",
            context,
            items,
            pair,
            many,
            unique,
            frozen,
            mapping,
            by_number,
            by_key,
        )

    async def optionals(
        self,
        maybe: int | None,
        either: int | str,
        choice: str,
        limited: int,
        defaulted: str = "fallback",
        absent: int | None = None,
        *,
        context: backbone.EventContext = backbone.NO_CONTEXT,
    ) -> None:
        self._keep(
            "optionals", context, maybe, either, choice, limited, defaulted, absent
        )

    async def models(
        self,
        customer: Customer,
        others: list[Customer],
        *,
        context: backbone.EventContext = backbone.NO_CONTEXT,
    ) -> None:
        self._keep("models", context, customer, others)

    async def renamed(
        self, value: int, *, context: backbone.EventContext = backbone.NO_CONTEXT
    ) -> None:
        self._keep("renamed", context, value)

    async def empty(
        self, *, context: backbone.EventContext = backbone.NO_CONTEXT
    ) -> None:
        self._keep("empty", context)


def _customer(n: int) -> Customer:
    return Customer(
        id=uuid.UUID(int=n),
        name=f"Customer {n} \N{EM DASH} \N{SNOWMAN}",
        since=dt.date(2020, 1, n),
        address=Address(street=f"{n} Main St", zip_code="01234", tags={"home", "x"}),
        previous=[Address(street="Old Rd", zip_code="99999")],
        balance=decimal.Decimal("-12.3400"),
        color=Color.GREEN,
        blob=bytes(range(256)),
    )


EXPECTED: dict[str, tuple[Any, ...]] = {
    "scalars": (
        "h\N{LATIN SMALL LETTER E WITH ACUTE}llo\x00",
        -(2**63),
        1.5e-300,
        True,
        b"\x00\xff\xfe",
        None,
    ),
    "times": (
        dt.datetime(
            2026,
            11,
            23,
            12,
            30,
            1,
            999999,
            tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)),
        ),
        dt.datetime(1999, 12, 31, 23, 59, 59),
        dt.date(2000, 2, 29),
        dt.time(7, 8, 9, 10),
        dt.timedelta(days=-3, seconds=5, microseconds=7),
    ),
    "identifiers": (
        uuid.uuid4(),
        decimal.Decimal("123456789.000000001"),
        Color.GREEN,
        Level.HIGH,
    ),
    "containers": (
        [1, 2, 3],
        ("x", 2),
        (0.5, 1.5),
        {"a", "b"},
        frozenset({3, 4}),
        {"k": [1], "": []},
        {1: "one", -2: "minus two"},
        {uuid.UUID(int=7): Color.RED},
    ),
    "optionals": (None, "text", "b", 10, "given", 5),
    "models": (_customer(1), [_customer(2), _customer(3)]),
    "renamed": (42,),
    "empty": (),
}


async def test_every_type_round_trips(bus: backbone.Backbone) -> None:
    recorder = AllTypesRecorder()
    producer = all_types_producer(bus, "types")
    async with subscribe_all_types(
        bus, "types", recorder, group="g", start=backbone.StartFrom.BEGINNING
    ):
        ids = {}
        for op, args in EXPECTED.items():
            ids[op] = await getattr(producer, op)(*args)
        await eventually(
            lambda: len(recorder.calls) == len(EXPECTED), message="all ops"
        )
    for op, args in EXPECTED.items():
        got = recorder.calls[op]
        assert got == args, op
        for have, want in zip(got, args, strict=True):
            assert type(have) is type(want), (op, have, want)
        assert recorder.contexts[op].id == ids[op]
    models = recorder.calls["models"]
    assert models[0].address.tags == {"home", "x"}
    assert models[0].blob == bytes(range(256))
    times = recorder.calls["times"]
    assert times[0].utcoffset() == dt.timedelta(hours=5, minutes=30)
    assert times[1].tzinfo is None


async def test_defaults_fill_in_and_context_carries_metadata(
    bus: backbone.Backbone,
) -> None:
    recorder = AllTypesRecorder()
    producer = all_types_producer(bus, "types")
    async with subscribe_all_types(
        bus,
        "types",
        recorder,
        group="g",
        consumer="c-1",
        start=backbone.StartFrom.BEGINNING,
    ):
        event_id = await producer.optionals(1, 2, "a", 0)
        await producer.renamed(7)
        await eventually(lambda: len(recorder.calls) == 2, message="two events")
    assert recorder.calls["optionals"] == (1, 2, "a", 0, "fallback", None)
    context = recorder.contexts["optionals"]
    assert context.id == event_id
    assert context.operation == "optionals"
    assert context.contract == "AllTypes"
    assert context.group == "g"
    assert context.consumer == "c-1"
    assert context.delivery_count == 1
    assert context.producer == producer.producer.identity
    assert context.produced_at is not None
    assert abs(context.produced_at - event_id.timestamp) < dt.timedelta(seconds=5)
    renamed = recorder.contexts["renamed"]
    assert renamed.operation == "renamed-op"
    assert renamed.version == 2


async def test_validation_error_names_parameter_and_writes_nothing(
    bus: backbone.Backbone,
) -> None:
    producer = all_types_producer(bus, "types")
    with pytest.raises(backbone.ValidationError) as bad_choice:
        await producer.optionals(1, 2, "c", 0)  # type: ignore[arg-type]
    assert bad_choice.value.parameter == "choice"
    assert "AllTypes.optionals" in str(bad_choice.value)
    assert "nothing was published" in str(bad_choice.value)
    with pytest.raises(backbone.ValidationError) as too_big:
        await producer.optionals(1, 2, "a", 11)
    assert too_big.value.parameter == "limited"
    assert "less than or equal to 10" in str(too_big.value)
    with pytest.raises(backbone.ValidationError) as not_int:
        await producer.scalars("x", "1", 1.0, True, b"", None)  # type: ignore[arg-type]
    assert not_int.value.parameter == "number"
    assert await bus.redis.exists(bus.keys("types").stream) == 0


async def test_concurrent_publishes_keep_per_call_results(
    bus: backbone.Backbone,
) -> None:
    producer = all_types_producer(bus, "types")
    results = await asyncio.gather(*(producer.renamed(i) for i in range(500)))
    assert len({r.id for r in results}) == 500
    entries = await bus.redis.xrange(bus.keys("types").stream)
    assert [e[0].decode() for e in entries] == [r.id for r in results]
    for value, event_id in enumerate(results):
        payload = await bus.redis.hgetall(bus.keys("types").payload(event_id.id))
        assert backbone.codec.unpack_value(payload[b"value"]) == value
