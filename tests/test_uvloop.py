"""Publishing and consuming on uvloop's event loop (uvicorn's, where installed).

uvloop's transports are not ``asyncio.Transport`` instances, which the direct
connection once insisted on: every publish then failed its handshake and timed
out. Real Redis: the direct connection is not used on fakeredis.
"""

from __future__ import annotations

import asyncio

import pytest

import backbone
from conftest import eventually
from contracts.shipment_tracking_gen import (
    shipment_tracking_producer,
    subscribe_shipment_tracking,
)
from helpers import Recorder, moment

uvloop = pytest.importorskip("uvloop")

URI = "on-uvloop"


async def publish_and_consume(url: str, environment: str) -> list[int]:
    bus = backbone.Backbone(url, environment=environment, command_timeout=5.0)
    try:
        assert bus.direct is not None  # the connection under test
        producer = shipment_tracking_producer(bus, URI)
        await producer.packing("a@x.com", 1, moment())
        async with producer.batch() as batch:
            batch.packing("b@x.com", 2, moment())
            batch.packing("c@x.com", 3, moment())
        await asyncio.gather(
            *(producer.packing("d@x.com", n, moment()) for n in (4, 5))
        )
        handler = Recorder()
        async with subscribe_shipment_tracking(
            bus, URI, handler, group="g", start=backbone.StartFrom.BEGINNING
        ):
            await eventually(lambda: handler.count() == 5, message="all handled")
        return sorted(args[1] for _, args, _ in handler.calls)
    finally:
        await bus.redis.delete(
            *[k async for k in bus.redis.scan_iter(f"*{environment}*")]
        )
        await bus.close()


def test_the_direct_connection_works_on_uvloop(real_url: str, environment: str) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert "uvloop" in type(runner.get_loop()).__module__
        seen = runner.run(publish_and_consume(real_url, environment))
    assert seen == [1, 2, 3, 4, 5]
