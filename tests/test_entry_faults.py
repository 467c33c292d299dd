"""Whatever one entry holds, it is that entry's problem: it is dead-lettered with
a reason (or handled, when only its metadata is odd) while the loop goes on, on
every path an entry reaches a consumer by: a read, the recovery of the
consumer's own pending entries, a claim from a dead member."""

from __future__ import annotations

import backbone
from backbone.codec import pack_value
from conftest import eventually
from contracts.shipment_tracking_gen import (
    shipment_tracking_producer,
    subscribe_shipment_tracking,
)
from helpers import Flaky, moment

URI = "faults"
BEGINNING = backbone.StartFrom.BEGINNING
META = {"o": "packing", "v": "1", "c": "ShipmentTracking", "t": "1", "p": "test"}
GOOD_PAYLOAD = {
    "email": pack_value("raw@example.com"),
    "product_id": pack_value(7),
    "time": pack_value(moment()),
}


async def publish(bus: backbone.Backbone, count: int, start: int = 0) -> list[str]:
    producer = shipment_tracking_producer(bus, URI)
    ids = [
        await producer.packing(f"u{i}@example.com", i, moment())
        for i in range(start, start + count)
    ]
    return [event_id.id for event_id in ids]


async def poison_entries(bus: backbone.Backbone) -> dict[str, str]:
    """One entry per Redis type its payload key can wrongly have: type -> id."""
    stream = bus.keys(URI).stream
    made: dict[str, str] = {}
    for kind in ("string", "list", "set", "zset", "stream"):
        entry_id = (await bus.redis.xadd(stream, META)).decode()
        key = bus.keys(URI).payload(entry_id)
        if kind == "string":
            await bus.redis.set(key, b"\x00not a hash")
        elif kind == "list":
            await bus.redis.rpush(key, "a", "b")
        elif kind == "set":
            await bus.redis.sadd(key, "a")
        elif kind == "zset":
            await bus.redis.zadd(key, {"a": 1.0})
        else:
            await bus.redis.xadd(key, {"a": "b"})
        made[kind] = entry_id
    return made


async def settled(bus: backbone.Backbone, sub: backbone.Subscription) -> bool:
    info = await bus.redis.xpending(bus.keys(URI).stream, sub.group)
    return int(info["pending"]) == 0 and sub.in_flight == 0


async def check_dead_lettered(
    bus: backbone.Backbone, sub: backbone.Subscription, poison: dict[str, str]
) -> None:
    letters = await backbone.DeadLetters(bus, URI).list(group=sub.group)
    by_event = {letter.event_id.id: letter for letter in letters}
    assert sorted(by_event) == sorted(poison.values())
    assert len(letters) == len(poison)
    for kind, entry_id in poison.items():
        letter = by_event[entry_id]
        assert letter.reason == backbone.DeadLetterReason.UNREADABLE_PAYLOAD, kind
        assert "WRONGTYPE" in letter.error_message, kind
        assert bus.keys(URI).payload(entry_id) in letter.error_message
    assert sub.running


async def test_a_payload_key_of_another_type_is_dead_lettered_on_read(
    bus: backbone.Backbone,
) -> None:
    before = await publish(bus, 2)
    poison = await poison_entries(bus)
    after = await publish(bus, 2, start=2)
    handler = Flaky()
    async with subscribe_shipment_tracking(
        bus, URI, handler, group="g", consumer="c1", start=BEGINNING
    ) as sub:
        await eventually(lambda: handler.count() == 4, message="good events")
        await eventually(lambda: settled(bus, sub), message="pending drained")
        await check_dead_lettered(bus, sub, poison)
        # The loop goes on: an event published now is handled too.
        (late,) = await publish(bus, 1, start=4)
        await eventually(lambda: handler.count() == 5, message="late event")
    assert handler.ids == [*before, *after, late]
    assert sub.stats.dead_lettered == len(poison)
    # Every entry came with its read: none needed the recovery a failed read
    # would cause.
    assert sub.stats.recovered == 0


async def test_a_poisoned_own_pending_entry_does_not_stop_a_restart(
    bus: backbone.Backbone,
) -> None:
    """An earlier run of c1 read the poison and died; c1 restarting under its
    name recovers its pending entries: the poison is dead-lettered, the rest is
    handled."""
    stream = bus.keys(URI).stream
    good = await publish(bus, 2)
    poison = await poison_entries(bus)
    await bus.redis.xgroup_create(stream, "g", id="0")
    await bus.redis.xreadgroup("g", "c1", {stream: ">"})
    handler = Flaky()
    async with subscribe_shipment_tracking(
        bus, URI, handler, group="g", consumer="c1", start=BEGINNING
    ) as sub:
        await eventually(lambda: handler.count() == 2, message="good events")
        await eventually(lambda: settled(bus, sub), message="pending drained")
        await check_dead_lettered(bus, sub, poison)
    assert sub.stats.recovered == len(good) + len(poison)
    assert sorted(handler.ids) == sorted(good)


async def test_a_poisoned_entry_claimed_from_a_dead_member_is_dead_lettered(
    bus: backbone.Backbone,
) -> None:
    stream = bus.keys(URI).stream
    good = await publish(bus, 2)
    poison = await poison_entries(bus)
    await bus.redis.xgroup_create(stream, "g", id="0")
    await bus.redis.xreadgroup("g", "dead", {stream: ">"})
    handler = Flaky()
    options = backbone.SubscriptionOptions(claim_idle=0.05, claim_interval=0.02)
    async with subscribe_shipment_tracking(
        bus, URI, handler, group="g", consumer="alive", options=options
    ) as sub:
        await eventually(lambda: handler.count() == 2, message="claimed good events")
        await eventually(lambda: settled(bus, sub), message="pending drained")
        await check_dead_lettered(bus, sub, poison)
    assert sub.stats.claimed == len(good) + len(poison)


async def test_an_unreadable_dead_letter_payload_copy_is_shown_not_raised(
    bus: backbone.Backbone,
) -> None:
    poison = await poison_entries(bus)
    async with subscribe_shipment_tracking(
        bus, URI, Flaky(), group="g", start=BEGINNING
    ) as sub:
        await eventually(lambda: settled(bus, sub), message="pending drained")
    letters = backbone.DeadLetters(bus, URI)
    for letter in await letters.list():
        payload = await letters.payload(letter)
        if letter.event_id.id == poison["string"]:
            # A string copy is unreadable as a hash; it is named, not raised.
            assert list(payload) == ["<unreadable>"]
            assert "string" in payload["<unreadable>"]


# --- metadata that cannot be read -----------------------------------------------


async def test_metadata_out_of_range_never_fails_a_valid_event(
    bus: backbone.Backbone,
) -> None:
    stream = bus.keys(URI).stream
    odd = {
        "huge-time": {**META, "t": str(10**20)},
        "negative-time": {**META, "t": str(-(10**18))},
        "text-time": {**META, "t": "yesterday"},
        "text-version": {**META, "v": "two"},
        "binary": {**META, "t": b"\xff\xfe", "c": b"\xc3\x28", "p": b"\x80"},
    }
    ids: dict[str, str] = {}
    for name, fields in odd.items():
        entry_id = (await bus.redis.xadd(stream, fields)).decode()
        await bus.redis.hset(bus.keys(URI).payload(entry_id), mapping=GOOD_PAYLOAD)
        ids[name] = entry_id
    handler = Flaky()
    async with subscribe_shipment_tracking(
        bus, URI, handler, group="g", start=BEGINNING
    ) as sub:
        await eventually(lambda: handler.count() == len(odd), message="all handled")
        await eventually(lambda: settled(bus, sub), message="pending drained")
    assert sub.stats.dead_lettered == 0
    contexts = {context.id.id: context for _, _, context in handler.calls}
    by_name = {name: contexts[entry_id] for name, entry_id in ids.items()}
    for name in ("huge-time", "negative-time", "text-time"):
        context = by_name[name]
        assert context.produced_at is None, name
        assert len(context.unreadable) == 1, name
        assert context.unreadable[0].startswith("t: producer time"), name
        assert context.version == 1
    assert by_name["text-version"].version == 1
    assert by_name["text-version"].unreadable == (
        "v: version b'two' is not a whole number",
    )
    assert by_name["text-version"].produced_at is not None
    assert by_name["binary"].produced_at is None
    assert by_name["binary"].contract == "\ufffd("


async def test_a_producer_inside_a_handler_survives_odd_metadata(
    bus: backbone.Backbone,
) -> None:
    """Publishing from a handler reads the handled event's context (causation):
    odd metadata there must not fail the handler either."""
    stream = bus.keys(URI).stream
    entry_id = (await bus.redis.xadd(stream, {**META, "t": str(10**20)})).decode()
    await bus.redis.hset(bus.keys(URI).payload(entry_id), mapping=GOOD_PAYLOAD)
    producer = shipment_tracking_producer(bus, "answers")
    answered: list[backbone.EventId] = []

    class Answering(Flaky):
        async def packing(
            self, email, product_id, time, *, context=backbone.NO_CONTEXT
        ):  # type: ignore[no-untyped-def, override]
            answered.append(await producer.on_delivery(email, product_id, time))
            await super().packing(email, product_id, time, context=context)

    handler = Answering()
    async with subscribe_shipment_tracking(
        bus, URI, handler, group="g", start=BEGINNING
    ) as sub:
        await eventually(lambda: handler.count() == 1, message="handled")
    assert sub.stats.dead_lettered == 0
    (answer,) = answered
    (entry,) = await bus.redis.xrange(answer.stream)
    assert entry[1][b"ca"] == f"{stream}/{entry_id}".encode()


async def test_an_entry_of_thousands_of_fields_is_dead_lettered(
    bus: backbone.Backbone,
) -> None:
    """Lua passes at most about 8,000 values to one command: the dead letter
    copies the first thousand fields and counts the rest."""
    stream = bus.keys(URI).stream
    wide = {f"f{i}": "x" for i in range(5000)}
    no_operation = (await bus.redis.xadd(stream, wide)).decode()
    unknown = (await bus.redis.xadd(stream, {"o": "returned", **wide})).decode()
    (good,) = await publish(bus, 1)
    handler = Flaky()
    async with subscribe_shipment_tracking(
        bus, URI, handler, group="g", start=BEGINNING
    ) as sub:
        await eventually(lambda: handler.ids == [good], message="good event")
        await eventually(lambda: settled(bus, sub), message="pending drained")
    letters = {
        letter.event_id.id: letter
        for letter in await backbone.DeadLetters(bus, URI).list()
    }
    assert letters[no_operation].reason == "malformed-entry"
    assert letters[unknown].reason == "unknown-operation"
    assert len(letters[unknown].metadata) == 1000
    assert letters[unknown].operation == "returned"
