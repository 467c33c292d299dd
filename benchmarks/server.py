"""The Redis the benchmarks run against: a redis-server of their own, or a given URL.

All figures of one run come from one server. By default the harness starts its own
``redis-server`` (no persistence, a free loopback port, a temporary directory), so
nothing else competes with it and it may be flushed and reconfigured freely. With
``--redis-url`` the benchmarks use that server instead; they then delete only their
own keys (never ``FLUSHALL``) and put back any configuration they change.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis

__all__ = ["BenchServer", "ServerUnavailable", "open_server"]


class ServerUnavailable(RuntimeError):
    """No redis-server binary, or it did not start."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class BenchServer:
    """Where the benchmarks write: a URL, whether the harness owns the server, and
    the prefix under which every key of this run lives."""

    url: str
    owned: bool
    directory: Path
    port: int | None = None
    binary: str | None = None
    run_id: str = field(default_factory=lambda: secrets.token_hex(3))

    @property
    def environment(self) -> str:
        """backbone environment name of this run (part of every key's hash tag)."""
        return f"bench{self.run_id}"

    def client(self, **kwargs: Any) -> aioredis.Redis:
        return aioredis.Redis.from_url(self.url, **kwargs)

    def sync_client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    async def clean(self, client: aioredis.Redis) -> None:
        """Remove everything this run wrote: FLUSHALL on the harness's own server,
        else only this run's keys (found by SCAN)."""
        if self.owned:
            await client.flushall()
            return
        batch: list[bytes] = []
        async for key in client.scan_iter(match=f"*{self.environment}*", count=5000):
            batch.append(key)
            if len(batch) >= 1000:
                await client.unlink(*batch)
                batch.clear()
        if batch:
            await client.unlink(*batch)

    def info(self) -> dict[str, Any]:
        client = self.sync_client()
        try:
            info: dict[str, Any] = client.info("server")
            memory: dict[str, Any] = client.info("memory")
        finally:
            client.close()
        return {
            "redis_version": info.get("redis_version"),
            "arch_bits": info.get("arch_bits"),
            "mem_allocator": memory.get("mem_allocator"),
            "owned": self.owned,
            "url": self.url if self.owned else "(given with --redis-url)",
        }


def _start(binary: str, port: int, directory: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
            "--logfile",
            str(directory / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port, socket_connect_timeout=0.2)
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                if client.ping():
                    return process
            except redis.exceptions.RedisError:
                if process.poll() is not None:
                    log = (directory / "redis.log").read_text(errors="replace")
                    raise ServerUnavailable(
                        f"redis-server exited: {log[-2000:]}"
                    ) from None
                if time.monotonic() > deadline:
                    process.kill()
                    raise ServerUnavailable(
                        "redis-server did not answer within 10s"
                    ) from None
                time.sleep(0.02)  # waiting for the server to accept connections
    finally:
        client.close()


@contextlib.contextmanager
def open_server(url: str | None = None) -> Iterator[BenchServer]:
    """The server of one benchmark run: URL if given, else a redis-server started
    here on a free port (stopped again on exit)."""
    with tempfile.TemporaryDirectory(prefix="backbone-bench-") as tmp:
        directory = Path(tmp)
        if url is not None:
            yield BenchServer(url=url, owned=False, directory=directory)
            return
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServerUnavailable(
                "no redis-server binary on PATH (apt-get install redis-server), "
                "or pass --redis-url"
            )
        port = free_port()
        process = _start(binary, port, directory)
        try:
            yield BenchServer(
                url=f"redis://127.0.0.1:{port}/0",
                owned=True,
                directory=directory,
                port=port,
                binary=binary,
            )
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
