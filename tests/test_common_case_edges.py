"""The shortcuts of the common case against the cases they must leave alone.

A plain subscription calls its handler in the worker's loop, reads the payload
of an entry a wait saw together with the group's read, and decodes with the
operation's written-out decoder; a producer encodes with the written-out encoder
and sends the usual batch in publish.lua's short form. Each shortcut hands
anything out of the ordinary to the full path, which must then behave exactly
as it always did: a stop's cancel is not a failure, a server that is loading
fails the read (never the event), an entry's own fault is that entry's, the
wrong number of arguments is a validation error, and a batch mixing operations
and metadata writes every event as it was given.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.exceptions as rex

import backbone
from backbone.codec import pack_value
from backbone.wire import unpack
from conftest import eventually
from contracts.shipment_tracking_gen import (
    SHIPMENT_TRACKING,
    shipment_tracking_producer,
    subscribe_shipment_tracking,
)
from helpers import Flaky, moment
from test_pipelined_read import Sent, blocked_in_xread

URI = "common"
BEGINNING = backbone.StartFrom.BEGINNING
META = {"o": "packing", "v": "1", "c": "ShipmentTracking", "t": "1", "p": "test"}
PAYLOAD = {
    "email": pack_value("raw@example.com"),
    "product_id": pack_value(7),
    "time": pack_value(moment()),
}


async def pending(bus: backbone.Backbone) -> int:
    info = await bus.redis.xpending(bus.keys(URI).stream, "g")
    return int(info["pending"])


# --- the handler called in the worker's loop ----------------------------------------


@pytest.mark.parametrize("handler_timeout", [None, 30.0], ids=["in-loop", "full"])
async def test_a_stop_cancelling_a_handler_on_its_last_delivery_leaves_it_pending(
    bus: backbone.Backbone, handler_timeout: float | None
) -> None:
    # A stop's cancel is no failure of the handler's, even on the event's last
    # allowed delivery: the event is neither counted failed nor dead-lettered.
    handler = Flaky(gate=asyncio.Event())  # never opened
    options = backbone.SubscriptionOptions(
        retry=backbone.RetryPolicy(max_deliveries=1),
        handler_timeout=handler_timeout,
        shutdown_timeout=0.05,
    )
    sub = subscribe_shipment_tracking(
        bus, URI, handler, group="g", start=BEGINNING, options=options
    )
    await sub.start()
    await shipment_tracking_producer(bus, URI).packing("a@x.com", 1, moment())
    await eventually(lambda: handler.running == 1, message="the handler waits")
    await sub.stop()
    assert sub.stats.failed == 0
    assert sub.stats.dead_lettered == 0
    assert await backbone.DeadLetters(bus, URI).list() == []
    assert await pending(bus) == 1


# --- the payload read that comes with the group's read -------------------------------


class Loading:
    """Answers the first payload read (HMGET) sent through the direct connection
    with the error of a server that is loading its data set."""

    def __init__(self, bus: backbone.Backbone, monkeypatch: pytest.MonkeyPatch):
        direct = bus.direct
        assert direct is not None
        self.answered: list[list[str]] = []
        real = direct.call_many

        async def loading(commands: list[tuple[Any, ...]], **kw: Any) -> list[Any]:
            replies = await real(commands, **kw)
            names = [str(c[0]) for c in commands]
            if not self.answered and "HMGET" in names:
                self.answered.append(names)
                replies[names.index("HMGET")] = rex.BusyLoadingError(
                    "Redis is loading the dataset in memory"
                )
            return replies

        monkeypatch.setattr(direct, "call_many", loading)


@pytest.mark.parametrize("arrival", ["on an idle stream", "before the start"])
async def test_a_server_loading_fails_the_payload_read_not_the_event(
    real_bus: backbone.Backbone, monkeypatch: pytest.MonkeyPatch, arrival: str
) -> None:
    # On an idle stream the payload is read with the group's read; otherwise in
    # a second round trip. Either way LOADING is the server's state, not the
    # entry's: the read fails, the entry it delivered is recovered and handled.
    bus = real_bus
    loading = Loading(bus, monkeypatch)
    handler = Flaky()
    producer = shipment_tracking_producer(bus, URI)
    if arrival == "before the start":
        await producer.packing("a@x.com", 1, moment())
    sub = subscribe_shipment_tracking(bus, URI, handler, group="g", start=BEGINNING)
    async with sub:
        if arrival == "on an idle stream":
            await eventually(lambda: blocked_in_xread(bus), message="the wait")
            await producer.packing("a@x.com", 1, moment())
        await eventually(lambda: handler.count() == 1, message="handled")
        await eventually(lambda: sub.in_flight == 0, message="acked")
        together = arrival == "on an idle stream"
        assert ("XREADGROUP" in loading.answered[0]) is together
        assert sub.stats.recovered == 1
        assert sub.stats.dead_lettered == 0
    assert handler.duplicates() == 0
    assert await pending(bus) == 0


@pytest.fixture
async def idle(
    bus: backbone.Backbone, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[backbone.Backbone, Flaky, backbone.Subscription, Sent | None]]:
    """A subscription waiting on an empty stream (on a real server, in XREAD,
    with the commands of its direct connection recorded)."""
    sent = Sent(bus, monkeypatch) if bus.direct is not None else None
    handler = Flaky()
    # Entries added here by hand do not wake the embedded server's readers,
    # which see them when their wait runs out; a real server's XREAD wakes.
    options = backbone.SubscriptionOptions(block=0.05 if bus.embedded else 5.0)
    async with subscribe_shipment_tracking(
        bus, URI, handler, group="g", consumer="c1", start=BEGINNING, options=options
    ) as sub:
        await waiting(bus)
        yield bus, handler, sub, sent


async def waiting(bus: backbone.Backbone) -> None:
    """Until the reader waits for the stream to grow (a real server only: the
    embedded one wakes its readers without a blocking command)."""
    if bus.direct is not None:
        await eventually(lambda: blocked_in_xread(bus), message="the reader waits")


def read_apart(sent: Sent | None, command: str) -> list[list[str]]:
    """The batches holding COMMAND without the group's read."""
    if sent is None:
        return []
    return [b for b in sent.with_command(command) if "XREADGROUP" not in b]


async def test_a_payload_key_not_a_hash_is_the_fault_of_the_entry_a_wait_saw(
    idle: tuple[backbone.Backbone, Flaky, backbone.Subscription, Sent | None],
) -> None:
    bus, handler, sub, sent = idle
    stream = bus.keys(URI).stream
    await bus.redis.set(bus.keys(URI).payload("9999999999990-1"), b"\x00not a hash")
    await bus.redis.xadd(stream, META, id="9999999999990-1")
    await eventually(lambda: sub.stats.dead_lettered == 1, message="dead letter")
    (letter,) = await backbone.DeadLetters(bus, URI).list()
    assert letter.reason == backbone.DeadLetterReason.UNREADABLE_PAYLOAD
    assert "WRONGTYPE" in letter.error_message
    assert bus.keys(URI).payload("9999999999990-1") in letter.error_message
    assert sub.stats.recovered == 0  # the read went through
    assert not read_apart(sent, "HMGET")
    await waiting(bus)
    await bus.redis.hset(bus.keys(URI).payload("9999999999990-2"), mapping=PAYLOAD)
    await bus.redis.xadd(stream, META, id="9999999999990-2")
    await eventually(lambda: handler.count() == 1, message="the next event")
    assert sub.running


async def test_entries_a_wait_saw_of_another_version_or_re_driven(
    idle: tuple[backbone.Backbone, Flaky, backbone.Subscription, Sent | None],
) -> None:
    bus, handler, sub, sent = idle
    stream = bus.keys(URI).stream

    added = 0

    async def entry(fields: dict[str, str], payload: dict[str, bytes] | None) -> str:
        # The payload first, as publish.lua writes both at once.
        nonlocal added
        added += 1
        entry_id = f"9999999999990-{added}"
        if payload is not None:
            await bus.redis.hset(bus.keys(URI).payload(entry_id), mapping=payload)
        await waiting(bus)
        await bus.redis.xadd(stream, fields, id=entry_id)
        return entry_id

    # A newer version that only added a parameter: read whole, and handled.
    newer = await entry({**META, "v": "2"}, {**PAYLOAD, "added": pack_value(1)})
    await eventually(lambda: handler.count() == 1, message="the newer version")
    assert not read_apart(sent, "HGETALL")
    # Re-driven to this group: handled; to another: skipped, nothing read.
    mine = await entry({**META, "rg": "g"}, PAYLOAD)
    await eventually(lambda: handler.count() == 2, message="re-driven here")
    await entry({**META, "rg": "other"}, PAYLOAD)
    await eventually(lambda: sub.stats.skipped == 1, message="re-driven elsewhere")
    # No payload at all.
    gone = await entry(META, None)
    await eventually(lambda: sub.stats.dead_lettered == 1, message="no payload")
    (letter,) = await backbone.DeadLetters(bus, URI).list()
    assert letter.reason == backbone.DeadLetterReason.MISSING_PAYLOAD
    assert letter.event_id.id == gone
    assert handler.ids == [newer, mine]
    assert [args[1] for _, args, _ in handler.calls] == [7, 7]
    assert not read_apart(sent, "HMGET")
    assert sub.stats.recovered == 0


# --- the producer's encoder and publish.lua's two forms ------------------------------


async def test_the_wrong_number_of_arguments_is_a_validation_error(
    bus: backbone.Backbone,
) -> None:
    producer = shipment_tracking_producer(bus, URI).producer
    packing = SHIPMENT_TRACKING.operation("packing")
    for args in (("a@x.com", 1), ("a@x.com", 1, moment(), "extra"), ()):
        with pytest.raises(backbone.ValidationError) as caught:
            packing.encode(args)
        assert f"expected 3 arguments, got {len(args)}" in str(caught.value)
        with pytest.raises(backbone.ValidationError):
            await producer.publish(packing, args)
    assert await bus.redis.exists(bus.keys(URI).stream) == 0


class Fanout:
    """Handles each packing event by writing one atomic batch to URI/out that
    mixes operations, and events with and without the handled event's metadata
    (those added in an empty context are not caused by it)."""

    def __init__(self, bus: backbone.Backbone) -> None:
        self.producer = shipment_tracking_producer(bus, f"{URI}-out")
        self.cause: str | None = None
        self.written: list[backbone.EventId] = []

    async def packing(
        self,
        email: str,
        product_id: int,
        time: dt.datetime,
        *,
        context: backbone.EventContext = backbone.NO_CONTEXT,
    ) -> None:
        outside = contextvars.Context()  # no event is being handled in it
        async with self.producer.batch() as batch:
            batch.packing("caused@x.com", 1, moment())
            outside.run(batch.on_delivery, "outside@x.com", 2, moment())
            outside.run(batch.packing, "outside@x.com", 3, moment())
            batch.on_delivery("caused@x.com", 4, moment())
            batch.packing("caused@x.com", 5, moment())
            outside.run(batch.packing, "outside@x.com", 6, moment())
        self.cause = str(context.event_id)
        self.written = batch.event_ids


async def test_a_batch_mixing_operations_and_metadata_writes_each_event_as_given(
    bus: backbone.Backbone,
) -> None:
    handler = Fanout(bus)
    await shipment_tracking_producer(bus, URI).packing("in@x.com", 0, moment())
    async with subscribe_shipment_tracking(
        bus, URI, handler, group="g", start=BEGINNING, partial=True
    ):
        await eventually(lambda: len(handler.written) == 6, message="written")
    out = bus.keys(f"{URI}-out")
    entries = await bus.redis.xrange(out.stream)
    assert [e[0].decode() for e in entries] == [e.id for e in handler.written]
    seen = []
    for entry_id, fields in entries:
        payload = await bus.redis.hgetall(out.payload(entry_id.decode()))
        assert sorted(payload) == [b"email", b"product_id", b"time"]
        assert unpack(payload[b"time"]) == moment()
        seen.append(
            (
                fields[b"o"].decode(),
                unpack(payload[b"email"]),
                unpack(payload[b"product_id"]),
                fields.get(b"ca", b"").decode(),
                fields.get(b"co", b"").decode(),
            )
        )
        assert (fields[b"v"], fields[b"c"]) == (b"1", b"ShipmentTracking")
    cause = handler.cause
    assert cause is not None
    assert seen == [
        ("packing", "caused@x.com", 1, cause, cause),
        ("on_delivery", "outside@x.com", 2, "", ""),
        ("packing", "outside@x.com", 3, "", ""),
        ("on_delivery", "caused@x.com", 4, cause, cause),
        ("packing", "caused@x.com", 5, cause, cause),
        ("packing", "outside@x.com", 6, "", ""),
    ]
