"""Subscriptions in a service: several in one process stop on one signal, a
cancelled wait on completion leaves the subscription alone, and handlers are
checked against their contract when subscribing, not when the first event
fails."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import backbone
from conftest import eventually
from contracts.shipment_tracking_gen import (
    shipment_tracking_producer,
    subscribe_shipment_tracking,
)
from helpers import Flaky, moment, product, user

ROOT = Path(__file__).resolve().parent.parent
URI = "lifecycle"
BEGINNING = backbone.StartFrom.BEGINNING

SERVICE = textwrap.dedent(
    """
    import asyncio, sys
    import backbone
    from contracts.shipment_tracking_gen import subscribe_shipment_tracking
    sys.path.insert(0, "tests")
    from helpers import Recorder

    async def main(url, environment):
        async with backbone.Backbone(url, environment=environment) as bus:
            subs = [
                await subscribe_shipment_tracking(
                    bus, "lifecycle", Recorder(), group=group,
                    options=backbone.SubscriptionOptions(block=0.5),
                )
                for group in ("one", "two")
            ]
            for sub in subs:
                sub.stop_on_signals()
            print("ready", flush=True)
            await asyncio.gather(*(sub.completion for sub in subs))
            print("stopped", [sub.running for sub in subs], flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_one_signal_stops_every_subscription_of_a_process(
    url: str, environment: str, sig: signal.Signals
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", SERVICE, url, environment],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "BACKBONE_REDIS_URL"},
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        process.send_signal(sig)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert "stopped [False, False]" in out


async def test_a_cancelled_wait_on_completion_leaves_the_subscription_running(
    bus: backbone.Backbone, caplog: pytest.LogCaptureFixture
) -> None:
    handler = Flaky()
    sub = await subscribe_shipment_tracking(
        bus, URI, handler, group="g", start=BEGINNING
    )
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(sub.completion, 0.05)
    sub.completion.cancel()  # what a cancelled `await sub.completion` does
    assert sub.running
    producer = shipment_tracking_producer(bus, URI)
    await producer.packing("a@example.com", 1, moment())
    await eventually(lambda: handler.count() == 1, message="still handling")
    with caplog.at_level(logging.ERROR, logger="backbone"):
        await sub.stop()
    assert sub.completion.done()
    assert sub.completion.exception() is None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# --- handlers checked at subscribe time ---------------------------------------------


class WrongArity:
    async def order_placed(self, user: object, product: object) -> None: ...
    async def packing(self, email: str, product_id: int, time: dt.datetime) -> None: ...
    async def on_delivery(self, email: str, product_id: int, time: object) -> None: ...
    async def on_received(self, email: str, product_id: int, time: object) -> None: ...


class ExtraRequiredKeyword(WrongArity):
    async def order_placed(  # type: ignore[override]
        self, user: object, product: object, time: object, *, tenant: str
    ) -> None: ...


class NotAsync(WrongArity):
    def order_placed(self, user: object, product: object, time: object) -> None:  # type: ignore[override]
        ...


@pytest.mark.parametrize(
    ("handler", "words"),
    [
        (WrongArity(), ["WrongArity.order_placed", "too many positional arguments"]),
        (ExtraRequiredKeyword(), ["order_placed", "tenant"]),
        (NotAsync(), ["must be `async def`", "order_placed"]),
    ],
)
async def test_a_handler_that_cannot_take_its_events_is_refused_at_subscribe(
    bus: backbone.Backbone, handler: object, words: list[str]
) -> None:
    with pytest.raises(backbone.ContractError) as caught:
        subscribe_shipment_tracking(bus, URI, handler, group="g")  # type: ignore[arg-type]
    for word in words:
        assert word in str(caught.value)
    assert await bus.redis.exists(bus.keys(URI).stream) == 0  # nothing started


class OnlyPacking:
    def __init__(self) -> None:
        self.seen: list[int] = []

    async def packing(self, email: str, product_id: int, time: dt.datetime) -> None:
        self.seen.append(product_id)


async def test_a_partial_handler_must_be_asked_for(bus: backbone.Backbone) -> None:
    with pytest.raises(backbone.ContractError, match="partial=True"):
        subscribe_shipment_tracking(bus, URI, OnlyPacking(), group="g")  # type: ignore[arg-type]


async def test_a_partial_handler_skips_and_counts_the_other_operations(
    bus: backbone.Backbone,
) -> None:
    producer = shipment_tracking_producer(bus, URI)
    await producer.order_placed(user(1), product(1), moment())
    await producer.packing("a@example.com", 7, moment())
    await producer.on_delivery("a@example.com", 7, moment())
    await producer.packing("b@example.com", 8, moment())
    handler = OnlyPacking()
    async with subscribe_shipment_tracking(
        bus, URI, handler, group="g", start=BEGINNING, partial=True
    ) as sub:
        await eventually(lambda: handler.seen == [7, 8], message="packing handled")
        await eventually(lambda: sub.stats.unimplemented == 2, message="others")
        await eventually(lambda: sub.in_flight == 0, message="acked")
    info = await bus.redis.xpending(bus.keys(URI).stream, "g")
    assert info["pending"] == 0
    assert sub.stats.dead_lettered == 0


async def test_a_partial_handler_is_still_checked(bus: backbone.Backbone) -> None:
    class BadPacking:
        async def packing(self, email: str) -> None: ...

    with pytest.raises(backbone.ContractError, match="packing"):
        subscribe_shipment_tracking(bus, URI, BadPacking(), group="g", partial=True)
    with pytest.raises(backbone.ContractError, match="implements no operation"):
        subscribe_shipment_tracking(bus, URI, object(), group="g", partial=True)


# --- handlers that do odd things --------------------------------------------------


class Odd(Exception):
    pass


class OddBase(BaseException):
    pass


def raising(kind: str) -> type[Flaky]:
    class Raising(Flaky):
        async def packing(
            self,
            email: str,
            product_id: int,
            time: dt.datetime,
            *,
            context: backbone.EventContext = backbone.NO_CONTEXT,
        ) -> None:
            self.attempts[context.id.id] += 1
            if kind == "generator-exit":
                raise GeneratorExit
            if kind == "base-exception":
                raise OddBase("not an Exception")
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            await asyncio.sleep(1)  # the cancel lands here

    return Raising


@pytest.mark.parametrize("kind", ["generator-exit", "base-exception", "self-cancel"])
async def test_a_handler_raising_anything_fails_like_any_handler(
    bus: backbone.Backbone, kind: str
) -> None:
    """Its event is retried and dead-lettered, and the worker lives on: events
    after it are handled (a dead worker would hold the window for ever)."""
    handler = raising(kind)()
    producer = shipment_tracking_producer(bus, URI)
    bad = await producer.packing("a@example.com", 1, moment())
    options = backbone.SubscriptionOptions(
        retry=backbone.RetryPolicy(max_deliveries=2, initial_backoff=0.001)
    )
    async with subscribe_shipment_tracking(
        bus, URI, handler, group="g", start=BEGINNING, options=options
    ) as sub:
        await eventually(lambda: sub.stats.dead_lettered == 1, message="dead letter")
        await producer.order_placed(user(1), product(1), moment())
        await eventually(lambda: handler.count() == 1, message="next event handled")
        assert sub.running
    assert handler.attempts[bad.id] == 2
    assert sub.stats.failed == 2
    (letter,) = await backbone.DeadLetters(bus, URI).list()
    assert letter.event_id == bad


async def test_stop_called_by_a_handler_does_not_wait_for_itself(
    bus: backbone.Backbone,
) -> None:
    stopped = asyncio.Event()

    class Stopper(Flaky):
        async def packing(
            self,
            email: str,
            product_id: int,
            time: dt.datetime,
            *,
            context: backbone.EventContext = backbone.NO_CONTEXT,
        ) -> None:
            await sub.stop()
            stopped.set()
            await super().packing(email, product_id, time, context=context)

    options = backbone.SubscriptionOptions(shutdown_timeout=30.0)
    sub = subscribe_shipment_tracking(
        bus, URI, Stopper(), group="g", start=BEGINNING, options=options
    )
    await sub.start()
    await shipment_tracking_producer(bus, URI).packing("a@example.com", 1, moment())
    await asyncio.wait_for(stopped.wait(), 10)
    await asyncio.wait_for(sub.completion, 10)  # well before shutdown_timeout
    info = await bus.redis.xpending(bus.keys(URI).stream, "g")
    assert info["pending"] == 0  # the handler finished and its event was acked


async def test_a_stopped_subscription_cannot_start_again(
    bus: backbone.Backbone,
) -> None:
    sub = subscribe_shipment_tracking(bus, URI, Flaky(), group="g")
    await sub.start()
    await sub.stop()
    with pytest.raises(RuntimeError, match="subscribe again"):
        await sub.start()
    never = subscribe_shipment_tracking(bus, URI, Flaky(), group="g")
    await never.stop()
    with pytest.raises(RuntimeError, match="stopped before it started"):
        await never.start()


async def test_concurrent_starts_make_one_subscription(
    bus: backbone.Backbone,
) -> None:
    handler = Flaky()
    sub = subscribe_shipment_tracking(bus, URI, handler, group="g", start=BEGINNING)
    await asyncio.gather(sub.start(), sub.start(), sub.start())
    producer = shipment_tracking_producer(bus, URI)
    for i in range(20):
        await producer.packing("a@example.com", i, moment())
    await eventually(lambda: handler.count() == 20, message="handled")
    await sub.stop()
    assert [args[1] for _, args, _ in handler.calls] == list(range(20))  # in order
    assert handler.duplicates() == 0


async def consumers(bus: backbone.Backbone) -> dict[str, int]:
    rows = await bus.redis.xinfo_consumers(bus.keys(URI).stream, "g")
    return {row["name"].decode(): int(row["pending"]) for row in rows}


async def test_a_clean_stop_leaves_no_consumer_behind(bus: backbone.Backbone) -> None:
    """Processes named <host>-<pid> would pile up in the group, one per restart:
    a consumer that holds nothing leaves its group when it stops."""
    handler = Flaky()
    producer = shipment_tracking_producer(bus, URI)
    async with subscribe_shipment_tracking(
        bus, URI, handler, group="g", consumer="gone", start=BEGINNING
    ) as sub:
        await producer.packing("a@example.com", 1, moment())
        await eventually(lambda: handler.count() == 1, message="handled")
        await eventually(lambda: sub.in_flight == 0, message="acked")
        assert "gone" in await consumers(bus)
    assert "gone" not in await consumers(bus)


async def test_a_consumer_that_holds_events_stays_with_them(
    bus: backbone.Backbone,
) -> None:
    stuck = Flaky(gate=asyncio.Event())
    options = backbone.SubscriptionOptions(shutdown_timeout=0.05)
    sub = await subscribe_shipment_tracking(
        bus, URI, stuck, group="g", consumer="holder", start=BEGINNING, options=options
    )
    await shipment_tracking_producer(bus, URI).packing("a@example.com", 1, moment())
    await eventually(lambda: stuck.running == 1, message="handler started")
    await sub.stop()
    assert (await consumers(bus)).get("holder") == 1  # its event stays pending
