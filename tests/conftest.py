"""Test session plumbing: the two backends, isolation per test, and polling helpers.

Behaviour tests take the ``url`` fixture and run twice: on the embedded fakeredis
backend and on a real redis-server. The real server is the one named by
``BACKBONE_REDIS_URL``, or one this session starts itself on a free loopback
port. Without a redis-server binary the real half is skipped, except under
``CI=true``, where it fails.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
import redis

import backbone
from proxy import FlakyProxy

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

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


@pytest.fixture(params=["fake", "real"])
def url(request: pytest.FixtureRequest, real_redis_url: str | None) -> str:
    """The Redis URL of this test's backend (runs each test on both)."""
    if request.param == "fake":
        return "memory://"
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
    connection = backbone.Backbone(url, environment=environment)
    try:
        yield connection
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


async def drop_environment(connection: backbone.Backbone) -> None:
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
