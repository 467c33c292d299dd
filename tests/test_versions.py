"""Operation versions: upcasting on read, newer events read by older consumers,
deprecated and retired versions shared through Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import decimal
import warnings
from collections.abc import Mapping
from typing import Any, Protocol

import pytest

import backbone
from backbone import contract, operation
from backbone.errors import ContractError, DeprecatedVersionWarning, RetiredVersionError
from conftest import eventually

# --- three versions of one contract --------------------------------------------------


@contract(name="Parcels")
class ParcelsV1(Protocol):
    async def shipped(self, email: str, weight: int) -> None:
        """WEIGHT in kilograms."""

    async def noted(self, text: str) -> None: ...


def shipped_1_to_2(payload: dict[str, Any]) -> dict[str, Any]:
    payload["grams"] = payload.pop("weight") * 1000
    return payload


@contract(name="Parcels")
class ParcelsV2(Protocol):
    @operation(version=2, upcasters={1: shipped_1_to_2})
    async def shipped(self, email: str, grams: int, express: bool = False) -> None: ...

    # A compatible change: a parameter with a default, no upcaster needed.
    @operation(version=2)
    async def noted(self, text: str, pinned: bool = False) -> None: ...


def shipped_2_to_3(payload: dict[str, Any]) -> Mapping[str, Any]:
    return {
        "recipient": payload["email"].lower(),
        "grams": decimal.Decimal(payload["grams"]),
        "express": payload.get("express", False),
    }


@contract(name="Parcels")
class ParcelsV3(Protocol):
    @operation(
        version=3,
        upcasters={1: shipped_1_to_2, 2: shipped_2_to_3},
        deprecated={2},
        retired={1},
    )
    async def shipped(
        self, recipient: str, grams: decimal.Decimal, express: bool = False
    ) -> None: ...

    @operation(version=2)
    async def noted(self, text: str, pinned: bool = False) -> None: ...


FROM_START = backbone.StartFrom.BEGINNING
V1 = backbone.bind(ParcelsV1)
V2 = backbone.bind(ParcelsV2)
V3 = backbone.bind(ParcelsV3)


def dispatcher(compiled: backbone.CompiledContract, handler: object) -> Any:
    class Routes(backbone.Dispatcher[Any]):
        contract = compiled

        def routes(self, handler: Any) -> Mapping[str, backbone.Route]:
            return {
                op.name: backbone.route(
                    compiled.codecs[op.name], getattr(handler, op.method)
                )
                for op in compiled.spec.operations
            }

    return Routes(handler)


@dataclasses.dataclass
class Seen:
    calls: list[tuple[str, tuple[Any, ...]]] = dataclasses.field(default_factory=list)


class HandlerV3(Seen):
    async def shipped(
        self, recipient: str, grams: decimal.Decimal, express: bool = False
    ) -> None:
        self.calls.append(("shipped", (recipient, grams, express)))

    async def noted(self, text: str, pinned: bool = False) -> None:
        self.calls.append(("noted", (text, pinned)))


class HandlerV1(Seen):
    async def shipped(self, email: str, weight: int) -> None:
        self.calls.append(("shipped", (email, weight)))

    async def noted(self, text: str) -> None:
        self.calls.append(("noted", (text,)))


async def publish_all_versions(bus: backbone.Backbone, uri: str) -> None:
    p1, p2, p3 = (bus.producer(uri, c.spec) for c in (V1, V2, V3))
    await p1.publish(V1.operation("shipped"), ("Ann@Example.org", 2))
    await p1.publish(V1.operation("noted"), ("fragile",))
    await p2.publish(V2.operation("shipped"), ("Bob@Example.org", 1500, True))
    await p2.publish(V2.operation("noted"), ("pinned", True))
    await p3.publish(
        V3.operation("shipped"), ("cy@example.org", decimal.Decimal(7), False)
    )


EXPECTED_V3 = [
    ("shipped", ("ann@example.org", decimal.Decimal(2000), False)),
    ("noted", ("fragile", False)),
    ("shipped", ("bob@example.org", decimal.Decimal(1500), True)),
    ("noted", ("pinned", True)),
    ("shipped", ("cy@example.org", decimal.Decimal(7), False)),
]


async def dead_letters(bus: backbone.Backbone, uri: str) -> list[dict[str, str]]:
    entries: Any = await bus.redis.xrange(bus.keys(uri).dead_letters)
    return [
        {k.decode(): v.decode(errors="replace") for k, v in fields.items()}
        for _, fields in entries
    ]


# --- reading ------------------------------------------------------------------------


async def test_older_events_reach_a_newer_handler_in_the_current_shape(
    bus: backbone.Backbone,
) -> None:
    await publish_all_versions(bus, "parcels")
    handler = HandlerV3()
    async with bus.subscribe(
        "parcels", dispatcher(V3, handler), group="g", start=FROM_START
    ):
        await eventually(lambda: len(handler.calls) == 5, message="5 events")
    assert handler.calls == EXPECTED_V3
    assert await dead_letters(bus, "parcels") == []


async def test_a_compatible_newer_event_is_handled_by_an_older_consumer_and_an_incompatible_one_dead_lettered(  # noqa: E501
    bus: backbone.Backbone,
) -> None:
    p2 = bus.producer("parcels", V2.spec)
    await p2.publish(V2.operation("shipped"), ("bob@example.org", 1500, True))
    await p2.publish(V2.operation("noted"), ("pinned", True))
    handler = HandlerV1()
    async with bus.subscribe(
        "parcels", dispatcher(V1, handler), group="old", start=FROM_START
    ) as sub:
        await eventually(lambda: sub.stats.dead_lettered == 1 and handler.calls != [])
    assert handler.calls == [("noted", ("pinned",))]
    [letter] = await dead_letters(bus, "parcels")
    assert letter["r"] == "newer-version"
    assert "version 2" in letter["em"]
    assert "knows version 1" in letter["em"]
    assert "regenerate" in letter["em"]


def text_to_body(payload: dict[str, Any]) -> dict[str, Any]:
    payload["body"] = payload.pop("text")
    return payload


@contract(name="Parcels")
class ParcelsRenamed(Protocol):
    async def shipped(self, email: str, weight: int) -> None: ...

    @operation(version=2, upcasters={1: text_to_body})
    async def noted(self, body: str) -> None: ...


async def test_a_newer_event_none_of_whose_fields_an_older_consumer_knows_is_newer_version(  # noqa: E501
    bus: backbone.Backbone,
) -> None:
    """Its payload hash exists, under names the older consumer does not know:
    `newer-version`, not `missing-payload`; a truly missing hash stays
    `missing-payload`, whatever the version."""
    renamed = backbone.bind(ParcelsRenamed)
    producer = bus.producer("parcels", renamed.spec)
    await producer.publish(renamed.operation("noted"), ("renamed",))
    gone = await producer.publish(renamed.operation("noted"), ("deleted",))
    await bus.redis.delete(bus.keys("parcels").payload(gone.id))
    stream = bus.keys("parcels").stream
    await bus.redis.xgroup_create(stream, "old", id="0")
    await bus.redis.xreadgroup("old", "w1", {stream: ">"}, count=1)  # one claimed
    handler = HandlerV1()
    async with bus.subscribe(
        "parcels", dispatcher(V1, handler), group="old", consumer="w1"
    ) as sub:
        await eventually(lambda: sub.stats.dead_lettered == 2)
    assert handler.calls == []
    letters = await dead_letters(bus, "parcels")
    assert [letter["r"] for letter in letters] == ["newer-version", "missing-payload"]
    assert "version 2" in letters[0]["em"]
    summary = await backbone.replay(bus, "parcels", dispatcher(V1, HandlerV1()))
    assert (summary.replayed, summary.undecodable) == (0, 2)


async def test_recovered_and_claimed_old_events_are_upcast_too(
    bus: backbone.Backbone,
) -> None:
    await publish_all_versions(bus, "parcels")
    stream = bus.keys("parcels").stream
    await bus.redis.xgroup_create(stream, "g", id="0")
    # A consumer took every event and died before acknowledging any of them.
    await bus.redis.xreadgroup("g", "w1", {stream: ">"})
    handler = HandlerV3()
    async with bus.subscribe(
        "parcels", dispatcher(V3, handler), group="g", start=FROM_START, consumer="w1"
    ):
        await eventually(lambda: len(handler.calls) == 5, message="recovery")
    assert handler.calls == EXPECTED_V3


async def test_a_failing_upcaster_dead_letters_its_event_and_the_loop_goes_on(
    bus: backbone.Backbone,
) -> None:
    p1 = bus.producer("parcels", V1.spec)
    # The upcaster from version 2 calls .lower() on the email: a number breaks it.
    raw = bus.producer("parcels", V2.spec)
    await raw.publish(V2.operation("shipped"), ("ok@example.org", 1, False))
    await bus.redis.hset(
        bus.keys("parcels").payload(
            (await p1.publish(V1.operation("noted"), ("x",))).id
        ),
        "text",
        b"\xc1",  # never valid msgpack
    )
    bad = await p1.publish(V1.operation("shipped"), ("a@example.org", 1))
    await bus.redis.hset(bus.keys("parcels").payload(bad.id), "email", b"\x05")
    await p1.publish(V1.operation("shipped"), ("last@example.org", 3))
    handler = HandlerV3()
    async with bus.subscribe(
        "parcels", dispatcher(V3, handler), group="g", start=FROM_START
    ) as sub:
        await eventually(
            lambda: len(handler.calls) == 2 and sub.stats.dead_lettered == 2
        )
    assert handler.calls == [
        ("shipped", ("ok@example.org", decimal.Decimal(1), False)),
        ("shipped", ("last@example.org", decimal.Decimal(3000), False)),
    ]
    reasons = sorted(letter["r"] for letter in await dead_letters(bus, "parcels"))
    assert reasons == ["undecodable", "upcast-failed"]
    upcast = next(
        letter
        for letter in await dead_letters(bus, "parcels")
        if letter["r"] == "upcast-failed"
    )
    assert "shipped_2_to_3" in upcast["em"]
    assert "version 2 to 3" in upcast["em"]


async def test_an_upcaster_that_returns_no_mapping_is_named(
    bus: backbone.Backbone,
) -> None:
    def broken(payload: dict[str, Any]) -> Any:
        return ["not", "a", "mapping"]

    @contract(name="Parcels")
    class Broken(Protocol):
        @operation(version=2, upcasters={1: broken})
        async def noted(self, text: str) -> None: ...

    compiled = backbone.bind(Broken)
    await bus.producer("parcels", V1.spec).publish(V1.operation("noted"), ("x",))

    class Notes:
        async def noted(self, text: str) -> None: ...

    async with bus.subscribe(
        "parcels", dispatcher(compiled, Notes()), group="g", start=FROM_START
    ) as sub:
        await eventually(lambda: sub.stats.dead_lettered == 1)
    [letter] = await dead_letters(bus, "parcels")
    assert letter["r"] == "upcast-failed"
    assert "returned list, not a mapping" in letter["em"]


async def test_replay_passes_old_events_through_the_upcasters(
    bus: backbone.Backbone,
) -> None:
    await publish_all_versions(bus, "parcels")
    handler = HandlerV3()
    summary = await backbone.replay(bus, "parcels", dispatcher(V3, handler))
    assert summary.replayed == 5
    assert handler.calls == EXPECTED_V3


@dataclasses.dataclass
class Load:
    grams: decimal.Decimal = decimal.Decimal(0)
    recipients: list[str] = dataclasses.field(default_factory=list)


class TruckV1(backbone.Aggregate[Load]):
    contract = V1

    def __init__(self) -> None:
        super().__init__(Load())

    def apply_shipped(self, email: str, weight: int) -> None:
        self.state.grams += weight * 1000

    def apply_noted(self, text: str) -> None: ...


class TruckV3(backbone.Aggregate[Load]):
    contract = V3

    def __init__(self) -> None:
        super().__init__(Load())

    def apply_shipped(
        self, recipient: str, grams: decimal.Decimal, express: bool = False
    ) -> None:
        self.state.grams += grams
        self.state.recipients.append(recipient)

    def apply_noted(self, text: str, pinned: bool = False) -> None: ...


async def test_an_aggregate_loads_old_events_through_the_upcasters(
    bus: backbone.Backbone,
) -> None:
    old = backbone.Repository(bus, "trucks", TruckV1)
    truck = await old.load("t1")
    truck.record(V1.operation("shipped"), ("Ann@Example.org", 2))
    truck.record(V1.operation("shipped"), ("Bob@Example.org", 1))
    await old.save(truck)
    new = backbone.Repository(bus, "trucks", TruckV3)
    loaded = await new.load("t1")
    assert loaded.version == 2
    assert loaded.state == Load(
        decimal.Decimal(3000), ["ann@example.org", "bob@example.org"]
    )


# --- deprecated and retired versions ---------------------------------------------


async def test_a_retired_version_is_refused_and_a_deprecated_one_warns(
    bus: backbone.Backbone,
) -> None:
    p1 = bus.producer("parcels", V1.spec)
    p2 = bus.producer("parcels", V2.spec)
    first = await p1.publish(V1.operation("shipped"), ("ann@example.org", 2))
    # A consumer on the newest contract starts: its marks reach every producer.
    handler = HandlerV3()
    async with bus.subscribe(
        "parcels", dispatcher(V3, handler), group="g", start=FROM_START
    ):
        await eventually(lambda: len(handler.calls) == 1)
        keys = bus.keys("parcels")
        assert await bus.redis.hgetall(keys.versions) == {
            b"Parcels.shipped:1": b"retired",
            b"Parcels.shipped:2": b"deprecated",
        }
        length = await bus.redis.xlen(keys.stream)
        with pytest.raises(
            RetiredVersionError, match=r"Parcels.shipped version 1 is retired"
        ) as caught:
            await p1.publish(V1.operation("shipped"), ("bob@example.org", 1))
        assert caught.value.marks == ("Parcels.shipped:1",)

        # A batch holding a retired version writes nothing at all.
        async def mixed_batch() -> None:
            async with backbone.Batch(p1) as batch:
                batch.add(V1.operation("noted"), ("fine on its own",))
                batch.add(V1.operation("shipped"), ("bob@example.org", 1))

        with pytest.raises(RetiredVersionError):
            await mixed_batch()
        assert await bus.redis.xlen(keys.stream) == length
        # Version 1 of another operation is not retired.
        await p1.publish(V1.operation("noted"), ("still fine",))
        with pytest.warns(DeprecatedVersionWarning, match="Parcels.shipped version 2"):
            await p2.publish(V2.operation("shipped"), ("cy@example.org", 5, False))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            # Once per producer: the second one is quiet.
            await p2.publish(V2.operation("shipped"), ("di@example.org", 6, False))
        await eventually(lambda: len(handler.calls) == 4)
    # Stored version 1 events stay readable: the first one was handled.
    assert handler.calls[0] == (
        "shipped",
        ("ann@example.org", decimal.Decimal(2000), False),
    )
    last: Any = await bus.redis.xrevrange(keys.stream, count=1)
    assert first.id < last[0][0].decode()
    # No payload hash without its entry: the refused batches left nothing behind.
    payloads = [
        key async for key in bus.redis.scan_iter(match=keys.payload_prefix + "*")
    ]
    assert len(payloads) == await bus.redis.xlen(keys.stream)


async def test_marks_only_go_up_whatever_order_processes_start_in(
    bus: backbone.Backbone,
) -> None:
    keys = bus.keys("parcels")
    newest = bus.producer("parcels", V3.spec)
    await newest.publish(V3.operation("noted"), ("x", False))
    # A process whose contract only deprecated version 1 starts later.

    @contract(name="Parcels")
    class Middle(Protocol):
        @operation(version=2, deprecated={1})
        async def shipped(self, email: str, grams: int) -> None: ...

    middle = backbone.bind(Middle)
    with pytest.warns(DeprecatedVersionWarning) as caught:
        await bus.producer("parcels", middle.spec).publish(
            middle.operation("shipped"), ("a@example.org", 1)
        )
    # The warning points at the caller's line, not inside backbone.
    assert caught[0].filename == __file__
    assert await bus.redis.hget(keys.versions, "Parcels.shipped:1") == b"retired"
    with pytest.raises(RetiredVersionError):
        await bus.producer("parcels", V1.spec).publish(
            V1.operation("shipped"), ("a@example.org", 1)
        )


async def test_a_retired_version_is_refused_for_an_aggregate_too(
    bus: backbone.Backbone,
) -> None:
    await bus.producer("trucks", V3.spec).publish(V3.operation("noted"), ("x", False))
    old = backbone.Repository(bus, "trucks", TruckV1)
    truck = await old.load("t1")
    truck.record(V1.operation("shipped"), ("ann@example.org", 2))
    with pytest.raises(RetiredVersionError):
        await old.save(truck)
    assert await bus.redis.llen(bus.keys("trucks").aggregate("t1")) == 0
    assert await bus.redis.xlen(bus.keys("trucks").stream) == 1


async def test_a_marks_key_holding_garbage_does_not_stop_publishing(
    bus: backbone.Backbone,
) -> None:
    keys = bus.keys("parcels")
    await bus.redis.set(keys.versions, "garbage")
    await bus.producer("parcels", V3.spec).publish(V3.operation("noted"), ("x", False))
    assert await bus.redis.xlen(keys.stream) == 1


async def test_marks_that_could_not_be_recorded_are_recorded_by_the_next_write(
    bus: backbone.Backbone,
) -> None:
    keys = bus.keys("parcels")
    await bus.redis.set(keys.versions, "garbage")
    new = bus.producer("parcels", V3.spec)
    await new.publish(V3.operation("noted"), ("x", False))  # marks refused
    await bus.redis.delete(keys.versions)  # repaired
    await new.publish(V3.operation("noted"), ("y", False))
    assert await bus.redis.hgetall(keys.versions) == {
        b"Parcels.shipped:1": b"retired",
        b"Parcels.shipped:2": b"deprecated",
    }
    with pytest.raises(RetiredVersionError):
        await bus.producer("parcels", V1.spec).publish(
            V1.operation("shipped"), ("ann@example.org", 2)
        )


async def test_a_retired_event_fails_alone_among_events_published_concurrently(
    bus: backbone.Backbone,
) -> None:
    await bus.producer("parcels", V3.spec).publish(V3.operation("noted"), ("x", False))
    old = bus.producer("parcels", V1.spec)
    # The first call is sent at once; the next ones wait for it and go together.
    outcomes = await asyncio.gather(
        old.publish(V1.operation("noted"), ("first",)),
        old.publish(V1.operation("shipped"), ("ann@example.org", 2)),
        old.publish(V1.operation("noted"), ("second",)),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], RetiredVersionError)
    assert isinstance(outcomes[0], backbone.EventId)
    assert isinstance(outcomes[2], backbone.EventId)  # noted:1 is not retired
    assert await bus.redis.xlen(bus.keys("parcels").stream) == 3


# --- declaring versions ------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"version": 2, "upcasters": {2: shipped_1_to_2}},
            "upcaster 2 is not an older",
        ),
        (
            {"version": 2, "upcasters": {0: shipped_1_to_2}},
            "upcaster 0 is not an older",
        ),
        ({"version": 2, "upcasters": {1: "nope"}}, "not a function"),
        ({"version": 3, "deprecated": {3}}, "3 is not an older version"),
        (
            {"version": 3, "retired": {1}, "deprecated": {1}},
            "both deprecated and retired",
        ),
        ({"version": 1, "retired": {1}}, "use an int from 1 to 0"),
    ],
)
def test_bad_version_declarations_are_refused_naming_the_fix(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ContractError, match=message):
        operation(**options)


def test_the_spec_records_versions_upcasters_and_marks() -> None:
    shipped = V3.spec.operation("shipped")
    assert shipped.version == 3
    assert shipped.upcasters == {1: shipped_1_to_2, 2: shipped_2_to_3}
    assert shipped.deprecated == {2}
    assert shipped.retired == {1}
    assert [shipped.status_of(v) for v in (1, 2, 3, 4)] == [
        "retired",
        "deprecated",
        "current",
        "newer",
    ]
    # Marking versions changes what generated code was made from.
    assert V2.spec.fingerprint != V3.spec.fingerprint
