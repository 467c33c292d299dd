"""FastStream's Redis stream publisher and subscriber, as the benchmarks use them.

FastStream is optional (``pip install 'faststream[redis]'``, the ``bench`` extra):
without it its variants are reported as not run. Its message is the same event as
backbone's: a dict of the three ``packing`` parameters plus backbone's metadata
fields (o, v, c, t, p), JSON-encoded by FastStream into its own envelope in one
stream field. Its consumer is a consumer group (``StreamSub(group=, consumer=)``)
whose handler takes a pydantic model of that dict, i.e. validated typed values,
as a backbone handler gets. FastStream's per-message logging is turned off
(``logger=None``), as backbone logs nothing per event.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib.util
import inspect
import time
from typing import Any

import pydantic

from .common import CONTRACT, fresh_gc, packing_args

__all__ = [
    "AVAILABLE",
    "PackingMessage",
    "broker",
    "consume",
    "message",
    "pipeline_supported",
    "publish_pipelined",
    "publish_single",
    "version",
]

AVAILABLE = (
    importlib.util.find_spec("faststream") is not None
    and importlib.util.find_spec("faststream.redis") is not None
)


def version() -> str | None:
    if not AVAILABLE:
        return None
    import faststream  # type: ignore[import-not-found,unused-ignore]

    return str(getattr(faststream, "__version__", "?"))


class PackingMessage(pydantic.BaseModel):
    """What a FastStream handler receives: the event, validated."""

    email: str
    product_id: int
    time: dt.datetime
    o: str
    v: str
    c: str
    t: str
    p: str


def message(producer: str) -> dict[str, Any]:
    """One event as FastStream sends it (metadata stamped now, like backbone's)."""
    email, product_id, time_ = packing_args()
    return {
        "email": email,
        "product_id": product_id,
        "time": time_,
        "o": "packing",
        "v": "1",
        "c": CONTRACT,
        "t": str(time.time_ns() // 1_000_000),
        "p": producer,
    }


def broker(url: str) -> Any:
    """A RedisBroker without per-message logging."""
    from faststream.redis import (  # type: ignore[import-not-found,unused-ignore]
        RedisBroker,
    )

    return RedisBroker(url, logger=None)  # type: ignore[arg-type]


def pipeline_supported() -> bool:
    """Whether this FastStream's ``RedisBroker.publish`` takes ``pipeline=``."""
    if not AVAILABLE:
        return False
    from faststream.redis import (  # type: ignore[import-not-found,unused-ignore]
        RedisBroker,
    )

    return "pipeline" in inspect.signature(RedisBroker.publish).parameters


async def publish_single(
    fs_broker: Any, stream: str, events: int, producer: str
) -> None:
    """One ``await broker.publish(...)`` per event."""
    publish = fs_broker.publish
    for _ in range(events):
        await publish(message(producer), stream=stream)


async def publish_pipelined(
    fs_broker: Any, client: Any, stream: str, events: int, producer: str, batch: int
) -> None:
    """``broker.publish(..., pipeline=pipe)`` for BATCH events, then one
    ``pipe.execute()`` (MULTI/EXEC, like the hand-written loop)."""
    publish = fs_broker.publish
    left = events
    while left > 0:
        size = min(batch, left)
        async with client.pipeline(transaction=True) as pipe:
            for _ in range(size):
                await publish(message(producer), stream=stream, pipeline=pipe)
            await pipe.execute()
        left -= size


async def consume(
    url: str,
    stream: str,
    events: int,
    *,
    batch: bool,
    max_records: int,
    timeout: float,
    group: str = "fs",
) -> tuple[int, float]:
    """Consume EVENTS from STREAM with a new consumer GROUP (from the beginning),
    one handler call per message or per batch.

    Returns the messages handled and the seconds from starting the broker (its
    connection already open) until the handler has seen EVENTS messages and
    FastStream has acked them all (XPENDING of the group is empty).
    """
    from faststream.redis import (  # type: ignore[import-not-found,unused-ignore]
        StreamSub,
    )

    fs_broker = broker(url)
    done = asyncio.Event()
    handled = 0

    if batch:

        @fs_broker.subscriber(  # type: ignore[untyped-decorator,unused-ignore]
            stream=StreamSub(
                stream,
                group=group,
                consumer=f"{group}-1",
                batch=True,
                max_records=max_records,
                last_id="0",
            )
        )
        async def handle_batch(msgs: list[PackingMessage]) -> None:
            nonlocal handled
            handled += len(msgs)
            if handled >= events:
                done.set()

    else:

        @fs_broker.subscriber(  # type: ignore[untyped-decorator,unused-ignore]
            stream=StreamSub(
                stream,
                group=group,
                consumer=f"{group}-1",
                max_records=max_records,
                last_id="0",
            )
        )
        async def handle_one(msg: PackingMessage) -> None:
            nonlocal handled
            handled += 1
            if handled >= events:
                done.set()

    client = await fs_broker.connect()
    try:
        fresh_gc()
        started = time.perf_counter()
        await fs_broker.start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout)
        deadline = time.monotonic() + timeout
        while (await client.xpending(stream, group))["pending"]:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.001)
        return handled, time.perf_counter() - started
    finally:
        await fs_broker.stop()
