"""Aggregates on one stream: versioned appends, conflicts, reads, snapshots."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

import backbone
from backbone.codec import pack_value
from conftest import eventually
from contracts.shipment_tracking_gen import subscribe_shipment_tracking
from helpers import Recorder, moment, product, user
from proxy import FlakyProxy
from store_helpers import Schema2, Shipment, Unsnapshotted, stored_counts

URI = "shipments"
UTC = dt.UTC


async def placed(
    repo: backbone.Repository[Shipment], order: str, packings: int = 0
) -> None:
    """Write ORDER with an order_placed event and PACKINGS packing events."""
    shipment = await repo.load(order)
    shipment.place(user(1), product(1), moment(0))
    for n in range(packings):
        shipment.pack(n, moment(n + 1))
    await repo.save(shipment)


async def test_save_writes_entries_payloads_and_index_and_load_folds_them(
    bus: backbone.Backbone,
) -> None:
    repo = bus.aggregates(URI, Shipment)
    shipment = await repo.load("order-1")
    assert (shipment.version, shipment.pending) == (0, 0)
    shipment.place(user(1), product(1), moment(0))
    shipment.pack(101, moment(1))
    assert shipment.state.stage == "packing"  # recorded events apply at once
    ids = await repo.save(shipment)
    assert (shipment.version, shipment.pending) == (2, 0)

    keys = bus.keys(URI)
    entries = await bus.redis.xrange(keys.stream)
    assert [e[0].decode() for e in entries] == [i.id for i in ids]
    fields = entries[0][1]
    assert fields[b"a"] == b"order-1"
    assert (fields[b"o"], fields[b"c"], fields[b"v"]) == (
        b"order_placed",
        b"ShipmentTracking",
        b"1",
    )
    index = await bus.redis.lrange(keys.aggregate("order-1"), 0, -1)
    assert [i.decode() for i in index] == [i.id for i in ids]
    assert await bus.redis.hget(keys.payload(ids[1].id), "product_id") == pack_value(
        101
    )

    loaded = await repo.load("order-1")
    assert loaded.version == 2
    assert loaded.state == shipment.state
    assert loaded.state.steps == ["placed", "packing:101"]


@pytest.mark.parametrize(
    ("existing", "expected", "actual"),
    [
        (0, backbone.ExpectedVersion.ANY, None),
        (2, backbone.ExpectedVersion.ANY, None),
        (0, backbone.ExpectedVersion.NEW, None),
        (2, backbone.ExpectedVersion.NEW, 2),
        (0, backbone.ExpectedVersion.EXISTS, 0),
        (2, backbone.ExpectedVersion.EXISTS, None),
        (2, 2, None),
        (0, 0, None),
        (2, 1, 2),
        (2, 3, 2),
        (0, 1, 0),
    ],
    ids=lambda value: str(getattr(value, "name", value)),
)
async def test_each_expected_version_rule(
    bus: backbone.Backbone,
    existing: int,
    expected: int | backbone.ExpectedVersion,
    actual: int | None,
) -> None:
    """ACTUAL None: the append goes through; else it conflicts at ACTUAL."""
    repo = bus.aggregates(URI, Shipment)
    if existing:
        await placed(repo, "order-1", packings=existing - 1)
    await placed(repo, "other")  # another aggregate in the same stream
    before = await stored_counts(bus, URI, "order-1")
    shipment = await repo.load("order-1")
    shipment.pack(7, moment(9))
    shipment.pack(8, moment(9))
    if actual is None:
        ids = await repo.save(shipment, expected=expected)
        assert shipment.version == existing + 2
        assert await stored_counts(bus, URI, "order-1") == (
            before[0] + 2,
            existing + 2,
            before[2] + 2,
        )
        index = await bus.redis.lrange(bus.keys(URI).aggregate("order-1"), -2, -1)
        assert [i.decode() for i in index] == [i.id for i in ids]
        return
    with pytest.raises(backbone.ConcurrencyError) as raised:
        await repo.save(shipment, expected=expected)
    error = raised.value
    assert isinstance(error, backbone.BackboneError)
    assert (error.aggregate_id, error.stream) == ("order-1", bus.keys(URI).stream)
    assert (error.expected, error.actual) == (expected, actual)
    assert f"at version {actual}" in str(error)
    assert "'order-1'" in str(error)
    assert await stored_counts(bus, URI, "order-1") == before  # nothing written
    assert shipment.pending == 2  # still there, for the caller to decide


async def test_ten_racing_appenders_one_wins_each_version(
    bus: backbone.Backbone,
) -> None:
    repo = bus.aggregates(URI, Shipment)
    await placed(repo, "order-1")
    racers = [await repo.load("order-1") for _ in range(10)]
    for n, racer in enumerate(racers):
        racer.pack(n, moment(1))
    outcomes = await asyncio.gather(
        *(repo.save(racer) for racer in racers), return_exceptions=True
    )
    won = [o for o in outcomes if isinstance(o, list)]
    lost = [o for o in outcomes if isinstance(o, backbone.ConcurrencyError)]
    assert (len(won), len(lost)) == (1, 9), outcomes
    assert all((e.expected, e.actual) == (1, 2) for e in lost)
    assert await repo.version("order-1") == 2
    assert (await stored_counts(bus, URI, "order-1"))[:2] == (2, 2)


async def test_racing_commands_retried_by_execute_all_land_once_without_gaps(
    bus: backbone.Backbone,
) -> None:
    repo = bus.aggregates(URI, Shipment)
    await placed(repo, "order-1")
    conflicts = 0
    original = repo.save

    async def counting_save(
        aggregate: Shipment, *, expected: int | backbone.ExpectedVersion | None = None
    ) -> list[backbone.EventId]:
        nonlocal conflicts
        try:
            return await original(aggregate, expected=expected)
        except backbone.ConcurrencyError:
            conflicts += 1
            raise

    repo.save = counting_save  # type: ignore[method-assign]
    loaded = asyncio.Event()
    waiting = 0

    async def racer(n: int) -> Shipment:
        async def command(shipment: Shipment) -> None:
            nonlocal waiting
            if not loaded.is_set():  # every racer loads version 1 first
                waiting += 1
                if waiting == 10:
                    loaded.set()
                await loaded.wait()
            shipment.pack(1000 + n, moment(1))

        return await repo.execute("order-1", command, attempts=10)

    results = await asyncio.gather(*(racer(n) for n in range(10)))
    assert conflicts >= 9  # they did race
    assert sorted(r.version for r in results) == list(range(2, 12))
    events = await repo.events("order-1")
    assert [e.version for e in events] == list(range(1, 12))  # no gaps
    packed = [e.named["product_id"] for e in events[1:]]
    assert sorted(packed) == list(range(1000, 1010))  # each once, no duplicate
    ids = [e.id.id for e in events]
    stream = await bus.redis.xrange(bus.keys(URI).stream)
    assert [e[0].decode() for e in stream] == ids  # version order is stream order


async def test_execute_gives_up_after_its_attempts_with_a_clear_error(
    bus: backbone.Backbone,
) -> None:
    repo = bus.aggregates(URI, Shipment)
    rival = bus.aggregates(URI, Shipment)
    await placed(repo, "order-1")
    calls = 0

    async def always_overtaken(shipment: Shipment) -> None:
        nonlocal calls
        calls += 1
        await placed_packing(rival, "order-1")
        shipment.pack(1, moment(1))

    with pytest.raises(backbone.ConcurrencyError) as raised:
        await repo.execute("order-1", always_overtaken, attempts=3)
    assert calls == 3
    assert raised.value.attempts == 3
    assert "gave up after 3 attempts" in str(raised.value)
    assert await repo.version("order-1") == 1 + 3  # only the rival's events


async def placed_packing(repo: backbone.Repository[Shipment], order: str) -> None:
    shipment = await repo.load(order)
    shipment.pack(99, moment(2))
    await repo.save(shipment)


async def test_events_of_an_aggregate_reach_a_consumer_group_in_order(
    bus: backbone.Backbone,
) -> None:
    repo = bus.aggregates(URI, Shipment)
    await placed(repo, "order-1", packings=2)
    await placed(repo, "order-2", packings=1)
    await placed_packing(repo, "order-1")
    recorder = Recorder()
    async with subscribe_shipment_tracking(
        bus, URI, recorder, group="g", start=backbone.StartFrom.BEGINNING
    ):
        await eventually(lambda: recorder.count() == 6, message="6 events handled")
    stream = await bus.redis.xrange(bus.keys(URI).stream)
    assert recorder.ids == [e[0].decode() for e in stream]
    assert [op for op, _, _ in recorder.calls][:3] == [
        "order_placed",
        "packing",
        "packing",
    ]
    order_1 = [e.id.id for e in await repo.events("order-1")]
    handled_1 = [i for i in recorder.ids if i in order_1]
    assert handled_1 == order_1  # the aggregate's events in version order


async def test_reads_forwards_and_backwards_from_a_version(
    bus: backbone.Backbone,
) -> None:
    repo = bus.aggregates(URI, Shipment)
    await placed(repo, "order-1", packings=4)  # versions 1..5
    await placed(repo, "order-2", packings=2)  # interleaved in the stream
    await placed_packing(repo, "order-1")  # version 6
    forwards = await repo.events("order-1", start=2)
    assert [e.version for e in forwards] == [2, 3, 4, 5, 6]
    assert [e.named["product_id"] for e in forwards] == [0, 1, 2, 3, 99]
    first = (await repo.events("order-1", limit=1))[0]
    assert (first.version, first.operation, first.method) == (
        1,
        "order_placed",
        "order_placed",
    )
    assert first.args == (user(1), product(1), moment(0))
    assert first.metadata["a"] == "order-1"
    assert first.produced_at is not None
    assert first.aggregate_id == "order-1"
    backwards = await repo.events("order-1", start=4, backwards=True)
    assert [e.version for e in backwards] == [4, 3, 2, 1]
    latest = await repo.events("order-1", backwards=True, limit=2)
    assert [e.version for e in latest] == [6, 5]
    assert [e.version for e in await repo.events("order-1", start=3, limit=2)] == [3, 4]
    assert await repo.events("order-1", start=7) == []
    assert await repo.events("nobody") == []
    assert all(e.aggregate_id == "order-1" for e in await repo.events("order-1"))
    # The index is the only way to the events: without it, there are none.
    await bus.redis.delete(bus.keys(URI).aggregate("order-1"))
    assert await repo.events("order-1") == []


async def test_snapshot_load_equals_full_replay(bus: backbone.Backbone) -> None:
    repo = bus.aggregates(URI, Shipment)
    await placed(repo, "order-1", packings=1)  # versions 1-2: no snapshot yet
    key = bus.keys(URI).snapshot("order-1")
    assert not await bus.redis.exists(key)
    for _ in range(5):
        await placed_packing(repo, "order-1")  # versions 3..7: snapshot at 3, 6
    assert await bus.redis.hget(key, "v") == b"6"
    assert await bus.redis.hget(key, "s") == b"1"
    with_snapshot = await repo.load("order-1")
    replayed = await bus.aggregates(URI, Unsnapshotted).load("order-1")
    assert with_snapshot.version == replayed.version == 7
    assert with_snapshot.state == replayed.state
    assert len(replayed.state.steps) == 7

    # The snapshot is what loading starts from: change it, and the load shows it
    # (with the one event after it on top).
    changed = replayed.state.model_copy(update={"steps": ["from the snapshot"] * 6})
    await bus.redis.hset(key, "d", pack_value(changed.model_dump()))
    loaded = await repo.load("order-1")
    assert loaded.state.steps == ["from the snapshot"] * 6 + ["packing:99"]


async def test_a_snapshot_of_another_schema_or_unreadable_is_ignored(
    bus: backbone.Backbone,
) -> None:
    repo = bus.aggregates(URI, Shipment)
    await placed(repo, "order-1", packings=3)  # version 4: snapshot at 4
    key = bus.keys(URI).snapshot("order-1")
    assert await bus.redis.hget(key, "v") == b"4"
    await bus.redis.hset(key, "d", pack_value({"steps": ["misread"] * 4}))
    assert (await repo.load("order-1")).state.steps == ["misread"] * 4

    replayed = (await bus.aggregates(URI, Unsnapshotted).load("order-1")).state
    newer = await bus.aggregates(URI, Schema2).load("order-1")  # schema 2 reads 1
    assert newer.state == replayed
    assert newer.version == 4

    await bus.redis.hset(key, "d", b"\xc1 not msgpack")
    assert (await repo.load("order-1")).state == replayed
    await bus.redis.hset(key, "d", pack_value({"total": "not a number"}))
    assert (await repo.load("order-1")).state == replayed
    await bus.redis.delete(key)
    await bus.redis.set(key, "a string where a hash should be")
    assert (await repo.load("order-1")).state == replayed
    # The next snapshot due replaces what could not be read.
    for _ in range(2):
        await placed_packing(repo, "order-1")
    assert await bus.redis.hget(key, "v") == b"6"
    assert (await repo.load("order-1")).state == (
        await bus.aggregates(URI, Unsnapshotted).load("order-1")
    ).state


async def test_an_older_snapshot_never_replaces_a_newer_one(
    bus: backbone.Backbone,
) -> None:
    key = bus.keys(URI).snapshot("order-1")
    snapshot = bus.scripts.snapshot
    assert await snapshot.store(bus.redis, key=key, version=6, schema=1, data=b"\x90")
    assert not await snapshot.store(
        bus.redis, key=key, version=3, schema=1, data=b"\x91"
    )
    assert await bus.redis.hget(key, "v") == b"6"
    # One of another schema is replaced whatever its version.
    assert await snapshot.store(bus.redis, key=key, version=3, schema=2, data=b"\x91")
    assert await bus.redis.hget(key, "v") == b"3"


@pytest.mark.parametrize(
    "bad", ["", "a:b", "{tag}", "a b", "x" * 201, "line\n", "a*"], ids=repr
)
async def test_invalid_aggregate_ids_are_refused_clearly(
    bus: backbone.Backbone, bad: str
) -> None:
    repo = bus.aggregates(URI, Shipment)
    with pytest.raises(
        backbone.ConfigurationError, match=r"aggregate id .* is not valid"
    ):
        await repo.load(bad)


async def test_a_refused_append_writes_nothing(bus: backbone.Backbone) -> None:
    """Redis refuses the second event's payload (a string is in the way): the
    first event's entry and payload are undone and the index is untouched."""
    repo = bus.aggregates(URI, Shipment)
    keys = bus.keys(URI)
    await bus.redis.xadd(keys.stream, {"o": "seed"}, id="9999999999990-0")
    await bus.redis.xdel(keys.stream, "9999999999990-0")
    await bus.redis.set(keys.payload("9999999999990-2"), "in the way")
    shipment = await repo.load("order-1")
    shipment.place(user(1), product(1), moment(0))
    shipment.pack(1, moment(1))
    with pytest.raises(backbone.PublishError, match="WRONGTYPE"):
        await repo.save(shipment)
    assert await stored_counts(bus, URI, "order-1") == (0, 0, 1)
    assert await repo.version("order-1") == 0


async def test_a_repository_needs_an_aggregate(bus: backbone.Backbone) -> None:
    with pytest.raises(backbone.ConfigurationError, match="not an aggregate"):
        bus.aggregates(URI, object)  # type: ignore[type-var]


@pytest.mark.parametrize(
    "expected", [None, backbone.ExpectedVersion.ANY], ids=["loaded", "any"]
)
async def test_a_lost_reply_of_an_append_is_retried_without_a_duplicate(
    proxy: FlakyProxy,
    real_bus: backbone.Backbone,
    environment: str,
    expected: backbone.ExpectedVersion | None,
) -> None:
    """The append ran, its reply was lost: the retry gets the first attempt's
    entries back (not a conflict with itself, not a second copy)."""
    async with backbone.Backbone(proxy.url, environment=environment) as bus:
        repo = bus.aggregates(URI, Shipment)
        await placed(repo, "order-1")
        shipment = await repo.load("order-1")
        shipment.pack(5, moment(1))
        proxy.drop_replies(1)
        ids = await repo.save(shipment, expected=expected)
        assert proxy.dropped == 1
    assert shipment.version == 2
    assert await stored_counts(real_bus, URI, "order-1") == (2, 2, 2)
    index = await real_bus.redis.lrange(real_bus.keys(URI).aggregate("order-1"), 0, -1)
    assert index[1].decode() == ids[0].id


async def test_a_load_survives_a_lost_connection(
    proxy: FlakyProxy, real_bus: backbone.Backbone, environment: str
) -> None:
    """Reads change nothing: a load whose connection drops is retried, and an
    execute goes through."""
    async with backbone.Backbone(proxy.url, environment=environment) as bus:
        repo = bus.aggregates(URI, Shipment)
        await placed(repo, "order-1")
        proxy.drop_replies(1)
        loaded = await repo.load("order-1")
        assert proxy.dropped == 1
        assert loaded.version == 1
        proxy.drop_replies(1)
        packed = await repo.execute("order-1", lambda s: s.pack(5, moment(1)))
        assert proxy.dropped == 2
    assert packed.version == 2
    assert await stored_counts(real_bus, URI, "order-1") == (2, 2, 2)


async def test_a_late_attempt_of_an_append_writes_nothing(
    proxy: FlakyProxy, real_bus: backbone.Backbone, environment: str
) -> None:
    """The first attempt stalls and times out, its retry and a later save go
    through, then the stalled attempt reaches Redis: it writes nothing, even
    with no version check to stop it."""
    async with backbone.Backbone(
        proxy.url, environment=environment, command_timeout=0.3
    ) as bus:
        repo = bus.aggregates(URI, Shipment)
        await placed(repo, "order-1")
        shipment = await repo.load("order-1")
        shipment.pack(5, moment(1))
        proxy.hold()
        await repo.save(shipment, expected=backbone.ExpectedVersion.ANY)
        assert proxy.held_bytes > 0
        await placed_packing(repo, "order-1")
        assert proxy.release() == 1
        await eventually(
            lambda: proxy.answered == 1, message="Redis to run the late attempt"
        )
    assert await stored_counts(real_bus, URI, "order-1") == (3, 3, 3)
    steps = (await real_bus.aggregates(URI, Shipment).load("order-1")).state.steps
    assert steps == ["placed", "packing:5", "packing:99"]


async def test_an_aggregate_not_from_the_repository_has_no_id(
    bus: backbone.Backbone,
) -> None:
    repo = bus.aggregates(URI, Shipment)
    shipment = Shipment()
    shipment.place(user(1), product(1), moment(0))
    with pytest.raises(backbone.ConfigurationError, match=r"Repository\.load\(id\)"):
        await repo.save(shipment)
    assert (await stored_counts(bus, URI, "order-1"))[0] == 0


async def test_an_invalid_argument_records_nothing(bus: backbone.Backbone) -> None:
    repo = bus.aggregates(URI, Shipment)
    shipment = await repo.load("order-1")
    with pytest.raises(backbone.ValidationError, match="product_id"):
        shipment.record_packing("a@example.com", "one", moment(0))  # type: ignore[arg-type]
    assert (shipment.pending, shipment.state.steps) == (0, [])


async def test_a_snapshot_beyond_the_aggregates_events_is_ignored(
    bus: backbone.Backbone,
) -> None:
    """A snapshot claiming more events than the index holds is wrong (a cache,
    never the truth): loading replays, and the aggregate can still be saved."""
    repo = bus.aggregates(URI, Shipment)
    await placed(repo, "order-1", packings=3)  # version 4: snapshot at 4
    await bus.redis.hset(bus.keys(URI).snapshot("order-1"), "v", "50")
    loaded = await repo.load("order-1")
    assert loaded.version == 4
    assert (
        loaded.state == (await bus.aggregates(URI, Unsnapshotted).load("order-1")).state
    )
    await placed_packing(repo, "order-1")
    assert (await repo.load("order-1")).version == 5
