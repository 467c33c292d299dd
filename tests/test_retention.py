"""Retention: trimming a stream by length or by age with its payload hashes in
the same atomic step, never past what a consumer group, a projection or the
event store still needs unless forced; dead letters; the policy a running
subscription applies (on both backends, keys counted with SCAN)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from pathlib import Path
from typing import Any

import pytest
import redis.exceptions

import backbone
from backbone.retainer import Retainer
from backbone.retention import parse_duration
from backbone.trim_script import TrimReply, TrimScript
from conftest import RedisServer, eventually, free_port
from contracts.shipment_tracking_gen import (
    ShipmentTrackingDispatcher,
    shipment_tracking_producer,
    subscribe_shipment_tracking,
)
from helpers import Recorder, moment, product, user
from proxy import FlakyProxy
from store_helpers import Shipment
from test_dlq_cli import dead_letter

URI = "orders"  # the stream test_dlq_cli.dead_letter writes to
BEGINNING = backbone.StartFrom.BEGINNING
OLD = 1_600_000_000_000  # September 2020, in milliseconds


async def publish(bus: backbone.Backbone, count: int, start: int = 0) -> list[str]:
    producer = shipment_tracking_producer(bus, URI)
    ids = await asyncio.gather(
        *(
            producer.packing(f"u{i}@example.com", i, moment())
            for i in range(start, start + count)
        )
    )
    return [event_id.id for event_id in ids]


async def write_old(bus: backbone.Backbone, count: int) -> list[str]:
    """COUNT entries with ids from 2020, each with a payload hash, written with
    plain commands (the stream must be empty or older)."""
    keys = bus.keys(URI)
    ids = []
    for i in range(count):
        entry = f"{OLD + i}-0"
        await bus.redis.xadd(keys.stream, {"o": "packing", "v": "1"}, id=entry)
        await bus.redis.hset(keys.payload(entry), "product_id", b"\x01")
        ids.append(entry)
    return ids


async def entry_ids(bus: backbone.Backbone, uri: str = URI) -> list[str]:
    return [e[0].decode() for e in await bus.redis.xrange(bus.keys(uri).stream)]


async def scan(bus: backbone.Backbone, prefix: str) -> set[str]:
    return {
        key.decode()
        async for key in bus.redis.scan_iter(match=f"{prefix}*", count=1000)
    }


async def payload_keys(bus: backbone.Backbone, uri: str = URI) -> set[str]:
    return await scan(bus, bus.keys(uri).payload_prefix)


async def assert_payloads_match_entries(
    bus: backbone.Backbone, without: tuple[str, ...] = ()
) -> None:
    """Every payload hash has its entry and every entry its hash (but those
    written WITHOUT one): no orphan left, no hash removed whose entry stays."""
    keys = bus.keys(URI)
    expected = {keys.payload(entry) for entry in await entry_ids(bus)}
    assert await payload_keys(bus) == expected - {keys.payload(x) for x in without}


def holds(report: backbone.TrimReport) -> list[tuple[str, str, str]]:
    return [(hold.kind, hold.name, hold.entry_id) for hold in report.held]


# --- by length, by age --------------------------------------------------------------


async def test_trimming_by_length_removes_the_oldest_entries_and_their_payloads(
    bus: backbone.Backbone,
) -> None:
    ids = await publish(bus, 50)
    assert len(await payload_keys(bus)) == 50
    report = await backbone.trim(bus, URI, max_len=20, chunk=7)
    assert (report.removed, report.payloads_removed) == (30, 30)
    assert report.first_kept == ids[30]
    assert (report.held, report.forced, report.bound) == ((), (), None)
    assert await entry_ids(bus) == ids[30:]
    await assert_payloads_match_entries(bus)
    again = await backbone.trim(bus, URI, max_len=20)
    assert (again.removed, again.payloads_removed) == (0, 0)
    assert "removed 0 entries and 0 payload hashes" in str(again)


async def test_trimming_by_age_removes_only_entries_older_than_the_bound(
    bus: backbone.Backbone,
) -> None:
    old = await write_old(bus, 12)
    new = await publish(bus, 5)
    report = await backbone.trim(bus, URI, max_age="7d", chunk=5)
    assert (report.removed, report.payloads_removed) == (12, 12)
    assert report.first_kept == new[0]
    assert report.age_cutoff is not None
    assert int(old[-1].split("-")[0]) < int(report.age_cutoff.split("-")[0])
    assert await entry_ids(bus) == new
    await assert_payloads_match_entries(bus)
    # Both bounds: an entry goes when either says so.
    both = await backbone.trim(bus, URI, max_age=dt.timedelta(days=7), max_len=2)
    assert both.removed == 3
    assert await entry_ids(bus) == new[3:]
    await assert_payloads_match_entries(bus)


async def test_a_dry_run_counts_what_would_go_and_removes_nothing(
    bus: backbone.Backbone,
) -> None:
    ids = await publish(bus, 30)
    stream = bus.keys(URI).stream
    await bus.redis.xgroup_create(stream, "billing", id=ids[19])
    dry = await backbone.trim(bus, URI, max_len=5, dry_run=True, chunk=4)
    assert dry.dry_run
    assert "would remove 20 entries" in str(dry)
    assert (dry.removed, dry.payloads_removed, dry.first_kept) == (20, 20, ids[20])
    assert holds(dry) == [("group", "billing", ids[20])]
    assert await entry_ids(bus) == ids
    assert len(await payload_keys(bus)) == 30
    real = await backbone.trim(bus, URI, max_len=5, chunk=4)
    assert (real.removed, real.payloads_removed, holds(real)) == (20, 20, holds(dry))


# --- what holds entries back --------------------------------------------------------


async def test_an_entry_pending_in_a_group_stays_unless_forced(
    bus: backbone.Backbone,
) -> None:
    ids = await publish(bus, 10)
    stream = bus.keys(URI).stream
    await bus.redis.xgroup_create(stream, "billing", id="0")
    await bus.redis.xreadgroup("billing", "billing-1", {stream: ">"}, count=10)
    await bus.redis.xack(stream, "billing", ids[0], ids[1], ids[3])
    report = await backbone.trim(bus, URI, max_len=0)
    assert report.removed == 2
    assert holds(report) == [("group", "billing", ids[2])]
    assert report.held[0].reason == "unacknowledged"
    assert report.bound == ids[2]
    assert "held back by group billing from " + ids[2] in str(report)
    assert await entry_ids(bus) == ids[2:]
    await assert_payloads_match_entries(bus)

    forced = await backbone.trim(bus, URI, max_len=0, force=True)
    assert (forced.removed, forced.payloads_removed, forced.held) == (8, 8, ())
    assert [(h.kind, h.name, h.entry_id) for h in forced.forced] == [
        ("group", "billing", ids[2])
    ]
    assert await entry_ids(bus) == []
    assert await payload_keys(bus) == set()


async def test_an_entry_a_group_has_not_read_stays_unless_forced(
    bus: backbone.Backbone,
) -> None:
    ids = await publish(bus, 10)
    stream = bus.keys(URI).stream
    await bus.redis.xgroup_create(stream, "late", id=ids[4])  # read up to ids[4]
    await bus.redis.xgroup_create(stream, "caught-up", id="$")
    report = await backbone.trim(bus, URI, max_len=0, chunk=3)
    assert report.removed == 5
    assert holds(report) == [("group", "late", ids[5])]
    assert report.held[0].reason == "unread"
    assert await entry_ids(bus) == ids[5:]
    await assert_payloads_match_entries(bus)
    # A group created now, from the beginning, holds everything left.
    await bus.redis.xgroup_create(stream, "new", id="0")
    report = await backbone.trim(bus, URI, max_len=0)
    assert report.removed == 0
    assert holds(report) == [("group", "late", ids[5]), ("group", "new", ids[5])]
    forced = await backbone.trim(bus, URI, max_len=0, force=True)
    assert forced.removed == 5
    assert {h.name for h in forced.forced} == {"late", "new"}
    await assert_payloads_match_entries(bus)


async def test_the_report_names_each_group_and_projection_that_holds_entries(
    bus: backbone.Backbone,
) -> None:
    ids = await write_old(bus, 12)
    keys = bus.keys(URI)
    await bus.redis.xgroup_create(keys.stream, "billing", id=ids[3])
    await bus.redis.xgroup_create(keys.stream, "shipping", id="0")
    await bus.redis.xreadgroup("shipping", "s-1", {keys.stream: ">"}, count=6)
    await bus.redis.xack(keys.stream, "shipping", *ids[:5])  # ids[5] stays pending
    await bus.redis.hset(keys.projection("counts"), mapping={"id": ids[7], "n": 8})
    await bus.redis.hset(keys.projection("counts", "by-email"), "a@b", 1)
    # By age the whole old stream could go: every hold before the cutoff is named.
    report = await backbone.trim(bus, URI, max_age="1d")
    assert report.removed == 4
    assert holds(report) == [
        ("group", "billing", ids[4]),
        ("group", "shipping", ids[5]),
        ("projection", "counts", ids[8]),
    ]
    reasons = {hold.name: hold.reason for hold in report.held}
    assert reasons == {
        "billing": "unread",
        "shipping": "unacknowledged",
        "counts": "not applied yet",
    }
    assert report.bound == ids[4]
    # A read-model key of the projection is not a projection, and stays.
    assert await bus.redis.exists(keys.projection("counts", "by-email"))
    # A projection marked broken needs the whole stream for its rebuild.
    await bus.redis.xgroup_destroy(keys.stream, "billing")
    await bus.redis.xgroup_destroy(keys.stream, "shipping")
    await bus.redis.hset(keys.projection("counts"), "broken", "a refused write")
    report = await backbone.trim(bus, URI, max_len=0)
    assert report.removed == 0
    assert [(h.name, h.entry_id, h.reason) for h in report.held] == [
        ("counts", ids[4], "broken, to be rebuilt")
    ]


async def test_a_projection_holds_the_events_it_has_not_applied(
    bus: backbone.Backbone,
) -> None:
    applied = await publish(bus, 5)
    counts = _projection(bus, "counts")
    assert await counts.catch_up() == 5
    waiting = await publish(bus, 3, start=5)
    report = await backbone.trim(bus, URI, max_len=0)
    assert report.removed == 5
    assert holds(report) == [("projection", "counts", waiting[0])]
    assert await counts.catch_up() == 3  # nothing it needed was removed
    report = await backbone.trim(bus, URI, max_len=0)
    assert (report.removed, report.held) == (3, ())
    await assert_payloads_match_entries(bus)
    assert applied


async def test_a_projection_being_rebuilt_holds_the_whole_stream(
    bus: backbone.Backbone,
) -> None:
    ids = await publish(bus, 5)
    counts = _projection(bus, "counts")
    assert await counts.catch_up() == 5
    await counts.reset()  # a rebuild began: nothing of it is applied yet
    report = await backbone.trim(bus, URI, max_len=0)
    assert report.removed == 0
    assert holds(report) == [("projection", "counts", ids[0])]
    assert await counts.catch_up() == 5  # the rebuild finds every event
    status = await counts.status()
    assert (status.checkpoint, status.applied, status.lag) == (ids[-1], 5, 0)


async def test_events_of_aggregates_stay_unless_forced(bus: backbone.Backbone) -> None:
    before = await publish(bus, 3)
    repo = bus.aggregates(URI, Shipment)
    shipment = await repo.load("order-1")
    shipment.place(user(1), product(1), moment(0))
    shipment.pack(101, moment(1))
    stored = await repo.save(shipment)
    after = await publish(bus, 2, start=3)
    report = await backbone.trim(bus, URI, max_len=0)
    assert report.removed == 3
    assert holds(report) == [("aggregates", "aggregates", stored[0].id)]
    assert "held back by aggregates from " + stored[0].id in str(report)
    assert await entry_ids(bus) == [event.id for event in stored] + after
    assert (await repo.load("order-1")).version == 2
    forced = await backbone.trim(bus, URI, max_len=2, force=True)
    assert forced.removed == 2
    assert [(h.kind, h.entry_id) for h in forced.forced] == [
        ("aggregates", stored[0].id)
    ]
    assert await entry_ids(bus) == after
    await assert_payloads_match_entries(bus)
    assert before  # (published first: the aggregate's events were not)


def _projection(bus: backbone.Backbone, name: str) -> backbone.Projection:
    keys = bus.keys(URI)

    class Counts:
        async def packing(
            self,
            email: str,
            product_id: int,
            time: object,
            *,
            context: backbone.ProjectionContext,
        ) -> None:
            context.writes.hincrby(keys.projection(name, "by-email"), email, 1)

    return backbone.Projection(bus, URI, name, Counts(), ShipmentTrackingDispatcher)


# --- hostile cases ------------------------------------------------------------------


class _GroupAfterFirstCall:
    """trim.lua's wrapper, creating a group from the beginning after its first
    call: a group created while a trim runs."""

    def __init__(self, script: TrimScript, bus: backbone.Backbone) -> None:
        self.script = script
        self.bus = bus
        self.calls = 0

    async def trim(self, client: Any, **arguments: Any) -> TrimReply:
        reply = await self.script.trim(client, **arguments)
        self.calls += 1
        if self.calls == 1:
            await self.bus.redis.xgroup_create(self.bus.keys(URI).stream, "mid", id="0")
        return reply


async def test_a_group_created_while_a_trim_runs_holds_from_the_next_step(
    bus: backbone.Backbone,
) -> None:
    ids = await publish(bus, 20)
    wrapper = _GroupAfterFirstCall(bus.scripts.trim, bus)
    bus.scripts.trim = wrapper  # type: ignore[assignment]
    report = await backbone.trim(bus, URI, max_len=0, chunk=5)
    assert wrapper.calls == 2
    assert report.removed == 5
    assert holds(report) == [("group", "mid", ids[5])]
    await assert_payloads_match_entries(bus)


async def test_publishing_while_trimming_leaves_no_orphan(
    bus: backbone.Backbone,
) -> None:
    producing = True

    async def produce(worker: int) -> int:
        producer = shipment_tracking_producer(bus, URI)
        written = 0
        while producing:
            async with producer.batch() as batch:
                for i in range(5):
                    batch.packing(f"w{worker}@example.com", i, moment())
            written += 5
            await asyncio.sleep(0)
        return written

    tasks = [asyncio.create_task(produce(n)) for n in range(3)]
    removed = 0
    try:
        while removed < 300:
            report = await backbone.trim(bus, URI, max_len=10, chunk=7)
            assert report.removed == report.payloads_removed
            removed += report.removed
            await asyncio.sleep(0)
    finally:
        producing = False
        written = sum(await asyncio.gather(*tasks))
    await assert_payloads_match_entries(bus)
    assert len(await entry_ids(bus)) == written - removed


class Stepped(Recorder):
    """Handles one packing event per permit: the test decides when it moves."""

    def __init__(self) -> None:
        super().__init__("stepped")
        self.permits: asyncio.Queue[None] = asyncio.Queue()

    async def packing(
        self,
        email: str,
        product_id: int,
        time: dt.datetime,
        *,
        context: backbone.EventContext = backbone.NO_CONTEXT,
    ) -> None:
        await self.permits.get()
        await super().packing(email, product_id, time, context=context)


async def test_a_consumer_reading_while_trimming_loses_no_event(
    bus: backbone.Backbone,
) -> None:
    handler = Stepped()
    options = backbone.SubscriptionOptions(max_in_flight=4)
    ids = await publish(bus, 30)
    async with subscribe_shipment_tracking(
        bus, URI, handler, group="reader", start=BEGINNING, options=options
    ) as sub:
        for handled in range(30):
            # Some events read and not acknowledged, the rest not read yet.
            await backbone.trim(bus, URI, max_len=0, chunk=3)
            left = set(await entry_ids(bus))
            unhandled = set(ids) - set(handler.ids)  # read after the stream
            assert unhandled <= left, "an event not yet handled was removed"
            assert len(unhandled) == 30 - handled
            handler.permits.put_nowait(None)
            await eventually(lambda n=handled: handler.count() > n, message="one more")
        assert sub.stats.dead_lettered == 0
    assert handler.ids == ids
    await backbone.trim(bus, URI, max_len=0)
    assert await entry_ids(bus) == []
    assert await payload_keys(bus) == set()


async def test_garbage_does_not_break_trimming(bus: backbone.Backbone) -> None:
    keys = bus.keys(URI)
    good = await publish(bus, 2)
    # An entry whose payload key holds a string, one without a payload (an
    # operation without parameters), one of fields backbone never writes.
    odd = (await bus.redis.xadd(keys.stream, {"o": "packing"})).decode()
    await bus.redis.set(keys.payload(odd), "not a hash")
    bare = (await bus.redis.xadd(keys.stream, {"o": "ping"})).decode()
    junk = (await bus.redis.xadd(keys.stream, {"x": "y", "a": ""})).decode()
    last = await publish(bus, 1, start=9)
    # A checkpoint key of another type, and one that is not an entry id.
    await bus.redis.set(keys.projection("strange"), "1")
    await bus.redis.hset(keys.projection("odd"), "id", "not-an-id")
    report = await backbone.trim(bus, URI, max_len=0)
    assert report.removed == 0
    assert {(h.name, h.reason) for h in report.held} == {
        ("strange", "checkpoint unreadable"),
        ("odd", "checkpoint unreadable"),
    }
    await bus.redis.delete(keys.projection("strange"), keys.projection("odd"))
    report = await backbone.trim(bus, URI, max_len=0, chunk=2)
    # The junk entry's empty `a` still names an aggregate field: it stops there.
    assert report.removed == 4
    assert holds(report) == [("aggregates", "aggregates", junk)]
    assert await entry_ids(bus) == [junk, *last]
    assert not await bus.redis.exists(keys.payload(odd))
    await assert_payloads_match_entries(bus, without=(junk,))
    forced = await backbone.trim(bus, URI, max_len=0, force=True)
    assert (forced.removed, forced.payloads_removed) == (2, 1)
    assert await entry_ids(bus) == []
    assert await payload_keys(bus) == set()
    assert good
    assert bare


async def test_a_missing_stream_or_a_key_of_another_type(
    bus: backbone.Backbone,
) -> None:
    report = await backbone.trim(bus, "nothing.here", max_age="1d")
    assert (report.removed, report.first_kept, report.held) == (0, None, ())
    await bus.redis.set(bus.keys("not-a-stream").stream, "x")
    with pytest.raises(redis.exceptions.ResponseError, match="a string, not a stream"):
        await backbone.trim(bus, "not-a-stream", max_len=1)


# --- dead letters -------------------------------------------------------------------


async def test_dead_letters_are_trimmed_with_their_payload_copies(
    bus: backbone.Backbone,
) -> None:
    keys = bus.keys(URI)
    letters = [(await dead_letter(bus, f"group-{i}"))[1] for i in range(5)]
    copies = await scan(bus, keys.dead_letter_payload_prefix)
    assert len(copies) == 5
    # Garbage: a dead letter missing its fields, one naming no payload copy.
    await bus.redis.xadd(keys.dead_letters, {"x": "y"})
    await bus.redis.xadd(keys.dead_letters, {"g": "group-9"})
    report = await backbone.trim_dead_letters(bus, URI, max_len=4, chunk=2)
    assert (report.removed, report.payloads_removed) == (3, 3)
    assert "removed 3 dead letters and 3 payload copies" in str(report)
    assert report.dead_letters
    assert report.stream == keys.dead_letters
    remaining = await backbone.DeadLetters(bus, URI).list()
    assert [letter.id for letter in remaining][:2] == letters[3:]
    kept = {keys.dead_letter_payload(x.group, x.event_id.id) for x in remaining[:2]}
    assert await scan(bus, keys.dead_letter_payload_prefix) == kept
    # The events themselves are the stream's: trimming dead letters leaves them.
    assert len(await entry_ids(bus)) == 5
    everything = await backbone.trim_dead_letters(bus, URI, max_age="1s", dry_run=True)
    assert everything.removed <= 4
    await backbone.trim_dead_letters(bus, URI, max_len=0)
    assert await bus.redis.xlen(keys.dead_letters) == 0
    assert await scan(bus, keys.dead_letter_payload_prefix) == set()


# --- the policy of a running subscription -------------------------------------------


async def test_a_running_subscription_applies_its_policy_and_keeps_consuming(
    bus: backbone.Backbone,
) -> None:
    keys = bus.keys(URI)
    recorder = Recorder()
    policy = backbone.RetentionPolicy(max_len=5, dead_letters_max_len=1, every=0.05)
    options = backbone.SubscriptionOptions(retention=policy)
    dead = [(await dead_letter(bus, group))[0].id for group in ("one", "two")]

    async def trimmed() -> bool:
        return len(await entry_ids(bus)) <= 5

    async def one_dead_letter() -> bool:
        return int(await bus.redis.xlen(keys.dead_letters)) == 1

    async with subscribe_shipment_tracking(
        bus, URI, recorder, group="audit", start=BEGINNING, options=options
    ) as sub:
        ids = await publish(bus, 30)
        await eventually(lambda: recorder.count() >= 32, message="32 handled")
        await eventually(trimmed, message="the stream trimmed to 5")
        await eventually(one_dead_letter, message="dead letters trimmed to 1")
        more = await publish(bus, 10, start=30)
        await eventually(lambda: recorder.count() >= 42, message="42 handled")
        await eventually(trimmed, message="trimmed again")
        assert sub.running
    assert recorder.ids == dead + ids + more
    await assert_payloads_match_entries(bus)
    assert len(await scan(bus, keys.dead_letter_payload_prefix)) == 1
    assert not [
        task
        for task in asyncio.all_tasks()
        if task.get_name().startswith("backbone-retention:") and not task.done()
    ]


async def test_a_failing_policy_never_stops_the_consumer(
    bus: backbone.Backbone, caplog: pytest.LogCaptureFixture
) -> None:
    keys = bus.keys(URI)
    await bus.redis.set(keys.dead_letters, "not a stream")  # refused at every run
    recorder = Recorder()
    policy = backbone.RetentionPolicy(max_len=3, dead_letters_max_len=0, every=0.02)
    options = backbone.SubscriptionOptions(retention=policy)

    def failures() -> list[str]:
        return [
            record.getMessage()
            for record in caplog.records
            if record.name == "backbone.retention" and record.levelno >= logging.ERROR
        ]

    async def trimmed() -> bool:
        return len(await entry_ids(bus)) <= 3

    with caplog.at_level(logging.ERROR, logger="backbone.retention"):
        async with subscribe_shipment_tracking(
            bus, URI, recorder, group="audit", start=BEGINNING, options=options
        ) as sub:
            await publish(bus, 20)
            await eventually(lambda: recorder.count() == 20, message="20 handled")
            await eventually(trimmed, message="the stream trimmed")
            await eventually(lambda: len(failures()) >= 2, message="failures logged")
            await publish(bus, 5, start=20)
            await eventually(lambda: recorder.count() == 25, message="25 handled")
            assert sub.running
    assert "retention failed" in failures()[0]
    assert "a string, not a stream" in failures()[0]


async def test_workers_applying_one_policy_at_once_are_harmless(
    bus: backbone.Backbone,
) -> None:
    policy = backbone.RetentionPolicy(max_len=10, every=0.01)
    retainers = [Retainer.start(bus, bus.keys(URI), policy, f"w{n}") for n in range(3)]
    try:
        written = []
        producer = shipment_tracking_producer(bus, URI)
        for round_ in range(20):
            async with producer.batch() as batch:
                for i in range(10):
                    batch.packing(f"u{i}@example.com", round_ * 10 + i, moment())
            written += [event.id for event in batch.event_ids]
            await asyncio.sleep(0)

        async def trimmed() -> bool:
            return await entry_ids(bus) == written[-10:]

        await eventually(trimmed, message="the newest 10 left")
        await eventually(
            lambda: all(retainer.runs >= 1 for retainer in retainers),
            message="a run of each",
        )
    finally:
        for retainer in retainers:
            await retainer.stop()
    await assert_payloads_match_entries(bus)


async def test_the_policy_waits_out_an_outage_and_goes_on(
    proxy: FlakyProxy,
    real_bus: backbone.Backbone,
    environment: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy = backbone.RetentionPolicy(max_len=2, every=0.05)

    def outage_logged() -> bool:
        return any("not reachable" in r.getMessage() for r in caplog.records)

    async def trimmed() -> bool:
        return await entry_ids(real_bus) == ids[-2:]

    async with backbone.Backbone(
        proxy.url, environment=environment, command_timeout=1.0
    ) as bus:
        retainer = Retainer.start(bus, bus.keys(URI), policy, "test")
        try:
            await eventually(lambda: retainer.runs >= 1, message="a first run")
            with caplog.at_level(logging.WARNING, logger="backbone.retention"):
                proxy.refuse(True)
                await eventually(outage_logged, message="the outage logged")
                ids = await publish(real_bus, 10)
                runs = retainer.runs
                proxy.refuse(False)
                await eventually(trimmed, message="trimmed after the outage")
                await eventually(lambda: retainer.runs > runs, message="a new run")
        finally:
            await retainer.stop()
    await assert_payloads_match_entries(real_bus)


async def test_the_policy_goes_on_after_a_real_restart(
    real_url: str, environment: str, tmp_path: Path
) -> None:
    """A redis-server killed and started again (empty, its scripts forgotten)."""
    server = RedisServer(free_port(), tmp_path)
    server.start()
    try:
        async with backbone.Backbone(
            server.url, environment=environment, command_timeout=1.0
        ) as bus:
            policy = backbone.RetentionPolicy(max_len=1, every=0.05)
            retainer = Retainer.start(bus, bus.keys(URI), policy, "test")
            try:
                await publish(bus, 3)
                await eventually(lambda: retainer.runs >= 1, message="a first run")
                server.stop(kill=True)
                server.start()
                ids = await publish(bus, 4)
                # Concurrent calls: a call retried after the restart may be
                # written after later ones; max_len=1 keeps the newest entry.
                newest = max(ids, key=lambda i: tuple(map(int, i.split("-"))))

                async def trimmed() -> bool:
                    try:
                        return await entry_ids(bus) == [newest]
                    except redis.exceptions.ConnectionError:
                        return False  # a pooled connection from before the kill

                await eventually(trimmed, message="trimmed after the restart")
            finally:
                await retainer.stop()
        async with backbone.Backbone(server.url, environment=environment) as fresh:
            await assert_payloads_match_entries(fresh)
    finally:
        server.stop()


# --- arguments ----------------------------------------------------------------------


def test_durations_parse_and_a_bad_one_names_the_text_and_the_forms() -> None:
    assert parse_duration("7d") == dt.timedelta(days=7)
    assert parse_duration("12h") == dt.timedelta(hours=12)
    assert parse_duration("30m") == dt.timedelta(minutes=30)
    assert parse_duration("1h30m") == dt.timedelta(minutes=90)
    assert parse_duration("2w") == dt.timedelta(weeks=2)
    assert parse_duration("45") == dt.timedelta(seconds=45)
    assert parse_duration(1.5) == dt.timedelta(seconds=1.5)
    assert parse_duration(dt.timedelta(hours=1)) == dt.timedelta(hours=1)
    for bad in ("7x", "", "d7", "-1d", "1d-", True, None):
        with pytest.raises(backbone.ConfigurationError) as caught:
            parse_duration(bad, "max_age")  # type: ignore[arg-type]
        assert repr(bad) in str(caught.value)
        assert "12h, 7d" in str(caught.value)
    for zero in ("0s", 0, dt.timedelta(0), float("nan")):
        with pytest.raises(backbone.ConfigurationError, match="longer than 0"):
            parse_duration(zero)


def test_a_policy_is_checked_when_built() -> None:
    policy = backbone.RetentionPolicy(max_age="7d", dead_letters_max_age="30d")
    assert policy.max_age == dt.timedelta(days=7)
    assert policy.dead_letters_max_age == dt.timedelta(days=30)
    assert policy.interval == 300.0
    assert policy.trims_events
    assert policy.trims_dead_letters
    with pytest.raises(backbone.ConfigurationError, match="needs a bound"):
        backbone.RetentionPolicy()
    with pytest.raises(backbone.ConfigurationError, match="max_len must be"):
        backbone.RetentionPolicy(max_len=-1)
    with pytest.raises(backbone.ConfigurationError, match="every '1x'"):
        backbone.RetentionPolicy(max_len=1, every="1x")
    with pytest.raises(backbone.ConfigurationError, match="RetentionPolicy"):
        backbone.SubscriptionOptions(retention="7d")  # type: ignore[arg-type]


async def test_a_trim_needs_a_bound_and_a_sane_chunk(bus: backbone.Backbone) -> None:
    with pytest.raises(backbone.ConfigurationError, match="needs a bound"):
        await backbone.trim(bus, URI)
    with pytest.raises(backbone.ConfigurationError, match="max_len must be"):
        await backbone.trim(bus, URI, max_len=-5)
    with pytest.raises(backbone.ConfigurationError, match="chunk must be"):
        await backbone.trim(bus, URI, max_len=1, chunk=0)
    with pytest.raises(backbone.ConfigurationError, match="chunk must be"):
        await backbone.trim(bus, URI, max_len=1, chunk=5000)
    with pytest.raises(backbone.ConfigurationError, match="uri"):
        await backbone.trim(bus, "no spaces", max_len=1)
