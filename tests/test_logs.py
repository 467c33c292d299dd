"""Log lines: one per failure with its traceback and the event's fields (as text
and as record attributes), a DEBUG line per event handled, and nothing at all
until the application configures logging."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import backbone
from backbone.consume.decisions import Decisions
from conftest import eventually
from contracts.shipment_tracking_gen import (
    shipment_tracking_producer,
    subscribe_shipment_tracking,
)
from helpers import Flaky, Recorder, moment, write_bad_inputs

ROOT = Path(__file__).resolve().parent.parent
URI = "orders"
RETRY = backbone.RetryPolicy(max_deliveries=2, initial_backoff=0.01, max_backoff=0.02)


def subscribe(bus: backbone.Backbone, handler: object) -> backbone.Subscription:
    return subscribe_shipment_tracking(
        bus,
        URI,
        handler,  # type: ignore[call-overload]
        group="g",
        consumer="c1",
        start=backbone.StartFrom.BEGINNING,
        options=backbone.SubscriptionOptions(retry=RETRY, claim_idle=30.0),
    )


def records(
    caplog: pytest.LogCaptureFixture, level: int, text: str
) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.levelno == level and r.name == "backbone.consumer" and text in r.message
    ]


def fields(record: logging.LogRecord) -> dict[str, Any]:
    names = ("event_id", "operation", "group", "consumer", "stream", "delivery_count")
    return {name: getattr(record, name, "missing") for name in names}


async def test_each_failure_is_one_line_with_traceback_and_event_fields(
    bus: backbone.Backbone, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="backbone")
    stream = bus.keys(URI).stream
    event = await shipment_tracking_producer(bus, URI).packing("a@x.com", 1, moment())
    async with subscribe(bus, Flaky(failures=99)) as sub:
        await eventually(lambda: sub.stats.dead_lettered == 1, message="dead letter")
    expected = {
        "event_id": event.id,
        "operation": "packing",
        "group": "g",
        "consumer": "c1",
        "stream": stream,
    }
    # The first delivery fails and will be retried: WARNING, with its traceback.
    (retried,) = records(caplog, logging.WARNING, "failed on")
    assert fields(retried) == {**expected, "delivery_count": 1}
    assert retried.exc_info is not None
    assert retried.exc_info[0] is RuntimeError
    assert "delivery 1 of 2" in retried.message
    assert event.id in retried.message
    assert "packing" in retried.message
    assert getattr(retried, "handler", None) == "Flaky.packing"
    # The last one is dead-lettered: ERROR, with the handler's traceback.
    (final,) = records(caplog, logging.ERROR, "dead-lettered")
    assert fields(final) == {**expected, "delivery_count": 2}
    assert getattr(final, "reason", None) == "handler-error"
    assert final.exc_info is not None
    assert final.exc_info[0] is RuntimeError
    assert "Traceback" in caplog.text
    assert "attempt 2 of" in caplog.text
    # One line per failure: nothing else at WARNING or above.
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 2


async def test_bad_input_is_dead_lettered_at_warning_without_traceback(
    bus: backbone.Backbone, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="backbone")
    bad = await write_bad_inputs(bus, URI)
    async with subscribe(bus, Recorder()) as sub:
        await eventually(
            lambda: sub.stats.dead_lettered == len(bad), message="dead letters"
        )
    lines = records(caplog, logging.WARNING, "dead-lettered")
    assert {getattr(r, "reason", None): r.event_id for r in lines} == {  # type: ignore[attr-defined]
        reason: entry for reason, entry in bad.items()
    }
    for record in lines:
        assert record.exc_info is None
        assert getattr(record, "group", None) == "g"
    malformed = next(r for r in lines if r.event_id == bad["malformed-entry"])  # type: ignore[attr-defined]
    assert getattr(malformed, "operation", "missing") is None
    unknown = next(r for r in lines if r.event_id == bad["unknown-operation"])  # type: ignore[attr-defined]
    assert getattr(unknown, "operation", None) == "returned"


async def test_each_event_handled_is_a_debug_line_with_its_duration(
    bus: backbone.Backbone, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="backbone")
    producer = shipment_tracking_producer(bus, URI)
    ids = [(await producer.packing("a@x.com", i, moment())).id for i in range(3)]
    async with subscribe(bus, Recorder()) as sub:
        await eventually(lambda: sub.stats.handled == 3, message="handled")
    lines = records(caplog, logging.DEBUG, " handled ")
    assert [r.event_id for r in lines] == ids  # type: ignore[attr-defined]
    for record in lines:
        assert getattr(record, "operation", None) == "packing"
        assert isinstance(getattr(record, "duration_ms", None), float)
        assert " ms" in record.message
    wrote = [r for r in caplog.records if r.name == "backbone.producer"]
    assert [getattr(r, "events", None) for r in wrote] == [1, 1, 1]


async def test_an_unexpected_error_is_logged_with_its_traceback(
    bus: backbone.Backbone,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(Decisions, "plan", broken)
    event = await shipment_tracking_producer(bus, URI).packing("a@x.com", 1, moment())
    async with subscribe(bus, Recorder()):
        await eventually(
            lambda: bool(records(caplog, logging.ERROR, "unexpected error")),
            message="the error logged",
        )
    record = records(caplog, logging.ERROR, "unexpected error")[0]
    assert record.exc_info is not None
    assert record.exc_info[0] is ZeroDivisionError
    assert fields(record)["event_id"] == event.id
    assert fields(record)["operation"] == "packing"


def test_the_backbone_logger_has_a_null_handler() -> None:
    handlers = logging.getLogger("backbone").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)


QUIET = textwrap.dedent(
    """
    import asyncio, logging, sys
    sys.path.insert(0, "tests")
    import backbone
    from contracts.shipment_tracking_gen import (
        shipment_tracking_producer, subscribe_shipment_tracking,
    )
    from conftest import eventually
    from helpers import Flaky, moment

    async def main():
        async with backbone.Backbone("memory://") as bus:
            retry = backbone.RetryPolicy(max_deliveries=2, initial_backoff=0.01)
            options = backbone.SubscriptionOptions(retry=retry)
            start = backbone.StartFrom.BEGINNING
            async with subscribe_shipment_tracking(
                bus, "orders", Flaky(failures=9), group="g", start=start,
                options=options,
            ) as sub:
                await shipment_tracking_producer(bus, "orders").packing(
                    "a@example.com", 1, moment()
                )
                await eventually(lambda: sub.stats.dead_lettered == 1)
        print("root handlers", logging.getLogger().handlers)

    asyncio.run(main())
    """
)


def test_nothing_is_printed_until_the_application_configures_logging() -> None:
    done = subprocess.run(
        [sys.executable, "-c", QUIET],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.strip() == "root handlers []"
