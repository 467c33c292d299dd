"""What runs on the master of one slot of a Redis Cluster: the scripts, each
keeping to the slot of its keys; ``WAIT`` after a publish, counting the replicas
of the master that wrote; a projection's transaction, on that master.

That no code path raises CROSSSLOT is shown by the whole behaviour suite, which
runs on a Redis Cluster too (the ``cluster`` parameter of the ``url`` fixture,
see conftest.py): every script, pipeline and transaction backbone sends runs
there, each stream in a slot of its own, and the ``bus`` fixture watches with
MONITOR that no script touches a key outside the slot of the keys it declared
(Redis refuses that only when the key is on another node, so a test alone would
miss a stray key that happens to share the node). The script test here adds
what the suite does not show by itself: that every script backbone ships (the
``lua/`` directory: a new script fails it until it is run here) ran through its
normal entry point on streams held by every master.
"""

from __future__ import annotations

import asyncio
import contextlib
import decimal
import signal
import subprocess
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import redis.asyncio as aioredis
import redis.exceptions as rex
from redis.cluster import key_slot

import backbone
from backbone.archive.options import ArchiveOptions
from backbone.archive.reader import ArchiveReadScript
from backbone.deadletters import DeadLetters
from backbone.events import as_text
from backbone.retention import trim
from backbone.script import Script
from cluster import LocalCluster
from conftest import drop_environment, eventually, shipped
from contracts.shipment_tracking_gen import shipment_tracking_producer
from helpers import (
    cluster_client,
    masters,
    moment,
    node_of,
    product,
    spread_uris,
    user,
)
from personal_helpers import CUSTOMERS, REGISTERED, Seen, dispatcher
from slot_monitor import monitoring, strays
from store_helpers import Shipment
from test_projections import counts_projection
from test_versions import V3

pytestmark = pytest.mark.cluster

FROM_START = backbone.StartFrom.BEGINNING


# --- every script, on every master ------------------------------------------------


class ScriptCalls:
    """Every script call made while installed: the script and its keys."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    def record(self, name: str, keys: Sequence[str | bytes]) -> None:
        self.calls.append((name, [as_text(key) for key in keys]))

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        run, run_and_wait = Script.run, Script.run_and_wait
        calls = self

        async def recorded_run(
            self: Script, client: Any, keys: Sequence[str | bytes], args: Any
        ) -> Any:
            calls.record(self.name, keys)
            return await run(self, client, keys, args)

        async def recorded_run_and_wait(
            self: Script,
            client: Any,
            keys: Sequence[str | bytes],
            args: Any,
            replicas: int,
            timeout_ms: int,
        ) -> Any:
            calls.record(self.name, keys)
            return await run_and_wait(self, client, keys, args, replicas, timeout_ms)

        monkeypatch.setattr(Script, "run", recorded_run)
        monkeypatch.setattr(Script, "run_and_wait", recorded_run_and_wait)


async def every_script_on(bus: backbone.Backbone, customers: str) -> None:
    """Run on stream CUSTOMERS the scripts of a stream's life: publish,
    keyring, read, dead_letter, group, forget_consumer, redrive, lease, members,
    archive_read and trim."""
    producer = bus.producer(customers, CUSTOMERS.spec)
    await producer.publish(REGISTERED, ("c-1", "ada@example.com", "UK"))
    await producer.publish(REGISTERED, ("c-2", "bob@example.org", "FR"))
    handler = Seen(failing={"bob@example.org"})
    options = backbone.SubscriptionOptions(
        retry=backbone.RetryPolicy(max_deliveries=1, initial_backoff=0.01),
        block=0.2,
    )
    subscription = bus.subscribe(
        customers,
        dispatcher(CUSTOMERS, handler),
        group="g",
        start=FROM_START,
        options=options,
    )
    async with subscription as sub:
        await eventually(
            lambda: len(handler.calls) == 1 and sub.stats.dead_lettered == 1,
            message="one event handled and one dead-lettered",
        )
        # The group vanishes under the running subscription: group.lua.
        await bus.redis.xgroup_destroy(bus.keys(customers).stream, "g")
        await producer.publish(REGISTERED, ("c-3", "cy@example.net", "DE"))
        # (Events the consumer held when its group vanished come again.)
        await eventually(
            lambda: ("registered", ("c-3", "cy@example.net", "DE")) in handler.calls,
            message="an event written after the loss handled",
        )
        assert sub.stats.groups_recreated == 1
    letters = DeadLetters(bus, customers)
    assert await letters.retry(await letters.all_ids())

    # An ordered subscription: a lease (lease.lua) among members (members.lua).
    in_order = Seen()
    ordered = backbone.SubscriptionOptions(ordered=True, lease_ttl=5, block=0.2)
    async with bus.subscribe(
        customers,
        dispatcher(CUSTOMERS, in_order),
        group="in-order",
        start=FROM_START,
        options=ordered,
    ):
        await eventually(lambda: len(in_order.calls) == 3, message="ordered reads")
    assert [args[0] for _, args in in_order.calls] == ["c-1", "c-2", "c-3"]

    keys = bus.keys(customers)
    length = await bus.redis.xlen(keys.stream)  # with the re-driven events
    await bus.redis.xgroup_create(keys.stream, "archive", id="0")
    reader = ArchiveReadScript(bus, keys, ArchiveOptions(consumer="a"))
    _, entries = await reader.run("new", 100)
    assert len(entries) == length

    report = await trim(bus, customers, max_len=0, force=True)
    assert report.removed == length
    assert await bus.redis.xlen(keys.stream) == 0


async def test_every_script_runs_on_keys_of_one_slot_on_every_master(
    cluster_bus: backbone.Backbone, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every script of lua/ runs through its entry point on streams of every
    master (the keyring on its one slot), each call's keys in one slot, and
    the commands each ran touched keys of that slot only."""
    bus = cluster_bus
    every_master = await masters(bus)
    if len(every_master) < 2:
        pytest.skip("this cluster has one master: keys cannot land on several")
    calls = ScriptCalls()
    calls.install(monkeypatch)
    async with monitoring(bus) as monitors:
        for uri in await spread_uris(bus, "customers"):
            await every_script_on(bus, uri)
        for uri in await spread_uris(bus, "parcels"):  # versions.lua
            await bus.producer(uri, V3.spec).publish(
                V3.operation("shipped"), ("r@example.com", decimal.Decimal(7), False)
            )
        for uri in await spread_uris(bus, "shipments"):  # append.lua, snapshot.lua
            repo = bus.aggregates(uri, Shipment)
            shipment = await repo.load("order-1")
            shipment.place(*_order())
            for n in range(Shipment.snapshot_every):
                shipment.pack(n, moment(n))
            await repo.save(shipment)
            assert (await repo.load("order-1")).version == Shipment.snapshot_every + 1
        report = await backbone.erase(bus, "c-1")  # keyring.lua, in {env}'s slot
        assert report.erased

    by_script: dict[str, set[str]] = defaultdict(set)
    for name, keys in calls.calls:
        slots = {key_slot(key.encode()) for key in keys}
        assert len(slots) == 1, f"{name}.lua was called with keys of slots {slots}"
        by_script[name].add(await node_of(bus, keys[0]))
    missing = {script.name for script in shipped()} - set(by_script)
    assert not missing, (
        f"{sorted(missing)} never ran here: run each new script through its entry "
        "point in this test, so that the cluster shows it keeps to one slot"
    )
    for name, nodes in by_script.items():
        if name != "keyring":  # the environment's keyring: one key, one slot
            assert nodes == every_master, (name, nodes)

    # Inside the scripts: every key a script's commands touched (names it built
    # from a prefix too) is in the slot of the keys it declared.
    # (EVAL of a script's source shows the source: named by its first line.)
    names = {script.sha: f"{script.name}.lua" for script in shipped()}
    ran = [call for monitor in monitors for call in monitor.calls()]
    assert {names[sha] for sha, _, _ in ran if sha in names} == {
        f"{name}.lua" for name in by_script
    }
    stray = strays(monitors, names)
    assert not stray, "\n".join(stray)


async def test_the_monitor_sees_a_script_stray_to_another_slot_of_its_node(
    cluster_bus: backbone.Backbone,
) -> None:
    """What Redis lets pass (a key of another slot held by the same node) the
    check above sees: it is not vacuous."""
    bus = cluster_bus
    declared = bus.keys("here").stream
    node = await node_of(bus, declared)
    for n in range(10_000):
        stray = bus.keys(f"there.{n}").stream
        other_slot = key_slot(stray.encode()) != key_slot(declared.encode())
        if other_slot and await node_of(bus, stray) == node:
            break
    source = "redis.call('SET', KEYS[1], 1) return redis.call('SET', ARGV[1], 1)"
    async with monitoring(bus) as monitors:
        await bus.redis.eval(source, 1, declared, stray)  # type: ignore[misc]
    [(_, slot, touched)] = [c for m in monitors for c in m.calls()]
    assert slot == key_slot(declared.encode())
    assert touched == {slot, key_slot(stray.encode())}


def _order() -> tuple[Any, Any, Any]:
    return user(1), product(1), moment(0)


# --- WAIT counts the write of the script ----------------------------------------


@contextlib.contextmanager
def paused(process: subprocess.Popen[bytes] | None) -> Iterator[None]:
    """PROCESS stopped (SIGSTOP) for the block: it answers nothing, and a
    replica acknowledges no write."""
    assert process is not None
    process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        process.send_signal(signal.SIGCONT)


async def test_min_replicas_waits_for_the_replica_of_the_master_that_wrote(
    local_cluster: LocalCluster, environment: str
) -> None:
    """``WAIT`` counts the replicas of the node it is sent to that caught up
    with that node's writes. Sent to another node (the cluster client sends a
    command without a key to any), it would count replicas that know nothing
    of the script's writes: a stopped replica of the master that wrote is what
    tells."""
    async with backbone.Backbone(local_cluster.url, environment=environment) as bus:
        try:
            uris = await spread_uris(bus, "orders")
            for uri in uris:
                stream = bus.keys(uri).stream
                master = local_cluster.master_of_key(stream)
                [replica] = local_cluster.replicas_of(master)
                # (A new cluster's masters start the first sync of their
                # replicas some seconds after it is up: patience.)
                patient = backbone.ProducerOptions(min_replicas=1, replica_timeout=20)
                producer = shipment_tracking_producer(bus, uri, options=patient)
                first = await producer.packing("a@example.com", 1, moment())

                quick = backbone.ProducerOptions(min_replicas=1, replica_timeout=0.3)
                hasty = shipment_tracking_producer(bus, uri, options=quick)
                with (
                    paused(replica.process),
                    pytest.raises(backbone.ReplicationTimeout) as caught,
                ):
                    await hasty.packing("b@example.com", 2, moment())
                assert caught.value.replicas == 0

                ids = await asyncio.gather(
                    *(
                        producer.packing(f"u{n}@example.com", n, moment())
                        for n in range(10)
                    )
                )
                # WAIT returned: the replica has every event already.
                follower = aioredis.Redis(port=replica.port)
                try:
                    await follower.execute_command("READONLY")
                    copied = [as_text(e[0]) for e in await follower.xrange(stream)]
                    payload = await follower.hgetall(bus.keys(uri).payload(ids[-1].id))
                finally:
                    await follower.aclose()
                assert copied[0] == first.id
                assert copied[-10:] == [event_id.id for event_id in ids]
                assert set(payload) == {b"email", b"product_id", b"time"}
        finally:
            await drop_environment(bus)
    local_cluster.wait_healthy()


async def test_a_stale_map_of_the_slots_is_corrected_before_waiting(
    local_cluster: LocalCluster, environment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client believes another master holds the stream's slot: the script
    is answered MOVED (it did not run there), and the script and ``WAIT`` both
    go to the right master then."""
    async with backbone.Backbone(local_cluster.url, environment=environment) as bus:
        try:
            stream = bus.keys("orders").stream
            options = backbone.ProducerOptions(min_replicas=1, replica_timeout=20)
            producer = shipment_tracking_producer(bus, "orders", options=options)
            await producer.packing("a@example.com", 1, moment())
            client = cluster_client(bus)
            right = client.get_node_from_key(stream)
            wrong = next(n for n in client.get_primaries() if n.name != right.name)
            client.nodes_manager.slots_cache[key_slot(stream.encode())] = [wrong]
            moved: list[Any] = []
            manager = type(client.nodes_manager)
            move_slot = manager.move_slot

            async def moving(self: Any, error: Any) -> None:
                moved.append(error)
                await move_slot(self, error)

            monkeypatch.setattr(manager, "move_slot", moving)

            sent = await producer.packing("b@example.com", 2, moment())
            assert len(moved) == 1
            assert client.get_node_from_key(stream).name == right.name
            [(entry, _)] = await bus.redis.xrange(stream, sent.id, sent.id)
            assert as_text(entry) == sent.id
            assert await bus.redis.xlen(stream) == 2
        finally:
            await drop_environment(bus)


async def test_a_retry_answered_by_the_batch_record_waits_for_the_first_write(
    local_cluster: LocalCluster, environment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first attempt of a batch is written, its answer lost with its
    connection; the retry finds the batch record and writes nothing. ``WAIT``
    after the retry must still cover the first attempt's write, or a publish
    would be confirmed that no replica has (Redis 7 counts the replicas up to
    the server's replication offset at the connection's last command, which
    the read-only retry moves past the first write)."""
    async with backbone.Backbone(local_cluster.url, environment=environment) as bus:
        try:
            stream = bus.keys("orders").stream
            master = local_cluster.master_of_key(stream)
            [replica] = local_cluster.replicas_of(master)
            patient = backbone.ProducerOptions(min_replicas=1, replica_timeout=20)
            producer = shipment_tracking_producer(bus, "orders", options=patient)
            await producer.packing("a@example.com", 1, moment())  # replica in sync

            run_and_wait = Script._run_and_wait_on_node
            lost: list[str] = []

            async def answer_lost(
                self: Script, client: Any, keys: Any, *rest: Any
            ) -> Any:
                if lost:
                    return await run_and_wait(self, client, keys, *rest)
                args = rest[0]
                other = aioredis.Redis(port=master.port)  # a connection of its own
                try:
                    await other.evalsha(self.sha, len(keys), *keys, *args)
                finally:
                    await other.aclose()
                lost.append(self.name)
                raise rex.ConnectionError("the connection broke before the answer")

            monkeypatch.setattr(Script, "_run_and_wait_on_node", answer_lost)
            quick = backbone.ProducerOptions(min_replicas=1, replica_timeout=0.3)
            hasty = shipment_tracking_producer(bus, "orders", options=quick)
            with (
                paused(replica.process),
                pytest.raises(backbone.ReplicationTimeout) as caught,
            ):
                await hasty.packing("b@example.com", 2, moment())
            assert lost == ["publish"]
            assert caught.value.replicas == 0
            assert await bus.redis.xlen(stream) == 2  # written once
        finally:
            await drop_environment(bus)


# --- a transaction on the master of its slot --------------------------------------


async def test_a_projection_page_goes_to_the_master_of_its_slot(
    cluster_bus: backbone.Backbone,
) -> None:
    """A page is one transaction on a connection to the master of the
    projection's slot. Sent where the client's map of the slots (stale here)
    says, it is refused (MOVED) as transient, with nothing applied, and the
    next page goes to the right master."""
    bus = cluster_bus
    producer = shipment_tracking_producer(bus, "orders")
    for n in range(5):
        await producer.packing(f"u{n % 2}@example.com", n, moment())
    projection = counts_projection(bus, page=2)
    client = cluster_client(bus)
    await client.initialize()
    slot = key_slot(projection.checkpoint_key.encode())
    right = client.get_node_from_key(projection.checkpoint_key)
    wrong = next(n for n in client.get_primaries() if n.name != right.name)
    client.nodes_manager.slots_cache[slot] = [wrong]

    with pytest.raises(rex.TryAgainError, match="moved"):
        await projection.catch_up()
    assert await projection.checkpoint() is None
    assert client.get_node_from_key(projection.checkpoint_key).name == right.name
    assert await projection.catch_up() == 5
    counts = await bus.redis.hgetall(projection.key("by-email"))
    assert counts == {b"u0@example.com": b"3", b"u1@example.com": b"2"}
