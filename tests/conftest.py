"""Test session plumbing: the three backends, isolation per test, and polling helpers.

Behaviour tests take the ``url`` fixture (or ``bus``, built on it) and run on
each backend: the embedded fakeredis (``fake``), a real redis-server (``real``)
and a Redis Cluster of three masters with one replica each (``cluster``), where
every key of a stream lives in its own slot, so a script or a transaction that
touches keys of two slots fails with CROSSSLOT: running the whole behaviour
suite there is what proves that no code path does.

The real server is the one named by ``BACKBONE_REDIS_URL``, or one this session
starts itself on a free loopback port; the cluster is the one named by
``BACKBONE_CLUSTER_URL`` (``redis+cluster://host:port``), or one this session
starts itself (tests/cluster.py, about 3 s). Without the redis-server (and, for
the cluster, redis-cli) binaries those halves are skipped, except under
``CI=true``, where they fail.

Choosing backends: ``BACKBONE_BACKENDS=fake,real`` (a comma-separated subset of
``fake,real,cluster``; all three by default) runs the behaviour tests on those
only, and deselects the tests of a backend left out (those marked ``cluster``,
or taking ``real_url``). The cluster parameter also carries the ``cluster``
mark, as do the tests that start clusters of their own, so ``pytest -m "not
cluster"`` leaves every cluster test out and ``pytest -m cluster`` runs them
alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import redis

import backbone
from backbone.script import Script
from cluster import LocalCluster
from proxy import FlakyProxy
from slot_monitor import monitoring, strays

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

BACKENDS_ENV = "BACKBONE_BACKENDS"
ALL_BACKENDS = ("fake", "real", "cluster")


def chosen_backends() -> tuple[str, ...]:
    """The backends ``$BACKBONE_BACKENDS`` names (all three when unset)."""
    raw = os.environ.get(BACKENDS_ENV, "").strip()
    if not raw:
        return ALL_BACKENDS
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "cluster: runs on a Redis Cluster (deselect with -m 'not cluster')",
    )
    unknown = sorted(set(chosen_backends()) - set(ALL_BACKENDS))
    if unknown or not chosen_backends():
        raise pytest.UsageError(
            f"{BACKENDS_ENV}={os.environ.get(BACKENDS_ENV)!r} names "
            f"{', '.join(unknown) or 'no backend'}; use a comma-separated subset of "
            f"{','.join(ALL_BACKENDS)}"
        )


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    """Without ``cluster`` in ``$BACKBONE_BACKENDS``, every test marked cluster
    is deselected; without ``real``, every test of the single real server."""
    chosen = chosen_backends()
    if set(ALL_BACKENDS) <= set(chosen):
        return
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        names = getattr(item, "fixturenames", ())
        unwanted = ("cluster" not in chosen and item.get_closest_marker("cluster")) or (
            "real" not in chosen and "real_redis_url" in names and "url" not in names
        )
        (dropped if unwanted else keep).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def _backend_params() -> list[Any]:
    marks = {"cluster": [pytest.mark.cluster]}
    return [
        pytest.param(name, marks=marks.get(name, []), id=name)
        for name in ALL_BACKENDS
        if name in chosen_backends()
    ]


# PostgreSQL for the archive tests (tests/pg.py: postgres_url, pg_schema).
pytest_plugins = ["pg"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A redis-server process of the test session's own."""

    def __init__(self, port: int, directory: Path, *extra: str) -> None:
        self.port = port
        self.directory = directory
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                "--logfile",
                str(self.directory / "redis.log"),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                if client.ping():
                    break
            except redis.exceptions.RedisError:
                if self.process.poll() is not None:
                    log = (self.directory / "redis.log").read_text(errors="replace")
                    raise RuntimeError(f"redis-server exited: {log[-2000:]}") from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)  # polling the server's readiness, not synchronising
        client.close()

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        self.process.wait(timeout=10)
        self.process = None


@pytest.fixture(scope="session")
def real_redis_url() -> Iterator[str | None]:
    """URL of a real Redis for this session, or None when there is none."""
    configured = os.environ.get("BACKBONE_REDIS_URL")
    if configured:
        yield configured
        return
    if shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("CI=true but no redis-server binary: install redis-server")
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="backbone-redis-") as tmp:
        server = RedisServer(free_port(), Path(tmp))
        server.start()
        try:
            yield server.url
        finally:
            server.stop()


def require_cluster_binaries() -> None:
    """Skip (fail under CI=true) without the binaries a LocalCluster needs."""
    missing = [b for b in ("redis-server", "redis-cli") if shutil.which(b) is None]
    if missing:
        if IN_CI:
            pytest.fail(f"CI=true but no {' or '.join(missing)}: install redis-server")
        pytest.skip(
            f"no {' or '.join(missing)} here (install redis-server to run the "
            "cluster tests)"
        )


@pytest.fixture(scope="session")
def local_cluster() -> Iterator[LocalCluster]:
    """A Redis Cluster of this session's own (3 masters, 1 replica each), for the
    tests that reach its nodes (pause a replica, ask a node directly)."""
    require_cluster_binaries()
    cluster = LocalCluster(3, 1).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def cluster_url(request: pytest.FixtureRequest) -> str:
    """URL of the Redis Cluster the behaviour tests run on: the one
    ``BACKBONE_CLUSTER_URL`` names, else :func:`local_cluster`."""
    configured = os.environ.get("BACKBONE_CLUSTER_URL")
    if configured:
        return configured
    cluster: LocalCluster = request.getfixturevalue("local_cluster")
    return cluster.url


@pytest.fixture(params=_backend_params())
def url(request: pytest.FixtureRequest) -> str:
    """The Redis URL of this test's backend (runs each test on each backend)."""
    if request.param == "fake":
        return "memory://"
    if request.param == "cluster":
        return str(request.getfixturevalue("cluster_url"))
    # Asked for here, not as a parameter, so that a run on the cluster alone
    # starts no single server.
    real_redis_url: str | None = request.getfixturevalue("real_redis_url")
    if real_redis_url is None:
        pytest.skip("no redis-server binary here (install redis-server to run these)")
    return real_redis_url


@pytest.fixture
def real_url(real_redis_url: str | None) -> str:
    """A real Redis only (for what fakeredis cannot show)."""
    if real_redis_url is None:
        pytest.skip("no redis-server binary here (install redis-server to run these)")
    return real_redis_url


@pytest.fixture
def environment() -> str:
    """A fresh environment name per test, so tests never see each other's keys."""
    return f"t{secrets.token_hex(4)}"


@pytest.fixture
async def bus(url: str, environment: str) -> AsyncIterator[backbone.Backbone]:
    """A connection to this test's backend, its keys dropped afterwards. On the
    cluster, MONITOR on every master watches the scripts the test runs: one
    that touches a key outside its declared keys' slot fails the test (Redis
    itself refuses that only when the key is on another node)."""
    connection = backbone.Backbone(url, environment=environment)
    try:
        if not connection.cluster:
            yield connection
            return
        async with contextlib.AsyncExitStack() as stack:
            try:
                monitors = await stack.enter_async_context(monitoring(connection))
            except redis.exceptions.ResponseError:  # a cluster that refuses MONITOR
                monitors = []
            yield connection
        stray = strays(monitors, {s.sha: f"{s.name}.lua" for s in shipped()})
        assert not stray, "\n".join(stray)
    finally:
        if not connection.embedded:
            await drop_environment(connection)
        await connection.close()


@pytest.fixture
async def real_bus(real_url: str, environment: str) -> AsyncIterator[backbone.Backbone]:
    """A connection to the real Redis only, its keys dropped afterwards."""
    connection = backbone.Backbone(real_url, environment=environment)
    try:
        yield connection
    finally:
        await drop_environment(connection)
        await connection.close()


@pytest.fixture
async def cluster_bus(
    cluster_url: str, environment: str
) -> AsyncIterator[backbone.Backbone]:
    """A connection to the Redis Cluster only, its keys dropped afterwards."""
    connection = backbone.Backbone(cluster_url, environment=environment)
    try:
        yield connection
    finally:
        await drop_environment(connection)
        await connection.close()


@pytest.fixture
async def proxy(real_url: str) -> AsyncIterator[FlakyProxy]:
    """A misbehaving TCP proxy in front of the real Redis (see proxy.py)."""
    target = urlparse(real_url)
    flaky = await FlakyProxy(
        target.hostname or "127.0.0.1", target.port or 6379
    ).start()
    try:
        yield flaky
    finally:
        await flaky.close()


def shipped() -> list[Script]:
    """Every Lua script backbone ships (its lua/ directory)."""
    folder = Path(backbone.__file__).parent / "lua"
    return [Script(path.stem) for path in sorted(folder.glob("*.lua"))]


async def drop_environment(connection: backbone.Backbone) -> None:
    """Delete every key of CONNECTION's environment. On a Redis Cluster the
    client's ``scan_iter`` walks every master, and its ``delete`` sends one DEL
    per slot of the keys given (a DEL of keys of several slots is CROSSSLOT)."""
    keys: list[bytes] = []
    # Stream keys ({env:uri}) and the environment's own ({env}: the keyring).
    for pattern in (
        f"bb:{{{connection.environment}:*",
        f"bb:{{{connection.environment}}}*",
    ):
        keys += [
            key async for key in connection.redis.scan_iter(match=pattern, count=1000)
        ]
    for start in range(0, len(keys), 1000):
        await connection.redis.delete(*keys[start : start + 1000])


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]],
    *,
    timeout: float = 10.0,
    message: str = "condition",
) -> None:
    """Poll CONDITION until it holds; fail after TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        await asyncio.sleep(0.005)
