"""Unit tests of the consumer's stages on their own: the room, error
classification, the dead-letter schema, the handler context, the group's memory
of the last entry, and the acker."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
import redis.exceptions as rex

import backbone
from backbone.consume.acker import Acker
from backbone.consume.context import build_context
from backbone.consume.delivery import Delivery, before, logical_id
from backbone.consume.group import Group
from backbone.consume.state import SubscriptionState, SubscriptionStats, Window
from backbone.events import event_ids
from backbone.faults import Fault, classify, is_transient
from conftest import eventually
from contracts.shipment_tracking_gen import ShipmentTrackingDispatcher
from helpers import Recorder


def delivery(entry_id: str, **fields: bytes) -> Delivery:
    d = Delivery(entry_id, None, 1, 0.0)
    d.parsed = {k.encode(): v for k, v in fields.items()}
    return d


# --- the window -------------------------------------------------------------------


def test_window_counts_held_acks_and_reservations() -> None:
    window = Window(4, SubscriptionStats())
    window.reserve(2)
    assert window.read_room() == 2
    assert window.free_room() == 2
    window.release(2)
    a, b = delivery("1-0"), delivery("2-0")
    window.hold([a, b])
    assert window.in_flight == 2
    assert list(window.ready) == [a, b]
    window.queue_ack(a, noack=False)
    window.queue_ack(a, noack=False)  # once only
    window.finish(a)
    assert window.acks == ["1-0"]
    assert window.busy("1-0")
    # read.lua writes the queued acks first: they do not count against a read.
    assert window.read_room() == 3
    assert window.free_room() == 2
    batch = window.take_acks()
    assert window.sending == 1
    assert window.acks == []
    window.acks_failed(batch)
    assert window.acks == ["1-0"]
    assert window.sending == 0
    window.acks_written(window.take_acks())
    assert not window.busy("1-0")
    assert window.in_flight == 1
    assert window.stats.acked == 1
    assert window.stats.max_in_flight_seen == 2


def test_window_with_noack_queues_nothing() -> None:
    window = Window(2, SubscriptionStats())
    d = delivery("1-0")
    window.queue_ack(d, noack=True)
    assert d.acked
    assert window.acks == []


def test_window_drops_unstarted_events_on_stop() -> None:
    window = Window(4, SubscriptionStats())
    window.hold([delivery("1-0"), delivery("2-0")])
    window.drop_unstarted()
    assert window.held == {}
    assert not window.ready


async def test_window_wakes_a_waiting_reader_on_release_and_finish() -> None:
    window = Window(4, SubscriptionStats())
    d = delivery("1-0")
    window.hold([d])
    window.reserve(3)
    waiter = asyncio.ensure_future(window.wait_for_room(1))
    await eventually(lambda: window._waiting, message="waiting")
    assert not waiter.done()
    window.release(3)
    await asyncio.wait_for(waiter, 1)
    window.reserve(3)
    waiter = asyncio.ensure_future(window.wait_for_room(1))
    await eventually(lambda: window._waiting, message="waiting again")
    window.finish(d)
    await asyncio.wait_for(waiter, 1)


# --- faults -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "fault"),
    [
        (rex.ConnectionError("lost"), Fault.TRANSIENT),
        (rex.TimeoutError("slow"), Fault.TRANSIENT),
        (rex.BusyLoadingError("LOADING"), Fault.TRANSIENT),
        (rex.ResponseError("BUSY Redis is busy running a script"), Fault.TRANSIENT),
        (rex.ResponseError("LOADING Redis is loading"), Fault.TRANSIENT),
        (rex.ResponseError("MASTERDOWN Link with MASTER is down"), Fault.TRANSIENT),
        (
            rex.ResponseError("NOGROUP No such key 'x' or consumer group"),
            Fault.NO_GROUP,
        ),
        (rex.ResponseError("WRONGTYPE Operation against a key"), Fault.REFUSED),
        (rex.ResponseError("ERR Error running script"), Fault.REFUSED),
        (OSError("network unreachable"), Fault.TRANSIENT),
        (KeyError("timeout"), Fault.BUG),
        (ValueError("x"), Fault.BUG),
    ],
)
def test_errors_are_classified_once(error: BaseException, fault: Fault) -> None:
    assert classify(error) is fault
    assert is_transient(error) == (fault is Fault.TRANSIENT)


# --- dead-letter schema ----------------------------------------------------------


def test_a_dead_letter_reads_back_what_was_written() -> None:
    stream = "bb:{dev:x}"
    try:
        raise ValueError("bad value")
    except ValueError as exc:
        error = exc
    metadata = {b"o": b"packing", b"t": b"\xff"}
    letter = backbone.DeadLetter.of(
        backbone.EventId(stream, "5-1"),
        group="g",
        consumer="c",
        handler="H.packing",
        reason=backbone.DeadLetterReason.HANDLER_ERROR,
        error=error,
        deliveries=3,
        metadata=metadata,
    )
    fields = letter.to_fields(metadata)
    assert fields[-4:] == [b"m:o", b"packing", b"m:t", b"\xff"]  # bytes kept
    it = iter(fields)
    stored = {
        (k if isinstance(k, bytes) else k.encode()): v
        for k, v in zip(it, it, strict=True)
    }
    back = backbone.DeadLetter.from_entry(stream, b"9-0", stored)
    assert back.id == "9-0"
    assert back.event_id == letter.event_id
    assert (back.group, back.consumer, back.handler) == ("g", "c", "H.packing")
    assert back.reason == "handler-error" == backbone.DeadLetterReason.HANDLER_ERROR
    assert back.error_type == "ValueError"
    assert back.error_message == "bad value"
    assert "bad value" in back.traceback
    assert back.deliveries == 3
    assert back.operation == "packing"
    assert back.at is not None
    assert abs(back.at - dt.datetime.now(dt.UTC)).seconds < 60


def test_a_dead_letter_entry_of_garbage_reads_as_empty() -> None:
    letter = backbone.DeadLetter.from_entry(
        "s", "1-0", {b"n": b"many", b"at": b"9" * 30, b"junk": b"\x00"}
    )
    assert letter.deliveries == 0
    assert letter.at is None
    assert letter.reason == ""


# --- context ----------------------------------------------------------------------


class _State:
    """The little of SubscriptionState that build_context reads."""

    def __init__(self) -> None:
        self.stream = "bb:{dev:x}"
        self.group, self.consumer, self.noack = "g", "c", False
        self.options = backbone.SubscriptionOptions()
        self.lease = None


@pytest.mark.parametrize(
    ("time", "expected"),
    [
        (b"1700000000000", dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.UTC)),
        (str(10**20).encode(), None),
        (b"-99999999999999999", None),
        (b"soon", None),
        (b"", None),
    ],
)
def test_context_reads_what_it_can(time: bytes, expected: dt.datetime | None) -> None:
    d = delivery("7-0", t=time, v=b"3", c=b"C", ri=b"1-0", co=b"x")
    context = build_context(_State(), d, "packing")  # type: ignore[arg-type]
    assert context.produced_at == expected
    assert context.version == 3
    assert context.contract == "C"
    assert context.original_id == backbone.EventId("bb:{dev:x}", "1-0")
    assert context.correlation_id == "x"
    assert context.causation_id is None
    assert len(context.unreadable) == (1 if time and expected is None else 0)
    assert logical_id(d) == "1-0"


# --- group memory -------------------------------------------------------------------


async def test_group_remembers_the_newest_entry_only() -> None:
    bus = backbone.Backbone("memory://")
    state = SubscriptionState(
        bus,
        bus.keys("x"),
        ShipmentTrackingDispatcher(Recorder()),
        group="g",
        consumer="c",
        options=backbone.SubscriptionOptions(),
        name="test",
    )
    group = Group(state, "0")
    group.saw("5-0", [b"o", b"a"])
    group.saw("4-9", [b"o", b"b"])
    assert (group.last_id, group.last_fields) == ("5-0", [b"o", b"a"])
    group.saw("5-1", {b"o": b"c"})
    assert (group.last_id, group.last_fields) == ("5-1", [b"o", b"c"])
    await bus.close()


def test_before_is_the_id_just_before() -> None:
    assert before("5-3") == "5-2"
    assert before("5-0") == "4-18446744073709551615"
    assert before("0-0") == "0-0"


# --- acker ---------------------------------------------------------------------------


async def test_acker_keeps_acks_through_a_failure_and_writes_them() -> None:
    bus = backbone.Backbone("memory://")
    state = SubscriptionState(
        bus,
        bus.keys("x"),
        ShipmentTrackingDispatcher(Recorder()),
        group="g",
        consumer="c",
        options=backbone.SubscriptionOptions(),
        name="test",
    )
    calls: list[tuple[Any, ...]] = []

    async def xack(*args: Any) -> int:
        calls.append(args)
        if len(calls) == 1:
            raise rex.ConnectionError("lost")
        return len(args) - 2

    state.redis.xack = xack  # type: ignore[method-assign]
    d = delivery("1-0")
    state.window.hold([d])
    state.window.queue_ack(d, noack=False)
    acker = Acker(state)
    task = asyncio.ensure_future(acker.run())
    acker.close()
    await asyncio.wait_for(task, 5)
    assert len(calls) == 2
    assert calls[1][2:] == ("1-0",)
    assert state.window.acks == []
    assert state.stats.acked == 1
    await bus.close()


def test_event_ids_made_in_bulk_are_event_ids() -> None:
    made = event_ids("bb:{dev:orders}", ["1-0", "2-5"])
    assert made == [
        backbone.EventId("bb:{dev:orders}", "1-0"),
        backbone.EventId("bb:{dev:orders}", "2-5"),
    ]
    assert [hash(e) for e in made] == [
        hash(backbone.EventId("bb:{dev:orders}", i)) for i in ("1-0", "2-5")
    ]
    assert str(made[1]) == "bb:{dev:orders}/2-5"
    assert made[1].sequence == 5
    with pytest.raises(AttributeError):
        made[0].id = "3-0"  # type: ignore[misc]
