"""The PostgreSQL archive (backbone.archive): every event once, payloads exact,
bad input dead-lettered, crashes and outages survived, against a real PostgreSQL
(tests/pg.py) and both Redis backends where a process of its own is not needed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

import msgpack
import pytest

import backbone
from backbone.archive import (
    SCHEMA_VERSION,
    ArchiveOptions,
    ArchiveSink,
    SchemaError,
    decode_archived,
    map_payload,
    migrate,
)
from backbone.archive.mapper import archived_json
from backbone.codec import pack_value
from backbone.events import as_text
from conftest import eventually
from contracts.shipment_tracking import Product, ShipmentTracking, Tier, User
from contracts.shipment_tracking_gen import (
    ShipmentTrackingAggregate,
    shipment_tracking_producer,
)
from pg import fetch, through
from tcp_proxy import TcpProxy
from typed_contracts.all_types import Address, AllTypes, Color, Customer, Level

URI = "orders"
CONTRACT = backbone.bind(ShipmentTracking)
ALL_TYPES = backbone.bind(AllTypes)


@backbone.contract(name="Pings")
class Pings(Protocol):
    async def ping(self) -> None:
        """An operation without parameters: its events have no payload hash."""


PINGS = backbone.bind(Pings)


def options(schema: str, **more: Any) -> ArchiveOptions:
    """Options for tests: short waits, so nothing waits for a default timeout."""
    base: dict[str, Any] = {
        "schema": schema,
        "block": 0.1,
        "max_latency": 0.05,
        "max_backoff": 0.1,
        "consumer": "sink-1",
        "shutdown_timeout": 5,
    }
    return ArchiveOptions(**{**base, **more})


async def archive(
    bus: backbone.Backbone, postgres_url: str, schema: str, **more: Any
) -> backbone.archive.ArchiveStats:
    sink = ArchiveSink(bus, postgres_url, [URI], options(schema, **more))
    return await asyncio.wait_for(sink.run(until_idle=True), 60)


async def rows(url: str, schema: str) -> dict[str, tuple[Any, ...]]:
    """event id -> (event_type, event_data, metadata, stream_id, version)."""
    found = await fetch(
        url,
        f"SELECT event_id, event_type, event_data, metadata, stream_id, version "
        f"FROM {schema}.events ORDER BY global_position",
    )
    return {row[0]: tuple(row[1:]) for row in found}


async def pending(bus: backbone.Backbone, group: str = "archive") -> int:
    summary = await bus.redis.xpending(bus.keys(URI).stream, group)
    return int(summary["pending"])


def event_id(bus: backbone.Backbone, entry_id: str) -> str:
    return f"{bus.environment}:{URI}/{entry_id}"


# --- the mapping ----------------------------------------------------------------


def test_every_value_round_trips_through_the_archived_json() -> None:
    sealed_body = b"\x01" + bytes(range(40))
    payload = {
        "text": "caf\u00e9",
        "with_nul": "a\x00b",
        "number": 2**64 - 1,
        "negative": -(2**63),
        "ratio": 0.1,
        "whole": 1.0,
        "huge": 1e300,
        "tiny": 1e-7,
        "nan": math.nan,
        "inf": -math.inf,
        "flag": True,
        "nothing": None,
        "raw": b"\x00\xff",
        "moment": dt.datetime(2026, 11, 25, 10, 0, tzinfo=dt.UTC),
        "naive": dt.datetime(2026, 11, 25, 10, 0, 0, 5),
        "offset": dt.datetime(2026, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=-3))),
        "day": dt.date(2026, 2, 28),
        "clock": dt.time(23, 59, 59, 999999),
        "key": uuid.UUID(int=7),
        "amount": decimal.Decimal("12.30"),
        "span": dt.timedelta(days=-1, microseconds=3),
        "items": [1, "two", [3.5, None]],
        "dollars": {"$ref": 1, "$$both": 2, "$": 3, "plain": {"$datetime": "x"}},
        "keys": {1: "one", b"\x01": "bytes", None: "none", "a\x00": "nul"},
        "sealed": msgpack.ExtType(7, sealed_body),
        "erased": backbone.ERASED,
        "other": msgpack.ExtType(42, b"?"),
    }
    raw = {name.encode(): _pack(value) for name, value in payload.items()}
    data = map_payload(raw)
    text = archived_json(data)
    assert "\\u0000" not in text
    assert "NaN" not in text
    assert "Infinity" not in text
    assert data["sealed"] == {"$sealed": "AQ" + data["sealed"]["$sealed"][2:]}
    assert data["dollars"]["$$ref"] == 1
    assert "$ref" not in data["dollars"]

    back = decode_archived(json.loads(text))
    nan = back.pop("nan")
    assert math.isnan(nan)
    payload.pop("nan")
    assert back == payload
    assert type(back["huge"]) is float
    assert type(back["whole"]) is float
    assert back["sealed"] == msgpack.ExtType(7, sealed_body)  # still sealed
    assert back["erased"] is backbone.ERASED


async def test_floats_come_back_exactly_through_jsonb(postgres_url: str) -> None:
    # jsonb stores numbers as numeric: no negative zero, no exponent.
    values = [-0.0, 0.0, 0.1, 1.0, -2.5, 1e300, 1e-7, 5e-324, 123456789.125]
    data = map_payload({str(n).encode(): pack_value(v) for n, v in enumerate(values)})
    [(stored,)] = await fetch(postgres_url, "SELECT %s::jsonb", archived_json(data))
    back = decode_archived(stored)
    for n, value in enumerate(values):
        assert type(back[str(n)]) is float, (value, back[str(n)])
        assert math.copysign(1, back[str(n)]) == math.copysign(1, value), value
        assert back[str(n)] == value


def _pack(value: Any) -> bytes:
    if value is backbone.ERASED:
        return b"\xc7\x00\x08"
    return pack_value(value)


def test_an_undecodable_value_is_refused_naming_its_field() -> None:
    for bad in (b"\xc1", b"\x92\x01", pack_value(1) + b"x", b"\xd6\x01abcd"):
        with pytest.raises(ValueError, match="field 'price' is not valid msgpack"):
            map_payload({b"price": bad})


def test_an_unknown_tag_is_refused_when_decoding() -> None:
    with pytest.raises(ValueError, match="'\\$nope' is not a tag of the archive"):
        decode_archived({"$nope": 1})


# --- archiving ------------------------------------------------------------------


async def test_fifty_thousand_events_are_archived_once_with_their_payloads(
    real_bus: backbone.Backbone, postgres_url: str, pg_schema: str
) -> None:
    producer = shipment_tracking_producer(real_bus, URI)
    start = dt.datetime(2026, 11, 25, 10, 0, tzinfo=dt.UTC)
    expected: dict[str, tuple[str, list[Any]]] = {}
    for first in range(0, 50_000, 1000):
        calls: list[tuple[str, list[Any]]] = []
        async with producer.batch() as batch:
            for n in range(first, first + 1000):
                moment = start + dt.timedelta(microseconds=n)
                if n % 2:
                    args: list[Any] = [f"u{n}@example.com", n, moment]
                    batch.packing(*args)
                    calls.append(("packing", args))
                else:
                    user = User(id=n, name=f"User {n}", email=f"u{n}@example.com")
                    if n % 4 == 0:
                        user = User(id=n, name="Gold", email="g@x.org", tier=Tier.GOLD)
                    price = decimal.Decimal(n) / 100
                    args = [user, Product(id=n, name="Widget", price=price), moment]
                    batch.order_placed(*args)
                    calls.append(("order_placed", args))
        for sent, call in zip(batch.event_ids, calls, strict=True):
            expected[event_id(real_bus, sent.id)] = call

    started = time.perf_counter()
    stats = await archive(real_bus, postgres_url, pg_schema, max_batch=2000)
    seconds = time.perf_counter() - started
    print(f"\n50,000 events archived in {seconds:.2f}s ({50_000 / seconds:,.0f}/s)")

    assert (stats.archived, stats.duplicates, stats.dead_lettered) == (50_000, 0, 0)
    archived = await rows(postgres_url, pg_schema)
    assert len(archived) == 50_000
    assert archived.keys() == expected.keys()
    for key, (operation, event_data, *_) in archived.items():
        name, args = expected[key]
        assert operation == name
        codec = CONTRACT.operation(name)
        assert codec.decode_mapping(decode_archived(event_data), "archive") == args
    [checkpoint] = await fetch(
        postgres_url,
        f"SELECT subscription_id, stream, events_archived, last_entry_id "
        f"FROM {pg_schema}.subscription_checkpoints",
    )
    last = max(expected, key=lambda k: tuple(map(int, k.rsplit("/")[1].split("-"))))
    assert checkpoint == (
        "archive",
        f"{real_bus.environment}:{URI}",
        50_000,
        last.rsplit("/")[1],
    )
    assert await pending(real_bus) == 0


async def test_every_parameter_type_comes_back_exactly(
    bus: backbone.Backbone, postgres_url: str, pg_schema: str
) -> None:
    producer = bus.producer(URI, ALL_TYPES.spec)
    customer = Customer(
        id=uuid.uuid4(),
        name="Ann",
        since=dt.date(2020, 1, 2),
        address=Address(street="1 Main St", zip_code="0100", tags={"b", "a"}),
        previous=[Address(street="old", zip_code="1")],
        balance=decimal.Decimal("-0.50"),
        color=Color.GREEN,
        blob=b"\x00\x01",
    )
    sent: dict[str, list[Any]] = {
        "scalars": ["t\u00e9xt", -5, 0.25, True, b"\xff", None],
        "times": [
            dt.datetime(2026, 11, 25, 10, 0, 0, 1, tzinfo=dt.UTC),
            dt.datetime(2026, 11, 25, 10, 0),
            dt.date(2026, 11, 25),
            dt.time(8, 30),
            dt.timedelta(hours=-5, microseconds=1),
        ],
        "identifiers": [
            uuid.UUID(int=1),
            decimal.Decimal("1E-7"),
            Color.RED,
            Level.HIGH,
        ],
        "containers": [
            [1, 2],
            ("a", 1),
            (1.5, 2.5),
            {"x", "y"},
            frozenset({1}),
            {"$a": [1], "b": []},
            {1: "one", -2: "minus two"},
            {uuid.UUID(int=2): Color.GREEN},
        ],
        "optionals": [None, "x", "b", 10, "given", 3],
        "models": [customer, [customer, customer]],
        "renamed-op": [7],
        "empty": [],
    }
    ids = {
        name: await producer.publish(ALL_TYPES.operation(name), args)
        for name, args in sent.items()
    }

    # The contract tells the sink that `empty` has no payload hash to miss.
    stats = await archive(bus, postgres_url, pg_schema, contracts=[AllTypes])
    assert stats.archived == len(sent)
    archived = await rows(postgres_url, pg_schema)
    for name, args in sent.items():
        operation, event_data, *_ = archived[event_id(bus, ids[name].id)]
        codec = ALL_TYPES.operation(operation)
        decoded = codec.decode_mapping(decode_archived(event_data), "archive")
        assert decoded == list(args), name


async def test_bad_input_is_dead_lettered_and_never_inserted(
    bus: backbone.Backbone, postgres_url: str, pg_schema: str
) -> None:
    stream = bus.keys(URI).stream
    meta = {"o": "packing", "v": "1", "c": "ShipmentTracking", "t": "1", "p": "t"}
    good = {
        "email": pack_value("a@example.com"),
        "product_id": pack_value(1),
        "time": pack_value(dt.datetime(2026, 1, 1, tzinfo=dt.UTC)),
    }

    async def entry(fields: Mapping[str, str | bytes], payload: Any = None) -> str:
        entry_id = as_text(await bus.redis.xadd(stream, dict[Any, Any](fields)))
        key = bus.keys(URI).payload(entry_id)
        if isinstance(payload, dict):
            await bus.redis.hset(key, mapping=payload)
        elif payload is not None:
            await bus.redis.set(key, payload)
        return entry_id

    first_good = await entry(meta, good)
    bad = {
        await entry(meta, {**good, "product_id": b"\xc1"}): "undecodable",
        await entry(meta, {**good, "time": b"\xd6\x01abcd"}): "undecodable",
        await entry(meta): "missing-payload",
        await entry(meta, "a string"): "unreadable-payload",
        await entry({"x": "y"}): "malformed-entry",
        await entry({**meta, "o": b"\xff"}, good): "malformed-entry",
    }
    last_good = await entry(meta, good)

    stats = await archive(bus, postgres_url, pg_schema)

    archived = await rows(postgres_url, pg_schema)
    assert set(archived) == {event_id(bus, first_good), event_id(bus, last_good)}
    assert stats.dead_lettered == len(bad)
    letters = await backbone.DeadLetters(bus, URI).list(group="archive")
    assert {letter.event_id.id: letter.reason for letter in letters} == bad
    assert all(letter.handler == "backbone.archive" for letter in letters)
    assert await pending(bus) == 0


async def test_a_row_postgresql_refuses_is_dead_lettered_and_the_rest_written(
    bus: backbone.Backbone, postgres_url: str, pg_schema: str
) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(
        postgres_url, autocommit=True
    ) as conn:
        await migrate(conn, pg_schema)
        # A rule of the database's own that one event breaks.
        await conn.execute(
            f"ALTER TABLE {pg_schema}.events ADD CONSTRAINT no_poison "
            "CHECK (event_type <> 'poison')".encode()
        )
    producer = shipment_tracking_producer(bus, URI)
    for n in range(20):
        await producer.packing(f"u{n}@example.com", n, PAST)
    meta = {"o": "poison", "c": "ShipmentTracking", "t": "1"}
    poison = as_text(await bus.redis.xadd(bus.keys(URI).stream, dict[Any, Any](meta)))
    await bus.redis.hset(bus.keys(URI).payload(poison), "n", pack_value(1))
    for n in range(20, 40):
        await producer.packing(f"u{n}@example.com", n, PAST)

    stats = await archive(bus, postgres_url, pg_schema, max_batch=64)

    assert (stats.archived, stats.dead_lettered) == (40, 1)
    assert len(await rows(postgres_url, pg_schema)) == 40
    [letter] = await backbone.DeadLetters(bus, URI).list(group="archive")
    assert (letter.event_id.id, letter.reason) == (poison, "invalid-payload")
    assert "PostgreSQL refused the row" in letter.error_message
    assert "no_poison" in letter.error_message
    assert await pending(bus) == 0


async def test_a_redelivered_event_is_never_a_second_row(
    bus: backbone.Backbone, postgres_url: str, pg_schema: str
) -> None:
    producer = shipment_tracking_producer(bus, URI)
    now = dt.datetime.now(dt.UTC)
    for n in range(300):
        await producer.packing(f"u{n}@example.com", n, now)
    first = await archive(bus, postgres_url, pg_schema, max_batch=64)
    assert (first.archived, first.duplicates) == (300, 0)

    # Every ack lost: the group delivers everything again.
    await bus.redis.xgroup_setid(bus.keys(URI).stream, "archive", "0")
    again = await archive(bus, postgres_url, pg_schema, max_batch=64)

    assert (again.archived, again.duplicates) == (0, 300)
    assert len(await rows(postgres_url, pg_schema)) == 300
    [(count,)] = await fetch(
        postgres_url,
        f"SELECT events_archived FROM {pg_schema}.subscription_checkpoints",
    )
    assert count == 300
    assert await pending(bus) == 0


async def test_an_operation_without_parameters_needs_its_contract(
    bus: backbone.Backbone, postgres_url: str, pg_schema: str
) -> None:
    ping = await bus.producer(URI, PINGS.spec).publish(PINGS.operation("ping"), ())

    blind = await archive(bus, postgres_url, pg_schema)
    assert (blind.archived, blind.dead_lettered) == (0, 1)
    letters = backbone.DeadLetters(bus, URI)
    [letter] = await letters.list(group="archive")
    assert letter.reason == "missing-payload"
    assert "--contracts" in letter.error_message

    # Re-driven, with the contract known: archived under the original event id.
    await letters.retry([letter.id])
    told = await archive(bus, postgres_url, pg_schema, contracts=[Pings])
    assert told.archived == 1
    archived = await rows(postgres_url, pg_schema)
    [(key, (operation, data, metadata, *_))] = archived.items()
    assert (key, operation, data) == (event_id(bus, ping.id), "ping", {})
    assert metadata["original_entry_id"] == ping.id
    assert metadata["redrive_group"] == "archive"


async def test_aggregate_events_are_indexed_by_their_stream_and_version(
    bus: backbone.Backbone, postgres_url: str, pg_schema: str
) -> None:
    repository = bus.aggregates(URI, Parcel)
    for order in ("order-1", "order-2"):
        parcel = await repository.load(order)
        for n in range(3):
            parcel.record_packing(f"{order}@example.com", n, dt.datetime.now(dt.UTC))
        await repository.save(parcel)
    parcel = await repository.load("order-1")
    parcel.record_on_delivery("x@example.com", 9, dt.datetime.now(dt.UTC))
    await repository.save(parcel)
    await shipment_tracking_producer(bus, URI).packing("plain@x.org", 1, PAST)

    await archive(bus, postgres_url, pg_schema, max_batch=3)

    found = await fetch(
        postgres_url,
        f"SELECT stream_id, version, event_type FROM {pg_schema}.events "
        "ORDER BY global_position",
    )
    base = f"{bus.environment}:{URI}"
    assert found == [
        *[(f"{base}/order-1", v, "packing") for v in (1, 2, 3)],
        *[(f"{base}/order-2", v, "packing") for v in (1, 2, 3)],
        (f"{base}/order-1", 4, "on_delivery"),
        (base, None, "packing"),
    ]


PAST = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


class Parcel(ShipmentTrackingAggregate[dict[str, int]]):
    def __init__(self) -> None:
        super().__init__({})

    def apply_packing(self, email: str, product_id: int, time: object) -> None:
        self.state[email] = product_id


async def test_sealed_values_are_archived_sealed(
    bus: backbone.Backbone, postgres_url: str, pg_schema: str
) -> None:
    sealed = msgpack.ExtType(7, b"\x01" + b"k" * 36 + b"ciphertext")
    stream = bus.keys(URI).stream
    meta: dict[Any, Any] = {"o": "packing", "c": "ShipmentTracking", "t": "1"}
    entry_id = as_text(await bus.redis.xadd(stream, meta))
    await bus.redis.hset(
        bus.keys(URI).payload(entry_id),
        mapping={"email": msgpack.packb(sealed), "product_id": pack_value(1)},
    )

    await archive(bus, postgres_url, pg_schema)

    [(_, data, *_)] = (await rows(postgres_url, pg_schema)).values()
    assert set(data["email"]) == {"$sealed"}
    assert decode_archived(data)["email"] == sealed


# --- failures -------------------------------------------------------------------


@pytest.fixture
async def pg_proxy(postgres_url: str) -> AsyncIterator[TcpProxy]:
    from psycopg.conninfo import conninfo_to_dict

    target = conninfo_to_dict(postgres_url)
    proxy = await TcpProxy(
        str(target.get("host") or "127.0.0.1"), int(target.get("port") or 5432)
    ).start()
    try:
        yield proxy
    finally:
        await proxy.close()


async def test_a_postgresql_outage_acks_nothing_and_reading_stops_until_it_is_back(
    bus: backbone.Backbone, postgres_url: str, pg_schema: str, pg_proxy: TcpProxy
) -> None:
    producer = shipment_tracking_producer(bus, URI)
    now = dt.datetime.now(dt.UTC)

    async def publish(count: int) -> None:
        for first in range(0, count, 500):
            async with producer.batch() as batch:
                for n in range(first, min(count, first + 500)):
                    batch.packing(f"u{n}@example.com", n, now)

    await publish(500)
    sink = ArchiveSink(
        bus,
        through(postgres_url, pg_proxy.port),
        [URI],
        options(pg_schema, max_batch=100, max_in_flight=400, write_timeout=2),
    )
    stored = f"SELECT count(*) FROM {pg_schema}.events"
    async with sink:
        await eventually(lambda: sink.stats.archived == 500, message="first 500")
        pg_proxy.refuse(True)
        await publish(2000)
        await eventually(lambda: sink.postgres_down, message="the outage noticed")
        # 500 archived, then 400 more read (max_in_flight) and held.
        await eventually(
            lambda: sink.stats.read == 900 and sink.in_flight == 400,
            message="reading stopped at max_in_flight",
        )
        assert await pending(bus) == 400  # read, kept, none acked
        [(count,)] = await fetch(postgres_url, stored)
        assert count == sink.stats.acked == 500
        # While the writer keeps retrying, the readers read nothing more.
        retries = sink.stats.postgres_retries
        await eventually(
            lambda: sink.stats.postgres_retries >= retries + 3,
            message="three more attempts to write",
        )
        assert sink.stats.read == 900
        assert sink.in_flight == 400
        assert await pending(bus) == 400

        pg_proxy.refuse(False)
        await eventually(lambda: sink.stats.acked == 2500, timeout=30, message="all")
        assert not sink.postgres_down
    [(count,)] = await fetch(postgres_url, stored)
    assert count == 2500
    assert await pending(bus) == 0
    assert sink.stats.postgres_retries > 0


async def test_a_stop_flushes_the_open_batch(
    bus: backbone.Backbone, postgres_url: str, pg_schema: str
) -> None:
    producer = shipment_tracking_producer(bus, URI)
    for n in range(25):
        await producer.packing(f"u{n}@example.com", n, PAST)
    sink = ArchiveSink(
        bus, postgres_url, [URI], options(pg_schema, max_batch=1000, max_latency=600)
    )
    await sink.start()
    await eventually(lambda: sink.stats.read == 25, message="read, batch open")
    assert sink.stats.archived == 0
    assert await pending(bus) == 25
    await sink.stop()
    assert sink.stats.archived == 25
    assert await pending(bus) == 0


# --- the schema -----------------------------------------------------------------


async def test_migration_is_idempotent_and_a_newer_schema_is_refused(
    postgres_url: str, pg_schema: str
) -> None:
    import psycopg

    async def migrate_once() -> int:
        async with await psycopg.AsyncConnection.connect(
            postgres_url, autocommit=True
        ) as conn:
            return await migrate(conn, pg_schema)

    found = await asyncio.gather(*(migrate_once() for _ in range(4)))
    # One migrated, the others waited for its lock and found it done.
    assert sorted(found) == [0, *[SCHEMA_VERSION] * 3]
    assert await migrate_once() == SCHEMA_VERSION
    versions = await fetch(
        postgres_url, f"SELECT version FROM {pg_schema}.backbone_archive_schema"
    )
    assert versions == [(1,)]

    await fetch(
        postgres_url,
        f"INSERT INTO {pg_schema}.backbone_archive_schema (version, description) "
        "VALUES (99, 'from the future') RETURNING version",
    )
    with pytest.raises(SchemaError, match=r"at version 99, newer than .* \(1\)"):
        await migrate_once()


async def test_tables_the_archive_did_not_make_are_refused(
    postgres_url: str, pg_schema: str
) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(
        postgres_url, autocommit=True
    ) as conn:
        await conn.execute(f"CREATE SCHEMA {pg_schema}".encode())
        await conn.execute(f"CREATE TABLE {pg_schema}.events (id int)".encode())
        with pytest.raises(SchemaError, match="not made by backbone's archive"):
            await migrate(conn, pg_schema)
