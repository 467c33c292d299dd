"""Fault tests: real redis-server, consumers in separate OS processes that get killed,
a server that restarts, bad input, a slow handler, SIGTERM. Each prints its figures
(events, handled, lost, duplicates, dead-lettered)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import backbone
from conftest import RedisServer, drop_environment, eventually, free_port
from contracts.shipment_tracking_gen import shipment_tracking_producer
from helpers import moment, write_bad_inputs

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "fault_worker.py"
URI = "faults"
GROUP = "workers"


class Workers:
    """Starts and stops fault_worker.py processes; reads what they recorded."""

    def __init__(self, bus: backbone.Backbone, url: str) -> None:
        self.bus = bus
        self.url = url
        self.prefix = f"bb:{{{bus.environment}:test}}"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    async def start(self, consumer: str, **options: Any) -> subprocess.Popen[bytes]:
        await self.bus.redis.delete(f"{self.prefix}:ready:{consumer}")
        args = [
            sys.executable,
            str(WORKER),
            "--url",
            self.url,
            "--environment",
            self.bus.environment,
            "--uri",
            URI,
            "--group",
            GROUP,
            "--consumer",
            consumer,
            "--prefix",
            self.prefix,
        ]
        for name, value in options.items():
            args += [f"--{name.replace('_', '-')}", str(value)]
        proc = subprocess.Popen(args, cwd=ROOT)  # noqa: ASYNC220 - starts, does not wait
        self.procs[consumer] = proc
        await eventually(
            lambda: self.bus.redis.exists(f"{self.prefix}:ready:{consumer}"),
            timeout=30,
            message=f"worker {consumer} ready",
        )
        return proc

    def signal(self, consumer: str, sig: int) -> None:
        self.procs[consumer].send_signal(sig)

    async def wait_exit(self, consumer: str, timeout: float = 30) -> int:
        proc = self.procs[consumer]
        await eventually(
            lambda: proc.poll() is not None, timeout=timeout, message="exit"
        )
        return int(proc.returncode)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    async def seen(self) -> dict[str, int]:
        raw = await self.bus.redis.hgetall(f"{self.prefix}:seen")
        return {k.decode(): int(v) for k, v in raw.items()}

    async def handled(self) -> int:
        return int(await self.bus.redis.hlen(f"{self.prefix}:seen"))

    async def members(self, name: str) -> set[str]:
        return {
            m.decode() for m in await self.bus.redis.smembers(f"{self.prefix}:{name}")
        }

    async def stats(self, consumer: str) -> dict[str, int]:
        raw = await self.bus.redis.hgetall(f"{self.prefix}:stats:{consumer}")
        return {k.decode(): int(v) for k, v in raw.items()}


def report(capsys: pytest.CaptureFixture[str], name: str, **figures: int) -> None:
    text = ", ".join(f"{k}={v}" for k, v in figures.items())
    with capsys.disabled():
        print(f"\n[fault {name}] {text}")


async def publish(bus: backbone.Backbone, count: int, start: int = 0) -> list[str]:
    """COUNT events in atomic batches of 500; returns their ids in order."""
    producer = shipment_tracking_producer(bus, URI)
    ids: list[str] = []
    for base in range(start, start + count, 500):
        async with producer.batch() as batch:
            for i in range(base, min(base + 500, start + count)):
                batch.packing(f"u{i}@example.com", i, moment())
        ids += [e.id for e in batch.event_ids]
    return ids


async def pending(bus: backbone.Backbone) -> int:
    info = await bus.redis.xpending(bus.keys(URI).stream, GROUP)
    return int(info["pending"])


@pytest.fixture
async def workers(real_bus: backbone.Backbone, real_url: str) -> AsyncIterator[Workers]:
    group = Workers(real_bus, real_url)
    try:
        yield group
    finally:
        group.stop_all()


async def test_a_sigkill_of_one_of_three_consumers_loses_nothing(
    real_bus: backbone.Backbone, workers: Workers, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("w1", "w2", "w3"):
        await workers.start(name, delay=0.002, concurrency=8, claim_idle=1.0)
    ids = await publish(real_bus, 10_000)
    await eventually(lambda: _at_least(workers.handled(), 2_500), timeout=60)
    workers.signal("w2", signal.SIGKILL)
    assert await workers.wait_exit("w2") == -signal.SIGKILL
    at_kill = await workers.handled()
    await eventually(lambda: _at_least(workers.handled(), 10_000), timeout=120)
    await eventually(lambda: _equals(pending(real_bus), 0), timeout=60)
    seen = await workers.seen()
    lost = len(set(ids) - set(seen))
    duplicates = sum(n - 1 for n in seen.values())
    claimed = 0
    for name in ("w1", "w3"):
        claimed += (await workers.stats(name)).get("claimed", 0)
    report(
        capsys,
        "a: SIGKILL 1 of 3 consumers",
        events=len(ids),
        handled_before_kill=at_kill,
        handled=len(seen),
        lost=lost,
        duplicates=duplicates,
        claimed_from_dead=claimed,
        dead_lettered=await backbone.DeadLetters(real_bus, URI).count(),
    )
    assert lost == 0
    assert set(seen) == set(ids)
    for survivor in ("w1", "w3"):
        assert workers.procs[survivor].poll() is None, f"{survivor} still consuming"


@pytest.fixture
def durable_server(request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    fsync = request.param
    with tempfile.TemporaryDirectory(prefix="backbone-aof-") as tmp:
        server = RedisServer(
            free_port(), Path(tmp), "--appendonly", "yes", "--appendfsync", fsync
        )
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.mark.parametrize(
    ("durable_server", "how"),
    [("always", "SIGKILL"), ("everysec", "SIGKILL"), ("everysec", "SIGTERM")],
    indirect=["durable_server"],
)
async def test_b_redis_restart_loses_no_acknowledged_publish(
    durable_server: RedisServer,
    environment: str,
    capsys: pytest.CaptureFixture[str],
    how: str,
) -> None:
    bus = backbone.Backbone(durable_server.url, environment=environment)
    workers = Workers(bus, durable_server.url)
    try:
        for name in ("w1", "w2"):
            await workers.start(name, delay=0.001)
        producer = shipment_tracking_producer(
            bus, URI, options=backbone.ProducerOptions(publish_timeout=30)
        )
        acknowledged: list[str] = []
        restarted = asyncio.Event()

        async def restart() -> None:
            await eventually(lambda: len(acknowledged) >= 1_000, timeout=60)
            durable_server.stop(kill=how == "SIGKILL")
            durable_server.start()
            restarted.set()

        restarter = asyncio.create_task(restart())
        for i in range(3_000):
            event_id = await producer.packing(f"u{i}@example.com", i, moment())
            acknowledged.append(event_id.id)
        await restarter
        assert restarted.is_set()
        await eventually(lambda: _at_least(workers.handled(), 3_000), timeout=120)
        stored = {e[0].decode() for e in await bus.redis.xrange(bus.keys(URI).stream)}
        seen = await workers.seen()
        lost = len(set(acknowledged) - stored)
        unhandled = len(set(acknowledged) - set(seen))
        # Each consumer lost Redis and found it again (its counters are
        # refreshed every 20 ms, and its last reconnect may follow a backoff).
        for name in ("w1", "w2"):

            async def reconnected(name: str = name) -> bool:
                return (await workers.stats(name)).get("reconnects", 0) >= 1

            await eventually(reconnected, timeout=30, message=f"{name} reconnected")
        reconnects = 0
        for name in ("w1", "w2"):
            reconnects += (await workers.stats(name)).get("reconnects", 0)
        report(
            capsys,
            f"b: redis-server {how} + restart (appendfsync {durable_server.extra[-1]})",
            events=len(acknowledged),
            stored=len(stored),
            handled=len(seen),
            lost=lost,
            unhandled=unhandled,
            duplicates=sum(n - 1 for n in seen.values()),
            consumer_reconnects=reconnects,
        )
        assert lost == 0
        assert unhandled == 0
        assert len(stored) == len(acknowledged)
        assert reconnects >= 2
        for name in ("w1", "w2"):
            assert workers.procs[name].poll() is None, f"{name} survived the restart"
    finally:
        workers.stop_all()
        await drop_environment(bus)
        await bus.close()


async def test_c_bad_input_is_dead_lettered_and_the_consumer_goes_on(
    real_bus: backbone.Backbone, workers: Workers, capsys: pytest.CaptureFixture[str]
) -> None:
    valid_before = await publish(real_bus, 10)
    # Written before the consumer starts (raw writes are not atomic).
    cases = await write_bad_inputs(real_bus, URI)
    await workers.start("w1")
    valid_after = await publish(real_bus, 10, start=10)
    await eventually(lambda: _at_least(workers.handled(), 20), timeout=30)
    letters = backbone.DeadLetters(real_bus, URI)
    await eventually(lambda: _at_least(letters.count(), len(cases)), timeout=30)
    await eventually(lambda: _equals(pending(real_bus), 0), timeout=30)
    by_entry = {letter.event_id.id: letter for letter in await letters.list()}
    seen = await workers.seen()
    report(
        capsys,
        "c: bad input",
        events=20 + len(cases),
        handled=len(seen),
        lost=len(set(valid_before + valid_after) - set(seen)),
        duplicates=sum(n - 1 for n in seen.values()),
        dead_lettered=len(by_entry),
    )
    for reason, entry_id in cases.items():
        assert by_entry[entry_id].reason == reason
    assert set(seen) == set(valid_before + valid_after)
    assert workers.procs["w1"].poll() is None, "the consumer is still running"


async def test_d_slow_handler_and_fast_producer_stay_within_max_in_flight(
    real_bus: backbone.Backbone, workers: Workers, capsys: pytest.CaptureFixture[str]
) -> None:
    limit = 20
    proc = await workers.start("w1", delay=0.005, concurrency=4, max_in_flight=limit)
    rss_start = _rss_kib(proc.pid)
    highest_pending = 0
    highest_rss = rss_start
    producing = asyncio.create_task(publish(real_bus, 2_000))
    while True:
        highest_pending = max(highest_pending, await pending(real_bus))
        highest_rss = max(highest_rss, _rss_kib(proc.pid))
        if producing.done() and await workers.handled() >= 2_000:
            break
        await asyncio.sleep(0.002)  # sampling period of the observer
    ids = producing.result()
    await eventually(lambda: _equals(pending(real_bus), 0), timeout=30)
    stats = await workers.stats("w1")
    seen = await workers.seen()
    report(
        capsys,
        "d: slow handler, fast producer",
        events=len(ids),
        handled=len(seen),
        lost=len(set(ids) - set(seen)),
        duplicates=sum(n - 1 for n in seen.values()),
        max_in_flight=limit,
        highest_in_flight=stats["max_in_flight_seen"],
        highest_pending_in_redis=highest_pending,
        rss_growth_kib=highest_rss - rss_start,
    )
    assert stats["max_in_flight_seen"] <= limit
    assert highest_pending <= limit
    assert set(seen) == set(ids)


async def test_e_sigterm_finishes_running_handlers_and_loses_nothing(
    real_bus: backbone.Backbone, workers: Workers, capsys: pytest.CaptureFixture[str]
) -> None:
    await workers.start("w1", delay=0.4, concurrency=3, max_in_flight=6)
    ids = await publish(real_bus, 30)
    await eventually(
        lambda: _at_least(_count(workers.members("started")), 3), timeout=30
    )
    workers.signal("w1", signal.SIGTERM)
    assert await workers.wait_exit("w1") == 0
    started = await workers.members("started")
    finished = await workers.members("finished")
    rows = await real_bus.redis.xpending_range(
        real_bus.keys(URI).stream, GROUP, "-", "+", 100
    )
    still_pending = {r["message_id"].decode() for r in rows}
    groups = await real_bus.redis.xinfo_groups(real_bus.keys(URI).stream)
    last_delivered = groups[0]["last-delivered-id"].decode()
    undelivered = {i for i in ids if _key(i) > _key(last_delivered)}
    lost = set(ids) - finished - still_pending - undelivered
    report(
        capsys,
        "e: SIGTERM during processing",
        events=len(ids),
        started=len(started),
        finished_and_acked=len(finished),
        left_pending=len(still_pending),
        never_delivered=len(undelivered),
        lost=len(lost),
    )
    assert started == finished, "every handler that started finished"
    assert not finished & still_pending, "finished events are acked"
    assert not lost
    # A restart under the same name handles the rest, nothing twice.
    await workers.start("w1", delay=0.01, concurrency=3, max_in_flight=6)
    await eventually(lambda: _at_least(workers.handled(), 30), timeout=60)
    seen = await workers.seen()
    assert set(seen) == set(ids)
    assert sum(n - 1 for n in seen.values()) == 0


def _key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


async def _at_least(value: Any, minimum: int) -> bool:
    try:
        return int(await value) >= minimum
    except redis.exceptions.ConnectionError:
        # The test's own client met the restart on a pooled connection (the
        # producer writes through a connection of its own): ask again.
        return False


async def _equals(value: Any, expected: int) -> bool:
    return int(await value) == expected


async def _count(value: Any) -> int:
    return len(await value)


if os.name != "posix":  # pragma: no cover
    pytest.skip("fault tests need POSIX signals", allow_module_level=True)
