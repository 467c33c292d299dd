"""The connection to Redis (or to an embedded in-process Redis) and its scripts.

:class:`Backbone` makes producers, subscriptions and repositories, routes
wake-ups to readers, and owns the lifetime of its clients; building those
clients from the URL is :mod:`backbone.clients`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

import redis.asyncio as aioredis

from .clients import (
    CLUSTER_SCHEMES,
    EMBEDDED_EXTRA,
    EMBEDDED_SCHEME,
    Wakeups,
    client_for,
    redact,
    require_embedded,
)
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

__all__ = [
    "EMBEDDED_EXTRA",
    "EMBEDDED_SCHEME",
    "Backbone",
    "is_transient",
    "require_embedded",
]

log = logging.getLogger("backbone")

ENV_URL: Final = "BACKBONE_REDIS_URL"


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
        self._wakeups = Wakeups() if self.embedded else None
        self._doorbell: Doorbell | None = None
        self.redis: aioredis.Redis = client_for(
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
        where = "embedded" if self.embedded else redact(self.url)
        return f"Backbone({where}, environment={self.environment!r})"
