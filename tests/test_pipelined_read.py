"""The plain read on the direct connection: an event arriving on an idle stream
has its payload read in the same round trip as the group's read.

Real Redis only: the direct connection is not used on fakeredis.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

import backbone
from backbone.consume.pipelined import PipelinedRead
from conftest import eventually
from contracts.shipment_tracking_gen import (
    shipment_tracking_producer,
    subscribe_shipment_tracking,
)
from helpers import moment

URI = "pipelined"


class Recorder:
    """Records the packing events it handles; implements only that one."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    async def packing(self, email: str, product_id: int, time: Any) -> None:
        self.seen.append((email, product_id))


class Sent:
    """The command batches written through the direct connection."""

    def __init__(self, bus: backbone.Backbone, monkeypatch: pytest.MonkeyPatch):
        direct = bus.direct
        assert direct is not None
        self.batches: list[list[tuple[Any, ...]]] = []
        real = direct.call_many

        async def recording(commands: list[tuple[Any, ...]], **kw: Any) -> list[Any]:
            self.batches.append(list(commands))
            return await real(commands, **kw)

        monkeypatch.setattr(direct, "call_many", recording)

    def with_command(self, name: str) -> list[list[str]]:
        """The batches holding a NAME command, each as its command names."""
        return [
            [str(c[0]) for c in batch]
            for batch in self.batches
            if any(c[0] == name for c in batch)
        ]


async def blocked_in_xread(bus: backbone.Backbone) -> bool:
    """True when some client of this server waits in a blocking XREAD."""
    clients = await bus.redis.client_list()
    return any(c.get("cmd") == "xread" and "b" in c.get("flags", "") for c in clients)


@pytest.fixture
async def idle(
    real_bus: backbone.Backbone, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[backbone.Backbone, Recorder, Sent, backbone.Subscription]]:
    """A subscription waiting on an empty stream, its reads recorded."""
    bus = real_bus
    sent = Sent(bus, monkeypatch)
    handler = Recorder()
    sub = subscribe_shipment_tracking(
        bus,
        URI,
        handler,
        group="g",
        consumer="c1",
        start=backbone.StartFrom.BEGINNING,
        partial=True,
    )
    async with sub:
        assert isinstance(sub._reader.script, PipelinedRead)
        await eventually(lambda: blocked_in_xread(bus), message="the reader waits")
        yield bus, handler, sent, sub


async def test_an_event_on_an_idle_stream_comes_with_its_payload(
    idle: tuple[backbone.Backbone, Recorder, Sent, backbone.Subscription],
) -> None:
    bus, handler, sent, _ = idle
    reads_before = len(sent.with_command("XREADGROUP"))
    await shipment_tracking_producer(bus, URI).packing("a@x.com", 7, moment())
    await eventually(lambda: handler.seen == [("a@x.com", 7)], message="handled")
    reads = sent.with_command("XREADGROUP")[reads_before:]
    assert reads[0][-2:] == ["XREADGROUP", "HMGET"]
    # No read of that payload of its own.
    assert not [b for b in sent.with_command("HMGET") if "XREADGROUP" not in b]


async def test_an_event_the_handler_does_not_take_reads_no_payload(
    idle: tuple[backbone.Backbone, Recorder, Sent, backbone.Subscription],
) -> None:
    bus, handler, sent, sub = idle
    producer = shipment_tracking_producer(bus, URI)
    await producer.on_delivery("b@x.com", 8, moment())  # not implemented
    await eventually(lambda: sub.stats.unimplemented == 1, message="passed over")
    assert not sent.with_command("HMGET")
    await eventually(lambda: blocked_in_xread(bus), message="waiting again")
    await producer.packing("c@x.com", 9, moment())
    await eventually(lambda: handler.seen == [("c@x.com", 9)], message="handled")


@pytest.mark.parametrize("hinted", ["the entry read", "another entry"])
async def test_a_hint_serves_only_the_entry_it_names(
    real_bus: backbone.Backbone, hinted: str
) -> None:
    # The wait saw one entry; the read may bring another (a consumer of the group
    # took the seen one meanwhile): each delivery gets its own entry's payload.
    bus = real_bus
    sub = subscribe_shipment_tracking(
        bus,
        URI,
        Recorder(),
        group="g",
        consumer="c1",
        start=backbone.StartFrom.BEGINNING,
        partial=True,
    )  # not started: its read is called here by hand
    script = sub._reader.script
    assert isinstance(script, PipelinedRead)
    producer = shipment_tracking_producer(bus, URI)
    stream = bus.keys(URI).stream
    seen = await producer.packing("seen@x.com", 1, moment())
    await bus.redis.xgroup_create(stream, "g", id=seen.id)
    new = await producer.packing("new@x.com", 2, moment())
    named = new if hinted == "the entry read" else seen
    ((_, fields),) = await bus.redis.xrange(stream, named.id, named.id)
    script.hint = (named.id.encode(), [x for pair in fields.items() for x in pair])
    deliveries = await script.run(10, [], sub._state.window)
    assert not isinstance(deliveries, str)
    assert [d.entry_id for d in deliveries] == [new.id]
    codec = sub._state.dispatcher.contract.codecs["packing"]
    values = deliveries[0].values
    assert values is not None
    assert codec.decode_values(values)[:2] == ["new@x.com", 2]
    assert script.hint is None  # used once


async def test_a_burst_after_a_wait_reads_every_payload(
    idle: tuple[backbone.Backbone, Recorder, Sent, backbone.Subscription],
) -> None:
    bus, handler, _, _ = idle
    producer = shipment_tracking_producer(bus, URI)
    async with producer.batch() as batch:
        for n in range(20):
            batch.packing(f"{n}@x.com", n, moment())
    await eventually(lambda: len(handler.seen) == 20, message="all handled")
    assert handler.seen == [(f"{n}@x.com", n) for n in range(20)]
