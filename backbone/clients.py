"""The Redis clients a :class:`~backbone.Backbone` talks through, built from its URL.

A single server's client packs commands with hiredis (C), and refuses a server
that is a node of a Redis Cluster at the first command (a plain client there
answers MOVED for most keys: confusing errors much later). ``redis+cluster://``
gets redis-py's cluster client, ``memory://`` an embedded fakeredis (the
``backbone[embedded]`` extra) with the in-process wake-ups its non-blocking
XREADGROUP needs. No client resends a command on its own: backbone retries by
itself where it is safe to.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Mapping
from typing import Any, Final, cast
from urllib.parse import urlparse

import hiredis
import redis.asyncio as aioredis
import redis.exceptions as rex
from redis.asyncio.cluster import RedisCluster
from redis.backoff import NoBackoff
from redis.retry import Retry

from .errors import ConfigurationError

__all__ = [
    "CLUSTER_SCHEMES",
    "EMBEDDED_EXTRA",
    "EMBEDDED_SCHEME",
    "Wakeups",
    "client_for",
    "redact",
    "refuse_cluster_node",
    "require_embedded",
]

EMBEDDED_SCHEME: Final = "memory://"
CLUSTER_SCHEMES: Final = ("redis+cluster://", "rediss+cluster://")
EMBEDDED_EXTRA: Final = "pip install 'backbone[embedded]'"


def require_embedded() -> types.ModuleType:
    """fakeredis, with the Lua it runs backbone's scripts with; a
    :class:`ConfigurationError` naming the extra to install when missing."""
    try:
        import fakeredis
        import lupa  # noqa: F401 - fakeredis runs EVAL with it
    except ImportError as exc:
        raise ConfigurationError(
            f"memory:// (the embedded in-process Redis) needs fakeredis with Lua "
            f"support, which is not installed ({exc.name or exc}); install it with: "
            f"{EMBEDDED_EXTRA}"
        ) from None
    return fakeredis


class _HiredisPacking:
    """Packs commands with hiredis (C) instead of redis-py's pure-Python asyncio
    packer: for a batch of 1,000 events in one script call that is the
    difference between about 14 ms and 2 ms of client CPU."""

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if isinstance(first, str) and " " in first:
            args = (*first.encode().split(), *args[1:])
        elif isinstance(first, bytes) and b" " in first:
            args = (*first.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError:
            pass
        try:
            return [hiredis.pack_command(tuple(_plain(a) for a in args))]
        except TypeError as exc:
            raise rex.DataError(f"cannot send {args[:3]!r}...: {exc}") from exc


def _plain(value: Any) -> Any:
    if isinstance(value, (memoryview, bytearray)):
        return bytes(value)
    if isinstance(value, (bool, type(None))) or not isinstance(
        value, (str, bytes, int, float)
    ):
        raise rex.DataError(
            f"invalid input of type {type(value).__name__} ({value!r}); convert to "
            "bytes, str or a number"
        )
    return value


class _NodeCheck:
    """Checks, once a connection is made, that the server is not a node of a
    Redis Cluster: a plain client there answers MOVED for most keys, which
    would surface much later as confusing errors."""

    async def on_connect_check_health(self, check_health: bool = True) -> None:
        await super().on_connect_check_health(check_health)  # type: ignore[misc]
        connection = cast(aioredis.Connection, self)
        await connection.send_command("INFO", "cluster", check_health=False)
        reply = await connection.read_response()
        try:
            refuse_cluster_node(reply, f"{connection.host}:{connection.port}")
        except ConfigurationError:
            await connection.disconnect()
            raise


def refuse_cluster_node(info: object, address: str) -> None:
    """A ConfigurationError when INFO (the reply to ``INFO cluster``) says the
    server at ADDRESS is a cluster node, which a plain client must not use."""
    text = info.decode() if isinstance(info, bytes) else str(info)
    if "cluster_enabled:1" in text:
        raise ConfigurationError(
            f"{address} is a node of a Redis Cluster; connect to it as one with "
            f"redis+cluster://{address} (a plain redis:// URL names a single "
            "server)"
        )


class _HiredisConnection(_HiredisPacking, _NodeCheck, aioredis.Connection):
    pass


class _HiredisClusterConnection(_HiredisPacking, aioredis.Connection):
    pass


class _HiredisSSLConnection(_HiredisPacking, _NodeCheck, aioredis.SSLConnection):
    pass


class _HiredisUnixConnection(_HiredisPacking, aioredis.UnixDomainSocketConnection):
    pass


_PACKING: Final[Mapping[type, type]] = types.MappingProxyType(
    {
        aioredis.Connection: _HiredisConnection,
        aioredis.SSLConnection: _HiredisSSLConnection,
        aioredis.UnixDomainSocketConnection: _HiredisUnixConnection,
    }
)


class Wakeups:
    """In-process wake-ups for an embedded Redis, whose XREADGROUP does not block.

    Every write backbone makes to a stream notifies the readers of that stream; a
    reader takes the current event *before* it reads, so no wake-up is missed.
    """

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def current(self, stream: str) -> asyncio.Event:
        event = self._events.get(stream)
        if event is None:
            event = self._events[stream] = asyncio.Event()
        return event

    def notify(self, stream: str) -> None:
        event = self._events.pop(stream, None)
        if event is not None:
            event.set()


def client_for(
    url: str,
    client_name: str | None,
    connect_timeout: float,
    command_timeout: float,
    max_connections: int | None,
) -> aioredis.Redis:
    """The client of URL: fakeredis for ``memory://``, redis-py's cluster client
    for ``redis+cluster://``, else a single server's, packing with hiredis and
    never resending a command on its own."""
    if url.startswith(EMBEDDED_SCHEME):
        fakeredis = require_embedded()
        server = fakeredis.FakeServer(version=(7, 2))
        client: aioredis.Redis = fakeredis.FakeAsyncRedis(server=server)
        return client
    if url.startswith(CLUSTER_SCHEMES):
        return _cluster_client(
            url, client_name, connect_timeout, command_timeout, max_connections
        )
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigurationError(
            f"Redis URL {redact(url)!r} is not valid; use redis://host:port/db, "
            "rediss://..., unix:///path, redis+cluster://host:port (a Redis "
            "Cluster) or memory:// (embedded)"
        )
    # backbone retries by itself where it is safe to (publishes carry a batch
    # record), so the client must never resend a command on its own.
    try:
        client = aioredis.Redis.from_url(
            url,
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=connect_timeout,
            socket_timeout=command_timeout,
            socket_keepalive=True,
            health_check_interval=30,
            client_name=client_name,
            max_connections=max_connections,
        )
    except (ValueError, TypeError) as exc:  # a port out of range, a bad db...
        raise ConfigurationError(
            f"Redis URL {redact(url)!r} is not valid ({exc}); use "
            "redis://host:port/db with a port from 1 to 65535"
        ) from None
    pool = client.connection_pool
    pool.connection_class = _PACKING.get(pool.connection_class, pool.connection_class)
    return client


def _cluster_client(
    url: str,
    client_name: str | None,
    connect_timeout: float,
    command_timeout: float,
    max_connections: int | None,
) -> aioredis.Redis:
    """A client of a Redis Cluster: it learns the slots from the node URL
    names and sends each command to the master of its keys' slot. Every key
    backbone writes together shares one hash tag, so each script, pipeline
    and transaction stays in one slot."""
    plain = url.replace("+cluster://", "://", 1)
    where = urlparse(plain)
    if where.path not in ("", "/", "/0"):
        raise ConfigurationError(
            f"Redis URL {redact(url)!r} names database {where.path[1:]!r}; a "
            "Redis Cluster has database 0 only: drop the /db part"
        )
    extra: dict[str, Any] = {}
    if where.scheme == "redis":
        extra["connection_class"] = _HiredisClusterConnection
    try:
        client = RedisCluster.from_url(
            plain,
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=connect_timeout,
            socket_timeout=command_timeout,
            socket_keepalive=True,
            client_name=client_name,
            max_connections=max_connections or 2**31,
            **extra,
        )
    except (ValueError, TypeError, rex.RedisClusterException) as exc:
        raise ConfigurationError(
            f"Redis Cluster URL {redact(url)!r} is not valid ({exc}); use "
            "redis+cluster://host:port naming any node of the cluster"
        ) from None
    # The cluster client has the same commands as a single server's; the few
    # places that differ (pipelines with scripts, WAIT) ask Backbone.cluster.
    return cast(aioredis.Redis, client)


def redact(url: str) -> str:
    """URL without its password (and user), for messages and ``repr``."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
