"""Traces and metrics (backbone.telemetry), on both backends: one trace from a
publish to its handling across two connections, error spans and failure counts,
chains of events, odd trace contexts, the Prometheus endpoint, consumer lag, and
backbone without the telemetry extra."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import backbone
from backbone import telemetry
from conftest import eventually, free_port
from contracts.shipment_tracking_gen import (
    shipment_tracking_producer,
    subscribe_shipment_tracking,
)
from helpers import Flaky, Recorder, moment, product, user, write_bad_inputs

ROOT = Path(__file__).resolve().parent.parent
URI = "orders"
FAST_RETRY = backbone.RetryPolicy(
    max_deliveries=2, initial_backoff=0.01, max_backoff=0.02
)


@dataclasses.dataclass
class Otel:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    tracer_provider: TracerProvider

    def finished(self, kind: SpanKind) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if s.kind is kind]

    def points(self, name: str, stream: str) -> dict[tuple[str, ...], float]:
        """Attribute values (minus the stream) -> value (a count for histograms)."""
        found: dict[tuple[str, ...], float] = {}
        data = self.metrics.get_metrics_data()
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name != name:
                        continue
                    for point in metric.data.data_points:
                        attributes = dict(point.attributes or {})
                        if attributes.pop("stream", None) != stream:
                            continue
                        value = getattr(point, "value", None)
                        key = tuple(str(v) for v in attributes.values())
                        found[key] = (
                            getattr(point, "count", 0) if value is None else value
                        )
        return found


@pytest.fixture
def otel() -> Iterator[Otel]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    telemetry.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        yield Otel(spans, reader, tracer_provider)
    finally:
        telemetry.uninstrument()
        tracer_provider.shutdown()
        meter_provider.shutdown()


@contextlib.asynccontextmanager
async def other_connection(bus: backbone.Backbone) -> AsyncIterator[backbone.Backbone]:
    """A second connection to BUS's Redis: it shares nothing with BUS in process
    memory (an embedded Redis is reached through a client of its own)."""
    other = backbone.Backbone(bus.url, environment=bus.environment)
    if bus.embedded:
        import fakeredis

        await other.redis.aclose()
        server = bus.redis.connection_pool.connection_kwargs["server"]
        other.redis = fakeredis.FakeAsyncRedis(server=server)
    try:
        yield other
    finally:
        await other.close()


def subscribe(
    bus: backbone.Backbone, handler: object, **options: Any
) -> backbone.Subscription:
    # block is short: the embedded Redis of another connection wakes no reader
    settings: dict[str, Any] = {"retry": FAST_RETRY, "block": 0.05, **options}
    return subscribe_shipment_tracking(
        bus,
        URI,
        handler,  # type: ignore[arg-type]
        group="g",
        consumer="c1",
        start=backbone.StartFrom.BEGINNING,
        options=backbone.SubscriptionOptions(**settings),
    )


# --- traces -----------------------------------------------------------------------


async def test_a_publish_and_its_handling_are_one_trace_across_connections(
    bus: backbone.Backbone, otel: Otel
) -> None:
    stream = bus.keys(URI).stream
    handler = Recorder()
    async with other_connection(bus) as consumer_bus, subscribe(consumer_bus, handler):
        event = await shipment_tracking_producer(bus, URI).packing(
            "a@example.com", 1, moment()
        )
        await eventually(lambda: handler.count() == 1, message="handled")
    (sent,) = otel.finished(SpanKind.PRODUCER)
    (handled,) = otel.finished(SpanKind.CONSUMER)
    assert sent.context is not None
    assert handled.context is not None
    assert handled.parent is not None
    assert handled.parent.span_id == sent.context.span_id
    assert handled.context.trace_id == sent.context.trace_id
    assert sent.name == f"send {stream}"
    assert handled.name == f"process {stream}"
    assert sent.attributes is not None
    assert handled.attributes is not None
    assert sent.attributes["messaging.system"] == "redis"
    assert sent.attributes["messaging.destination.name"] == stream
    assert sent.attributes["messaging.operation.type"] == "send"
    assert sent.attributes["messaging.message.id"] == event.id
    assert handled.attributes["messaging.operation.type"] == "process"
    assert handled.attributes["messaging.message.id"] == event.id
    assert handled.attributes["messaging.consumer.group.name"] == "g"
    assert handled.attributes["backbone.operation"] == "packing"
    assert handled.status.status_code is StatusCode.UNSET
    # The context travels in the entry's `tp` field, as a W3C traceparent.
    ((_, fields),) = await bus.redis.xrange(stream)
    assert fields[b"tp"].startswith(f"00-{sent.context.trace_id:032x}-".encode())
    assert otel.points("backbone.events.published", stream) == {("packing",): 1}
    assert otel.points("backbone.events.handled", stream) == {("g", "packing"): 1}
    assert otel.points("backbone.handler.duration", stream) == {("g", "packing"): 1}


async def test_a_failing_handler_gives_error_spans_and_counts_its_failures(
    bus: backbone.Backbone, otel: Otel
) -> None:
    stream = bus.keys(URI).stream
    handler = Flaky(failures=99)
    await shipment_tracking_producer(bus, URI).packing("a@example.com", 1, moment())
    async with subscribe(bus, handler) as sub:
        await eventually(lambda: sub.stats.dead_lettered == 1, message="dead letter")
    attempts = otel.finished(SpanKind.CONSUMER)
    assert len(attempts) == 2
    for span in attempts:
        assert span.status.status_code is StatusCode.ERROR
        assert [e.name for e in span.events] == ["exception"]
        assert span.events[0].attributes is not None
        assert span.events[0].attributes["exception.type"] == "RuntimeError"
    assert [s.attributes["backbone.delivery_count"] for s in attempts] == [1, 2]  # type: ignore[index]
    assert otel.points("backbone.events.failed", stream) == {("g", "packing"): 2}
    assert otel.points("backbone.events.retried", stream) == {("g", "packing"): 1}
    assert otel.points("backbone.events.dead_lettered", stream) == {
        ("g", "packing", "handler-error"): 1
    }
    assert otel.points("backbone.events.handled", stream) == {}


class Chain(Recorder):
    """Handles order_placed by publishing packing, through its own connection."""

    def __init__(self, producer: Any) -> None:
        super().__init__("chain")
        self.producer = producer

    async def order_placed(  # type: ignore[override]
        self, user: Any, product: Any, time: Any, *, context: Any = None
    ) -> None:
        await self.producer.packing(user.email, product.id, time)
        self._record("order_placed", (user, product, time), context)


async def test_an_event_published_by_a_handler_joins_the_handled_events_trace(
    bus: backbone.Backbone, otel: Otel
) -> None:
    tracer = otel.tracer_provider.get_tracer("test")
    async with other_connection(bus) as consumer_bus:
        handler = Chain(shipment_tracking_producer(consumer_bus, URI))
        async with subscribe(consumer_bus, handler):
            with tracer.start_as_current_span("request") as request:
                await shipment_tracking_producer(bus, URI).order_placed(
                    user(), product(), moment()
                )
            await eventually(lambda: handler.count() == 2, message="both handled")
    sends = sorted(otel.finished(SpanKind.PRODUCER), key=lambda s: s.start_time or 0)
    processes = sorted(
        otel.finished(SpanKind.CONSUMER), key=lambda s: s.start_time or 0
    )
    assert [s.attributes["backbone.operation"] for s in sends] == [  # type: ignore[index]
        "order_placed",
        "packing",
    ]
    chain = [request, sends[0], processes[0], sends[1], processes[1]]
    trace_id = request.get_span_context().trace_id
    for parent, child in itertools.pairwise(chain):
        assert child.parent is not None
        assert child.parent.span_id == parent.get_span_context().span_id
        assert child.get_span_context().trace_id == trace_id


@pytest.mark.parametrize(
    "carried",
    [
        b"00-not-a-trace-context",
        b"\xff\xfe\x00",
        b"00-00000000000000000000000000000000-0000000000000000-01",
        b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 x",
    ],
)
async def test_a_malformed_trace_context_never_fails_the_event(
    bus: backbone.Backbone, otel: Otel, carried: bytes
) -> None:
    from backbone.codec import pack_value

    keys = bus.keys(URI)
    meta = {"o": "packing", "v": "1", "c": "ShipmentTracking", "t": "1", "p": "raw"}
    entry = (await bus.redis.xadd(keys.stream, {**meta, "tp": carried})).decode()
    payload = {"email": "a@example.com", "product_id": 1, "time": moment()}
    await bus.redis.hset(
        keys.payload(entry), mapping={k: pack_value(v) for k, v in payload.items()}
    )
    handler = Recorder()
    async with subscribe(bus, handler):
        await eventually(lambda: handler.count() == 1, message="handled")
    (handled,) = otel.finished(SpanKind.CONSUMER)
    assert handled.parent is None  # a new trace
    assert handled.get_span_context().is_valid
    assert handled.status.status_code is StatusCode.UNSET


def test_the_trace_context_field_carries_traceparent_and_tracestate() -> None:
    from opentelemetry import trace

    from backbone.telemetry.tracing import carried_context, parse_carried

    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    field = f"{parent} vendor=a b,other=x"  # a tracestate value may hold a space
    extracted = parse_carried(field.encode())
    assert extracted is not None
    span = trace.get_current_span(extracted)
    context = span.get_span_context()
    assert f"{context.trace_id:032x}" == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert dict(context.trace_state) == {"vendor": "a b", "other": "x"}
    assert carried_context(span) == field
    assert parse_carried(parent) is not None
    assert parse_carried(None) is None
    assert parse_carried(b"") is None


async def test_batches_trace_each_event_and_a_discarded_batch_ends_its_spans(
    bus: backbone.Backbone, otel: Otel
) -> None:
    producer = shipment_tracking_producer(bus, URI)
    async with producer.batch() as batch:
        batch.packing("a@example.com", 1, moment())
        batch.packing("b@example.com", 2, moment())
    with contextlib.suppress(KeyError):
        async with producer.batch() as discarded:
            discarded.packing("c@example.com", 3, moment())
            raise KeyError("changed my mind")
    spans = otel.finished(SpanKind.PRODUCER)
    assert len(spans) == 3
    assert [(s.attributes or {}).get("messaging.message.id") for s in spans] == [
        *(event.id for event in batch.event_ids),
        None,
    ]
    assert [s.status.status_code for s in spans] == [
        StatusCode.UNSET,
        StatusCode.UNSET,
        StatusCode.ERROR,
    ]


async def test_without_telemetry_entries_carry_no_trace_context(
    bus: backbone.Backbone,
) -> None:
    assert not telemetry.is_enabled()
    await shipment_tracking_producer(bus, URI).packing("a@example.com", 1, moment())
    ((_, fields),) = await bus.redis.xrange(bus.keys(URI).stream)
    assert b"tp" not in fields


# --- metrics ----------------------------------------------------------------------

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture
def metrics_server() -> Iterator[telemetry.MetricsServer]:
    server = telemetry.serve_metrics(free_port(), registry=CollectorRegistry())
    try:
        yield server
    finally:
        server.close()
        telemetry.uninstrument()


async def test_the_prometheus_endpoint_counts_published_handled_and_failed(
    bus: backbone.Backbone, metrics_server: telemetry.MetricsServer
) -> None:
    assert metrics_server.addr == "127.0.0.1"
    stream = bus.keys(URI).stream
    handler = Flaky(failures=1)  # each event fails once, then succeeds
    producer = shipment_tracking_producer(bus, URI)
    for index in range(3):
        await producer.packing(f"u{index}@example.com", index, moment())
    bad = await write_bad_inputs(bus, URI)  # raw entries: dead-lettered
    async with subscribe(bus, handler) as sub:
        await eventually(
            lambda: sub.stats.handled == 3 and sub.stats.dead_lettered == len(bad),
            message="all handled or dead-lettered",
        )
        samples = await asyncio.to_thread(scrape, metrics_server.url)

    def value(name: str, **labels: str) -> float | None:
        return samples.get((name, tuple(sorted({**labels, "stream": stream}.items()))))

    packing = {"group": "g", "operation": "packing"}
    assert value("backbone_events_published_total", operation="packing") == 3
    assert value("backbone_events_handled_total", **packing) == 3
    assert value("backbone_events_failed_total", **packing) == 3
    assert value("backbone_events_retried_total", **packing) == 3
    assert value("backbone_handler_duration_seconds_count", **packing) == 6
    dead = "backbone_events_dead_lettered_total"
    assert value(dead, **packing, reason="missing-payload") == 1
    assert value(dead, **packing, reason="invalid-payload") == 1
    assert value(dead, group="g", operation="returned", reason="unknown-operation") == 1
    assert value(dead, group="g", operation="", reason="malformed-entry") == 1
    assert sum(v for (name, _), v in samples.items() if name == dead) == len(bad)
    assert value("backbone_consumer_lag", group="g") == 0


async def test_consumer_lag_and_events_in_flight_are_gauges(
    bus: backbone.Backbone, metrics_server: telemetry.MetricsServer
) -> None:
    stream = bus.keys(URI).stream
    gate = asyncio.Event()
    handler = Flaky(gate=gate)
    producer = shipment_tracking_producer(bus, URI)
    for index in range(5):
        await producer.packing(f"u{index}@example.com", index, moment())
    lag_key = ("backbone_consumer_lag", (("group", "g"), ("stream", stream)))
    flying_key = (
        "backbone_consumer_in_flight",
        (("consumer", "c1"), ("group", "g"), ("stream", stream)),
    )

    async def gauges(lag: int, flying: int) -> bool:
        samples = await asyncio.to_thread(scrape, metrics_server.url)
        return samples.get(lag_key) == lag and samples.get(flying_key) == flying

    async with subscribe(bus, handler, max_in_flight=1):
        await eventually(lambda: gauges(4, 1), message="one read, four waiting")
        gate.set()
        await eventually(lambda: gauges(0, 0), message="all handled and acked")
    samples = await asyncio.to_thread(scrape, metrics_server.url)
    assert lag_key not in samples  # a stopped subscription is not reported


async def test_opentelemetry_gauges_report_the_lag(
    bus: backbone.Backbone, otel: Otel
) -> None:
    stream = bus.keys(URI).stream
    gate = asyncio.Event()
    producer = shipment_tracking_producer(bus, URI)
    for index in range(3):
        await producer.packing(f"u{index}@example.com", index, moment())

    async def lag_is(value: int) -> bool:
        # Collected from another thread, as a periodic reader does.
        points = await asyncio.to_thread(otel.points, "backbone.consumer.lag", stream)
        return points == {("g",): value}

    async with subscribe(bus, Flaky(gate=gate), max_in_flight=1):
        await eventually(lambda: lag_is(2), message="lag 2")
        gate.set()
        await eventually(lambda: lag_is(0), message="lag 0")
        # On the loop's own thread the last value read is reported.
        assert otel.points("backbone.consumer.lag", stream) == {("g",): 0}


def test_serve_metrics_names_the_port_it_cannot_bind() -> None:
    first = telemetry.serve_metrics(0, registry=CollectorRegistry())
    try:
        with pytest.raises(backbone.ConfigurationError, match=str(first.port)):
            telemetry.serve_metrics(first.port, registry=CollectorRegistry())
    finally:
        first.close()
        telemetry.uninstrument()


# --- without the extra ------------------------------------------------------------


def test_instrument_without_opentelemetry_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [m for m in sys.modules if m.split(".")[0] == "opentelemetry"]:
        monkeypatch.setitem(sys.modules, name, None)  # type: ignore[arg-type]
    with pytest.raises(backbone.ConfigurationError, match=r"backbone\[telemetry\]"):
        telemetry.instrument()
    assert not telemetry.is_enabled()


WITHOUT_EXTRA = textwrap.dedent(
    """
    import asyncio, sys

    class Missing:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("opentelemetry", "prometheus_client"):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Missing())

    import backbone
    from backbone import telemetry
    from contracts.shipment_tracking_gen import (
        shipment_tracking_producer, subscribe_shipment_tracking,
    )
    sys.path.insert(0, "tests")
    from helpers import Recorder, moment

    async def main():
        for call in (telemetry.instrument, lambda: telemetry.serve_metrics(0)):
            try:
                call()
            except backbone.ConfigurationError as exc:
                assert "backbone[telemetry]" in str(exc), exc
            else:
                raise AssertionError("no error")
        async with backbone.Backbone("memory://") as bus:
            handler = Recorder()
            start = backbone.StartFrom.BEGINNING
            async with subscribe_shipment_tracking(
                bus, "orders", handler, group="g", start=start
            ):
                await shipment_tracking_producer(bus, "orders").packing(
                    "a@example.com", 1, moment()
                )
                while handler.count() < 1:
                    await handler.changed.wait()
                    handler.changed.clear()
        loaded = [m for m in sys.modules if m.startswith(("opentelemetry", "prom"))]
        print("handled", handler.count(), loaded)

    asyncio.run(main())
    """
)


def test_backbone_runs_without_the_telemetry_extra() -> None:
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRA],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "handled 1 []"
