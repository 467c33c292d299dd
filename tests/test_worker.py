"""``backbone run``: subscription factories as a service, one process or a
supervised pool, one signal handling, a restart for a worker that dies."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer

import backbone
from backbone.cli.run import event_loop
from backbone.worker import WorkerSettings, run_worker
from conftest import eventually, free_port
from contracts.shipment_tracking_gen import shipment_tracking_producer
from helpers import moment

ROOT = Path(__file__).resolve().parent.parent
URI = "orders"

SERVICE = textwrap.dedent(
    '''
    """A service of two groups, recording what it handles in Redis."""
    import os

    import backbone
    from contracts.shipment_tracking_gen import subscribe_shipment_tracking


    class Marker:
        def __init__(self, bus, group):
            self.bus, self.group = bus, group

        def key(self, what):
            return f"{self.bus.keys('orders').stream}:test:{what}:{self.group}"

        async def order_placed(self, user, product, time): ...
        async def on_delivery(self, email, product_id, time): ...
        async def on_received(self, email, product_id, time): ...

        async def packing(self, email, product_id, time):
            await self.bus.redis.sadd(self.key("handled"), product_id)


    async def inventory(bus):
        marker = Marker(bus, "inventory")
        await bus.redis.sadd(marker.key("pids"), os.getpid())
        return subscribe_shipment_tracking(
            bus, "orders", marker, group="inventory",
            start=backbone.StartFrom.BEGINNING,
            options=backbone.SubscriptionOptions(block=0.5, claim_idle=1.0),
        )


    def billing(bus):
        return [
            subscribe_shipment_tracking(
                bus, "orders", Marker(bus, "billing"), group="billing",
                start=backbone.StartFrom.BEGINNING,
                options=backbone.SubscriptionOptions(block=0.5, claim_idle=1.0),
            )
        ]


    not_a_factory = 42


    def raises(bus):
        raise KeyError("no such table")


    def garbage(bus):
        return 42
    '''
)


@pytest.fixture
def service_dir(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "svc.py").write_text(SERVICE)
    return tmp_path


def run_command(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    environ = {k: v for k, v in os.environ.items() if k != "BACKBONE_REDIS_URL"}
    environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests")])
    environ.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "backbone", "run", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environ,
    )


def key(bus: backbone.Backbone, what: str, group: str) -> str:
    return f"{bus.keys(URI).stream}:test:{what}:{group}"


async def publish(bus: backbone.Backbone, start: int, count: int) -> None:
    producer = shipment_tracking_producer(bus, URI)
    for i in range(start, start + count):
        await producer.packing(f"u{i}@example.com", i, moment())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
async def test_a_pool_of_workers_serves_two_groups_and_stops_on_sigterm(
    real_bus: backbone.Backbone, real_url: str, service_dir: Path
) -> None:
    bus = real_bus
    process = run_command(
        service_dir,
        "svc:inventory",
        "svc:billing",
        "--workers",
        "2",
        "--loop",
        "uvloop",
        "--redis-url",
        real_url,
        "--environment",
        bus.environment,
    )
    try:
        pids = key(bus, "pids", "inventory")
        await eventually(
            lambda: _count(bus, pids, 2), timeout=30, message="two workers up"
        )
        await publish(bus, 0, 20)
        for group in ("inventory", "billing"):
            await eventually(
                lambda group=group: _count(bus, key(bus, "handled", group), 20),
                timeout=30,
                message=f"{group} handled everything",
            )
        workers = {int(p) for p in await bus.redis.smembers(pids)}
        # A worker that dies is replaced; what is published meanwhile is handled.
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        await eventually(lambda: _count(bus, pids, 3), timeout=30, message="restart")
        await publish(bus, 20, 10)
        for group in ("inventory", "billing"):
            await eventually(
                lambda group=group: _count(bus, key(bus, "handled", group), 30),
                timeout=30,
                message=f"{group} handled after the restart",
            )
        # What the killed worker held is claimed by the others (claim_idle 1s).
        for group in ("inventory", "billing"):
            await eventually(
                lambda group=group: _drained(bus, group),
                timeout=30,
                message=f"{group} pending drained",
            )
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    everyone = {int(p) for p in await bus.redis.smembers(pids)}
    assert len(everyone) == 3
    assert not [pid for pid in everyone if pid_alive(pid)]
    for group in ("inventory", "billing"):
        info = await bus.redis.xpending(bus.keys(URI).stream, group)
        assert info["pending"] == 0, group


async def _drained(bus: backbone.Backbone, group: str) -> bool:
    info = await bus.redis.xpending(bus.keys(URI).stream, group)
    return int(info["pending"]) == 0


async def _count(bus: backbone.Backbone, name: str, expected: int) -> bool:
    return int(await bus.redis.scard(name)) >= expected


async def test_run_worker_stops_every_subscription_on_one_signal(
    bus: backbone.Backbone, service_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In one process, on both backends: the factories' subscriptions share the
    connection, and one SIGTERM stops them all (exit code 0)."""
    monkeypatch.chdir(service_dir)
    monkeypatch.syspath_prepend(str(service_dir))
    handled = {g: key(bus, "handled", g) for g in ("inventory", "billing")}
    settings = WorkerSettings(
        ("svc:inventory", "svc:billing"), bus.url, bus.environment
    )
    if bus.embedded:
        # An embedded Redis lives in its connection: the worker must use this one.
        monkeypatch.setattr("backbone.worker.Backbone", lambda *a, **k: _Shared(bus))
    worker = asyncio.ensure_future(run_worker(settings))
    await publish(bus, 0, 5)
    for name in handled.values():
        await eventually(lambda name=name: _count(bus, name, 5), message=name)
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(worker, 20) == 0


class _Shared:
    """The test's own connection, handed to the worker without being closed."""

    def __init__(self, bus: backbone.Backbone) -> None:
        self.bus = bus

    async def __aenter__(self) -> backbone.Backbone:
        return self.bus

    async def __aexit__(self, *exc: object) -> None:
        return None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["svc"], "is not module:attribute"),
        (["nosuchmodule:x"], "cannot import 'nosuchmodule'"),
        (["svc:missing"], "has no attribute 'missing'"),
        (["svc:not_a_factory"], "is an int, not a function"),
        (["./svc:billing"], "is not a module name"),
        (["svc.py:billing"], "(for example svc:billing)"),
        (["svc:billing", "--log-level", "loud"], "--log-level 'loud' is not one of"),
        (["svc:billing", "--loop", "trio"], "--loop 'trio' is not one of"),
    ],
)
def test_mistakes_are_one_line_and_a_non_zero_exit(
    service_dir: Path, args: list[str], message: str
) -> None:
    process = run_command(service_dir, *args)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 2, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert message in lines[0]
    assert "Traceback" not in err


@pytest.mark.slow
async def test_a_worker_serves_its_metrics_for_prometheus(
    real_bus: backbone.Backbone, real_url: str, service_dir: Path
) -> None:
    bus = real_bus
    port = free_port()
    process = run_command(
        service_dir,
        "svc:billing",
        "--redis-url",
        real_url,
        "--environment",
        bus.environment,
        "--metrics-port",
        str(port),
        "--loop",
        "asyncio",
    )
    try:
        await publish(bus, 0, 7)
        handled = key(bus, "handled", "billing")
        await eventually(lambda: _count(bus, handled, 7), timeout=30, message="7")

        def scraped() -> str:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{port}/metrics", timeout=5
            ) as answer:
                return str(answer.read().decode())

        def counted() -> bool:
            try:
                text = scraped()
            except OSError:
                return False
            return any(
                line.startswith("backbone_events_handled_total{")
                and 'group="billing"' in line
                and line.endswith(" 7.0")
                for line in text.splitlines()
            )

        await eventually(counted, timeout=30, message="handled counter scraped")
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("svc:raises", "svc:raises raised KeyError: 'no such table' ("),
        ("svc:garbage", "svc:garbage returned an int; a factory returns"),
    ],
)
@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_factory_that_fails_stops_the_service_with_one_line(
    service_dir: Path, real_url: str, target: str, message: str, workers: str
) -> None:
    """Restarting a worker whose factory fails would fail again: the service
    stops (exit 3), also under a supervisor, instead of restarting for ever."""
    process = run_command(
        service_dir, target, "--workers", workers, "--redis-url", real_url
    )
    out, err = process.communicate(timeout=60)
    assert process.returncode == 3, out + err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors, err
    assert all(message in line for line in errors)
    assert "Traceback" not in err
    if workers == "1":
        assert len(err.strip().splitlines()) == 1, err


def test_the_loop_is_uvloop_when_installed_and_asked_for(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("uvloop")
    assert event_loop("asyncio") is None
    auto = event_loop("auto")
    assert auto is not None
    assert "uvloop" in auto.__module__
    monkeypatch.setitem(sys.modules, "uvloop", None)  # not installed
    assert event_loop("auto") is None
    with pytest.raises(typer.Exit) as exit_info:
        event_loop("uvloop")
    assert exit_info.value.exit_code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "pip install 'backbone[fast]'" in line
