"""The connection to Redis (or to an embedded in-process Redis) and its scripts."""

from __future__ import annotations

import asyncio
import logging
import os
import types
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self, cast
from urllib.parse import urlparse

import hiredis
import redis.asyncio as aioredis
import redis.exceptions as rex
from redis.asyncio.cluster import RedisCluster
from redis.backoff import NoBackoff
from redis.retry import Retry

from .direct import DirectConnection, direct_for
from .errors import ConfigurationError
from .faults import is_transient
from .keys import StreamKeys, validate_part
from .scripts import Scripts

if TYPE_CHECKING:
    from .consume import Subscription
    from .contract import ContractSpec
    from .dispatch import Dispatcher
    from .doorbell import Doorbell
    from .events import EventId
    from .options import StartFrom, SubscriptionOptions
    from .producer import Producer, ProducerOptions
    from .store import Repository
    from .store.repository import A

__all__ = ["Backbone", "is_transient", "require_embedded"]

log = logging.getLogger("backbone")

EMBEDDED_SCHEME: Final = "memory://"
CLUSTER_SCHEMES: Final = ("redis+cluster://", "rediss+cluster://")
ENV_URL: Final = "BACKBONE_REDIS_URL"
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
        text = reply.decode() if isinstance(reply, bytes) else str(reply)
        if "cluster_enabled:1" in text:
            await connection.disconnect()
            address = f"{connection.host}:{connection.port}"
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


class _Wakeups:
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


class Backbone:
    """A connection to one Redis in one environment; makes producers and consumers.

    ``url`` is a Redis URL (``redis://host:port/db``, ``rediss://``, ``unix://``),
    ``redis+cluster://host:port`` (or ``rediss+cluster://``) for a Redis Cluster
    reached through any one of its nodes, or ``memory://`` for an embedded
    in-process Redis (fakeredis, from the ``backbone[embedded]`` extra): good for
    tests and demos, private to this process, gone with it. A plain ``redis://``
    URL that reaches a cluster node is refused at the first command with a
    :class:`ConfigurationError` naming the cluster URL to use. Use it as an async
    context manager, or call :meth:`close`.

    ``command_timeout`` bounds every command, so a server that stops answering
    (frozen, or a network that drops packets silently) is noticed; a subscription's
    ``block`` must be shorter.
    """

    def __init__(
        self,
        url: str,
        *,
        environment: str = "dev",
        client_name: str | None = None,
        connect_timeout: float = 5.0,
        command_timeout: float = 10.0,
        max_connections: int | None = None,
    ) -> None:
        if command_timeout <= 0 or connect_timeout <= 0:
            raise ConfigurationError("connect_timeout and command_timeout must be > 0")
        self.environment = validate_part("environment", environment)
        self.command_timeout = command_timeout
        self.url = url
        self.embedded = url.startswith(EMBEDDED_SCHEME)
        self.cluster = url.startswith(CLUSTER_SCHEMES)
        self.scripts = Scripts()
        self._wakeups = _Wakeups() if self.embedded else None
        self._doorbell: Doorbell | None = None
        self.redis: aioredis.Redis = self._client(
            url, client_name, connect_timeout, command_timeout, max_connections
        )
        self.direct: DirectConnection | None = None
        """The pipelined connection producers write through (:mod:`backbone.direct`;
        None on TLS, a cluster or the embedded server, which use ``redis``)."""
        if not self.embedded and not self.cluster:
            self.direct = direct_for(
                url,
                client_name=client_name,
                connect_timeout=connect_timeout,
                command_timeout=command_timeout,
            )
            if self.direct is not None:
                self.direct.preload(self.scripts.publish.source)
        self._closed = False

    @classmethod
    def from_env(cls, *, environment: str = "dev", default: str | None = None) -> Self:
        """Connect to ``$BACKBONE_REDIS_URL``, or to DEFAULT when it is not set.

        Without DEFAULT an unset variable is a :class:`ConfigurationError`: a
        service never falls back to an embedded Redis that loses its events.
        """
        url = os.environ.get(ENV_URL) or default
        if not url:
            raise ConfigurationError(
                f"{ENV_URL} is not set; set it to the Redis URL to use "
                "(redis://host:port/db), or pass Backbone.from_env(default=...)"
            )
        return cls(url, environment=environment)

    def _client(
        self,
        url: str,
        client_name: str | None,
        connect_timeout: float,
        command_timeout: float,
        max_connections: int | None,
    ) -> aioredis.Redis:
        if self.embedded:
            fakeredis = require_embedded()
            server = fakeredis.FakeServer(version=(7, 2))
            client: aioredis.Redis = fakeredis.FakeAsyncRedis(server=server)
            return client
        if self.cluster:
            return self._cluster_client(
                url, client_name, connect_timeout, command_timeout, max_connections
            )
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigurationError(
                f"Redis URL {_redact(url)!r} is not valid; use redis://host:port/db, "
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
                f"Redis URL {_redact(url)!r} is not valid ({exc}); use "
                "redis://host:port/db with a port from 1 to 65535"
            ) from None
        pool = client.connection_pool
        pool.connection_class = _PACKING.get(
            pool.connection_class, pool.connection_class
        )
        return client

    def _cluster_client(
        self,
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
                f"Redis URL {_redact(url)!r} names database {where.path[1:]!r}; a "
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
                f"Redis Cluster URL {_redact(url)!r} is not valid ({exc}); use "
                "redis+cluster://host:port naming any node of the cluster"
            ) from None
        # The cluster client has the same commands as a single server's; the few
        # places that differ (pipelines with scripts, WAIT) ask self.cluster.
        return cast(aioredis.Redis, client)

    def keys(self, uri: str) -> StreamKeys:
        """The Redis keys of stream URI in this environment (``orders#3``: of
        partition 3 of stream ``orders``)."""
        return StreamKeys.parse(self.environment, uri)

    def producer(
        self,
        uri: str,
        contract: ContractSpec | None = None,
        options: ProducerOptions | None = None,
        *,
        partitions: int | None = None,
    ) -> Producer:
        """A producer appending to stream URI. PARTITIONS (default: the
        contract's, else 1) splits the stream (see :mod:`backbone.partitions`)."""
        from .producer import Producer

        return Producer(
            self,
            self.keys(uri),
            contract=contract,
            options=options,
            partitions=partitions,
        )

    def aggregates(
        self,
        uri: str,
        factory: Callable[[], A],
        *,
        options: ProducerOptions | None = None,
        partitions: int | None = None,
    ) -> Repository[A]:
        """The repository of the aggregates FACTORY makes, their events on stream
        URI (see :class:`~backbone.Repository`); on a partitioned stream each
        aggregate lives in the partition of its id."""
        from .store import Repository

        return Repository(self, uri, factory, options=options, partitions=partitions)

    def subscribe(
        self,
        uri: str,
        dispatcher: Dispatcher[Any],
        *,
        group: str,
        consumer: str | None = None,
        start: StartFrom | EventId | str | None = None,
        options: SubscriptionOptions | None = None,
        partitions: int | None = None,
    ) -> Subscription:
        """Subscribe DISPATCHER's handler to stream URI as CONSUMER of GROUP.

        ``await`` the result to start it, or use it in ``async with``. START says
        where a new group begins (default: new events only). PARTITIONS (default:
        the contract's) above 1, or ``options.ordered``, makes a
        :class:`~backbone.consume.partitioned.PartitionedSubscription` reading
        every partition (``orders#3`` names one partition alone, and must be
        one of the count recorded in Redis).
        """
        from .consume import Subscription
        from .consume.partitioned import PartitionedSubscription
        from .options import StartFrom
        from .partitions import check_count

        keys = self.keys(uri)
        first = StartFrom.NEW if start is None else start
        if partitions is None:
            partitions = 1
            if keys.partition is None:
                partitions = dispatcher.contract.spec.partitions
        check_count(partitions)
        # One partition named alone is checked against the recorded count.
        if (
            partitions > 1
            or keys.partition is not None
            or (options is not None and options.ordered)
        ):
            return PartitionedSubscription(
                self,
                keys,
                dispatcher,
                group=group,
                consumer=consumer,
                start=first,
                options=options,
                partitions=partitions,
            )
        return Subscription(
            self,
            keys,
            dispatcher,
            group=group,
            consumer=consumer,
            start=first,
            options=options,
        )

    # --- wake-ups ------------------------------------------------------------------

    @property
    def doorbell(self) -> Doorbell:
        """The wake-ups of watched streams (partitions), one connection per node
        (see :mod:`backbone.doorbell`)."""
        if self._doorbell is None:
            from .doorbell import Doorbell

            self._doorbell = Doorbell(self)
        return self._doorbell

    def wakeup_event(self, stream: str) -> asyncio.Event | None:
        """The event set at the next write to STREAM: for an embedded Redis, and
        for a stream the doorbell watches; None when the reader must block in
        XREAD itself."""
        if self._wakeups is not None:
            return self._wakeups.current(stream)
        if self._doorbell is not None:
            return self._doorbell.current(stream)
        return None

    def notify_written(self, stream: str) -> None:
        if self._wakeups is not None:
            self._wakeups.notify(stream)

    # --- lifetime ----------------------------------------------------------------

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._doorbell is not None:
                await self._doorbell.close()
            if self.direct is not None:
                await self.direct.close()
            await self.redis.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        where = "embedded" if self.embedded else _redact(self.url)
        return f"Backbone({where}, environment={self.environment!r})"


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url
