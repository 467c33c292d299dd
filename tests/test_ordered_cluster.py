"""Ordered consumption on a real Redis Cluster, with member processes killed.

Three ordered members of one group, each a separate process (this file, run as
a script: ``python tests/test_ordered_cluster.py member ...``), consume keyed
events of a four-partition stream spread over the cluster's nodes. One member
is SIGKILLed mid-stream and a fourth joins. Each member records what its
handler handles in a Redis list; the test then checks, for every key, that the
steps were first handled exactly in order, none missing (a step handled again
after the kill is allowed: at least once).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import signal
import subprocess
import sys
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

# Run as a member process: the test helpers and the package, as under pytest.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytest

import backbone
from backbone.consume.leases import lease_key
from backbone.partitions import partition_for
from cluster import LocalCluster
from typed_contracts.partitioned_gen import orders_producer, subscribe_orders

URI = "orders"
GROUP = "ordered"
PARTITIONS = 4
KEYS = 50
STEPS = 40
LEASE_TTL = 2.0

pytestmark = pytest.mark.cluster


# --- a member process ---------------------------------------------------------------


class Recorder:
    """Handles Orders.placed by appending "<key> <step> <member> <token>" to a
    list, then working a little."""

    def __init__(self, bus: backbone.Backbone, out: str, member: str) -> None:
        self.bus = bus
        self.out = out
        self.member = member

    async def placed(
        self,
        order_id: str,
        seq: int,
        *,
        context: backbone.EventContext = backbone.NO_CONTEXT,
    ) -> None:
        token = context.lease.token if context.lease is not None else 0
        await self.bus.redis.rpush(self.out, f"{order_id} {seq} {self.member} {token}")
        # The handler's work, after its record: a member killed now has
        # recorded an event it did not acknowledge, which comes again.
        await asyncio.sleep(0.002)

    async def noted(self, text: str) -> None:
        pass


async def member(url: str, environment: str, name: str, out: str) -> None:
    async with backbone.Backbone(url, environment=environment) as bus:
        subscription = subscribe_orders(
            bus,
            URI,
            Recorder(bus, out, name),
            group=GROUP,
            consumer=name,
            start=backbone.StartFrom.BEGINNING,
            options=backbone.SubscriptionOptions(ordered=True, lease_ttl=LEASE_TTL),
        )
        await subscription
        subscription.stop_on_signals()
        await subscription.completion


# --- the test -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    from conftest import require_cluster_binaries  # (not in a member process)

    require_cluster_binaries()
    local = LocalCluster(3, 1).start()
    try:
        yield local
    finally:
        local.stop()


class Members:
    """The member processes of one test, stopped (or killed) at the end."""

    def __init__(self, url: str, environment: str, out: str, logs: Path) -> None:
        self.url = url
        self.environment = environment
        self.out = out
        self.logs = logs
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> None:
        log = (self.logs / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "member",
                self.url,
                self.environment,
                name,
                self.out,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def kill(self, name: str) -> None:
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def stop_all(self) -> dict[str, int]:
        """SIGTERM the running ones: their exit codes."""
        running = {n: p for n, p in self.processes.items() if p.poll() is None}
        for process in running.values():
            process.send_signal(signal.SIGTERM)
        codes: dict[str, int] = {}
        for name, process in running.items():
            try:
                codes[name] = process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = process.wait()
        return codes

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]


@pytest.fixture
async def bus(cluster: LocalCluster) -> AsyncIterator[backbone.Backbone]:
    connection = backbone.Backbone(cluster.url, environment=f"t{secrets.token_hex(4)}")
    try:
        yield connection
    finally:
        await connection.close()


async def test_per_key_order_holds_while_members_die_and_join(
    bus: backbone.Backbone, cluster: LocalCluster, tmp_path: Path
) -> None:
    from conftest import eventually

    out = f"bb:{{{bus.environment}}}:handled"
    members = Members(cluster.url, bus.environment, out, tmp_path)
    whole = bus.keys(URI)
    leases = [lease_key(whole.of_partition(p), GROUP) for p in range(PARTITIONS)]
    # The partitions spread over the nodes: one node's failure is not the test.
    assert len({cluster.master_of_key(k).port for k in leases}) > 1

    async def owners() -> list[str]:
        values = [await bus.redis.get(key) for key in leases]
        return [v.decode().split(" ")[1].split("~")[0] if v else "" for v in values]

    async def handled() -> list[str]:
        return [x.decode() for x in await bus.redis.lrange(out, 0, -1)]

    producer = orders_producer(bus, URI)

    async def publish(steps: range) -> None:
        for seq in steps:
            await asyncio.gather(*(producer.placed(f"k{k}", seq) for k in range(KEYS)))

    try:
        for name in ("m1", "m2", "m3"):
            members.start(name)

        async def three_hold() -> bool:
            return set(await owners()) == {"m1", "m2", "m3"}

        await eventually(three_hold, timeout=30, message="three members holding")
        await publish(range(STEPS // 2))
        await eventually(lambda: _count(bus, out, 300), message="300 handled")
        killed = [p for p, owner in enumerate(await owners()) if owner == "m1"]
        members.kill("m1")
        killed_at = await bus.redis.llen(out)
        members.start("m4")
        await publish(range(STEPS // 2, STEPS))
        await eventually(
            lambda: _all_handled(bus, out),
            timeout=40,
            message=f"all {KEYS * STEPS} steps handled",
        )
    except BaseException:
        for name in members.processes:
            print(f"--- {name} ---\n{members.log(name)}")
        raise
    finally:
        codes = members.stop_all()
    records = [r.split(" ") for r in await handled()]
    first: dict[str, list[int]] = defaultdict(list)
    seen: set[tuple[str, int]] = set()
    for key, seq, _, _ in records:
        if (key, int(seq)) not in seen:
            seen.add((key, int(seq)))
            first[key].append(int(seq))
    assert first == {f"k{k}": list(range(STEPS)) for k in range(KEYS)}
    # Handled twice only where a member died: handovers on a join are clean
    # (the running event finishes and is acknowledged before the lease goes).
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for key, seq, _, _ in records:
        counts[key, seq] += 1
    twice = {key for (key, _), n in counts.items() if n > 1}
    assert {partition_for(key, PARTITIONS) for key in twice} <= set(killed)
    # The killed member's partitions went on with the others, under new tokens.
    after = records[killed_at:]
    dead_tokens = {
        partition_for(key, PARTITIONS): int(token)
        for key, _, member, token in records[:killed_at]
        if member == "m1"
    }
    moved = [
        (partition_for(key, PARTITIONS), member, int(token))
        for key, _, member, token in after
        if partition_for(key, PARTITIONS) in killed
    ]
    assert killed
    assert moved
    for partition, member, token in moved:
        assert member != "m1"
        assert token > dead_tokens.get(partition, 0)
    # The member that joined took its share.
    assert any(member == "m4" for _, _, member, _ in after)
    # The others stopped cleanly on SIGTERM.
    assert codes == {"m2": 0, "m3": 0, "m4": 0}, {n: members.log(n) for n in codes}


async def _count(bus: backbone.Backbone, out: str, at_least: int) -> bool:
    return int(await bus.redis.llen(out)) >= at_least


async def _all_handled(bus: backbone.Backbone, out: str) -> bool:
    records = await bus.redis.lrange(out, 0, -1)
    steps = {tuple(r.decode().split(" ")[:2]) for r in records}
    return len(steps) == KEYS * STEPS


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="an ordered member process")
    parser.add_argument("role", choices=["member"])
    parser.add_argument("url")
    parser.add_argument("environment")
    parser.add_argument("name")
    parser.add_argument("out")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(member(args.url, args.environment, args.name, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
