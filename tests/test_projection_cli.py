"""``backbone projection run|rebuild|status`` in subprocesses on the real server:
a projection SIGKILLed mid-catch-up resumes without applying an event twice."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

import backbone
from conftest import eventually
from contracts.shipment_tracking_gen import shipment_tracking_producer
from helpers import moment

ROOT = Path(__file__).resolve().parent.parent
URI = "orders"
EMAILS = 7

SERVICE = textwrap.dedent(
    '''
    """A projection of per-email packing counts, slow enough to be killed."""
    import asyncio

    import backbone
    from contracts.shipment_tracking_gen import ShipmentTrackingDispatcher


    class Counts:
        def __init__(self, bus):
            keys = bus.keys("orders")
            self.counts = keys.projection("counts", "by-email")
            self.ids = keys.projection("counts", "ids")

        async def packing(self, email, product_id, time, *, context):
            await asyncio.sleep(0.002)  # a slow read model, not synchronisation
            context.writes.hincrby(self.counts, email, 1)
            context.writes.rpush(self.ids, product_id)

        async def reset(self, writes):
            writes.delete(self.counts, self.ids)


    def counts(bus):
        return backbone.Projection(
            bus, "orders", "counts", Counts(bus), ShipmentTrackingDispatcher, page=5
        )


    def garbage(bus):
        return 42


    def raises(bus):
        raise KeyError("no such table")
    '''
)


@pytest.fixture
def service_dir(tmp_path: Path) -> Path:
    (tmp_path / "svc.py").write_text(SERVICE)
    return tmp_path


def command(cwd: Path, *args: str) -> subprocess.Popen[str]:
    environ = {k: v for k, v in os.environ.items() if k != "BACKBONE_REDIS_URL"}
    environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    return subprocess.Popen(
        [sys.executable, "-m", "backbone", "projection", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environ,
    )


def finished(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=60)
    return process.returncode, out, err


def position(entry_id: str | None) -> tuple[int, int]:
    if entry_id is None:
        return (0, 0)
    ms, seq = entry_id.split("-")
    return (int(ms), int(seq))


async def publish(bus: backbone.Backbone, count: int) -> list[str]:
    producer = shipment_tracking_producer(bus, URI)
    return [
        (await producer.packing(f"u{i % EMAILS}@example.com", i, moment())).id
        for i in range(count)
    ]


async def model(bus: backbone.Backbone) -> tuple[dict[str, int], list[int]]:
    keys = bus.keys(URI)
    raw = await bus.redis.hgetall(keys.projection("counts", "by-email"))
    ids = await bus.redis.lrange(keys.projection("counts", "ids"), 0, -1)
    return {k.decode(): int(v) for k, v in raw.items()}, [int(i) for i in ids]


def fold(count: int) -> dict[str, int]:
    return dict(Counter(f"u{i % EMAILS}@example.com" for i in range(count)))


async def checkpoint(bus: backbone.Backbone) -> str | None:
    raw = await bus.redis.hget(bus.keys(URI).projection("counts"), "id")
    return None if raw is None else raw.decode()


@pytest.mark.slow
async def test_a_projection_killed_mid_catch_up_resumes_exactly(
    real_bus: backbone.Backbone, real_url: str, service_dir: Path
) -> None:
    bus = real_bus
    ids = await publish(bus, 300)
    args = ("run", "svc:counts", "--redis-url", real_url, "-e", bus.environment)
    for _ in range(2):
        done = await checkpoint(bus)
        start = ids.index(done) + 1 if done else 0
        target = ids[random.randrange(start + 5, start + 100)]
        process = command(service_dir, *args)
        try:

            async def passed(target: str = target) -> bool:
                return position(await checkpoint(bus)) >= position(target)

            await eventually(passed, timeout=60, message=f"checkpoint past {target}")
            process.kill()
            process.wait(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        # Whatever the point of the kill: the read model is the fold of exactly
        # the events up to the checkpoint.
        applied = ids.index(str(await checkpoint(bus))) + 1
        assert await model(bus) == (fold(applied), list(range(applied)))
    process = command(service_dir, *args)
    try:

        async def complete() -> bool:
            return await checkpoint(bus) == ids[-1]

        await eventually(complete, timeout=60, message="caught up")
        process.send_signal(signal.SIGTERM)
        code, _out, err = finished(process)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert code == 0, err
    assert "stopped: " in err
    assert await model(bus) == (fold(300), list(range(300)))


@pytest.mark.slow
async def test_status_shows_lag_and_rebuild_starts_from_zero(
    real_bus: backbone.Backbone, real_url: str, service_dir: Path
) -> None:
    bus = real_bus
    ids = await publish(bus, 12)
    where = ("--redis-url", real_url, "-e", bus.environment)
    code, out, err = finished(command(service_dir, "status", "svc:counts", *where))
    assert code == 0, err
    assert "counts" in out
    assert f"{ids[-1]} " in out
    assert " 12 " in out
    code, out, err = finished(command(service_dir, "rebuild", "svc:counts", *where))
    assert code == 0, err
    assert f"rebuilt counts: 12 applied, 0 skipped, checkpoint {ids[-1]}" in out
    await bus.redis.hset(bus.keys(URI).projection("counts", "by-email"), "x", 1)
    await publish(bus, 3)
    by_name = ("status", "--uri", URI, "--name", "counts", *where)
    code, out, err = finished(command(service_dir, *by_name))
    assert code == 0, err
    assert f"{ids[-1]} " in out
    assert " 3 " in out
    code, out, err = finished(command(service_dir, "rebuild", "svc:counts", *where))
    assert code == 0, err
    assert "15 applied" in out
    counts, _ids = await model(bus)
    assert "x" not in counts
    assert sum(counts.values()) == 15


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("run", "nosuchmodule:counts"), 2, "no such module"),
        (("run", "svc:missing"), 2, "has no attribute 'missing'"),
        (("status", "svc:garbage"), 1, "returned int, not a backbone.Projection"),
        (("rebuild", "svc:raises"), 1, "raised KeyError"),
        (("status",), 2, "or --uri and --name"),
        (("status", "svc:counts", "--name", "x"), 2, "not both"),
        (("status", "--uri", "orders", "--name", "a:b"), 1, "projection name"),
    ],
)
async def test_cli_errors_are_one_line_and_a_non_zero_exit(
    real_url: str,
    service_dir: Path,
    args: tuple[str, ...],
    code: int,
    message: str,
) -> None:
    process = command(service_dir, *args, "--redis-url", real_url, "-e", "tcli")
    returned, out, err = finished(process)
    assert returned == code, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert message in lines[0]


async def test_an_unreachable_server_is_one_line(service_dir: Path) -> None:
    process = command(
        service_dir,
        "status",
        "--uri",
        "o",
        "--name",
        "n",
        "--redis-url",
        "redis://127.0.0.1:1/0",
    )
    returned, _out, err = finished(process)
    assert returned == 1
    assert err.strip().count("\n") == 0
    assert "cannot reach Redis" in err
