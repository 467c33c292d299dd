"""A subscription of a group to every partition of a partitioned stream.

A partitioned stream is N complete streams (:mod:`backbone.partitions`); a
group reads them all, in one of two modes:

* **shared** (the default): every member reads every partition. Each partition
  has a per-partition :class:`~backbone.consume.Subscription` of its own on
  ``<uri>#<p>``, same group, same consumer name, so the group shares each
  partition's events among its members exactly as it shares an unpartitioned
  stream's: throughput, with order only within what one member handles.
* **ordered** (``SubscriptionOptions(ordered=True)``): each partition is held by
  exactly one member at a time, through a lease, and handled one event at a
  time in entry order; the partitions a member holds run in parallel. Members
  joining, leaving or dying move partitions between them, and a partition's
  new holder handles its pending entries first, so the events of one key stay
  in order (at least once: an event being handled when its member died comes
  again). :mod:`backbone.consume.ordered` does the holding,
  :mod:`backbone.consume.leases` the leases and their fencing,
  :mod:`backbone.consume.membership` the members and the assignment. On an
  unpartitioned stream (or a single partition, ``orders#3``) ordered mode is
  active/standby: one member consumes, the others wait to take over.

A blocking read cannot span the slots of a Redis Cluster, so each
per-partition reader waits for its own partition: through the connection's
doorbell (:mod:`backbone.doorbell`), which the partitions running here are
watched by (one connection per node rings every watched partition's readers,
through :meth:`Backbone.wakeup_event`), falling back to its own ``XREAD BLOCK``
when the doorbell cannot serve (an unpartitioned stream in ordered mode).

:class:`PartitionedSubscription` is a :class:`Subscription` to its callers
(generated ``subscribe_<contract>`` functions return ``backbone.Subscription``,
``backbone run`` checks for one): it subclasses it and overrides its whole
public surface, without the per-stream machinery of the base class (it is made
of per-partition subscriptions instead). ``stats`` adds up its partitions'.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Protocol, Self

from ..errors import ConfigurationError
from ..events import EventId
from ..faults import is_transient
from ..keys import validate_name
from ..options import StartFrom, SubscriptionOptions
from ..partitions import agree, check_count, check_named
from .ordered import OrderedParts, add_up, unwatch, watch
from .signals import SignalStops
from .state import SubscriptionStats
from .subscription import Subscription, default_consumer_name, start_id

if TYPE_CHECKING:
    from ..connection import Backbone
    from ..dispatch import Dispatcher
    from ..keys import StreamKeys
    from .leases import Lease

__all__ = ["PartitionedSubscription"]

log = logging.getLogger("backbone.consumer")


class _Parts(Protocol):
    """What runs the per-partition subscriptions of one mode."""

    @property
    def stats(self) -> list[SubscriptionStats]: ...

    @property
    def subscriptions(self) -> list[Subscription]: ...

    def stop(self) -> None: ...

    async def run(self) -> None: ...


class _SharedParts:
    """Shared mode: a subscription per partition, all running until a stop."""

    def __init__(self, backbone: Backbone, subscriptions: list[Subscription]) -> None:
        self._backbone = backbone
        self._subscriptions = subscriptions
        self._stopping = asyncio.Event()
        self._watched = False

    @property
    def stats(self) -> list[SubscriptionStats]:
        return [s.stats for s in self._subscriptions]

    @property
    def subscriptions(self) -> list[Subscription]:
        return list(self._subscriptions)

    def stop(self) -> None:
        self._stopping.set()

    async def start(self) -> None:
        """Start every partition's subscription (all, or none: a failure stops
        those already started and is raised)."""
        self._watched = True
        for subscription in self._subscriptions:
            watch(self._backbone, subscription.keys)
        started: list[Subscription] = []
        try:
            for subscription in self._subscriptions:
                started.append(await subscription.start())
        except BaseException:
            await asyncio.gather(*(s.stop() for s in started))
            self._unwatch()
            raise

    def _unwatch(self) -> None:
        if self._watched:
            self._watched = False
            for subscription in self._subscriptions:
                unwatch(self._backbone, subscription.keys)

    async def run(self) -> None:
        """Until a stop, or until one partition's subscription ends by itself
        (it failed): then every other one stops too, and the failure is raised.
        Stopped before it runs, it stops what :meth:`start` started and returns."""
        running = [s for s in self._subscriptions if s.started]
        stopped: asyncio.Future[Any] = asyncio.ensure_future(self._stopping.wait())
        ends: list[asyncio.Future[Any]] = [s.completion for s in running]
        try:
            done, _ = await asyncio.wait(
                [stopped, *ends], return_when="FIRST_COMPLETED"
            )
        finally:
            stopped.cancel()
        failure: BaseException | None = None
        for subscription, end in zip(running, ends, strict=True):
            if end in done and failure is None:
                error = None if end.cancelled() else end.exception()
                failure = error or RuntimeError(f"{subscription} ended unexpectedly")
        try:
            await asyncio.gather(*(s.stop() for s in running), return_exceptions=True)
            await asyncio.gather(*ends, return_exceptions=True)
        finally:
            self._unwatch()
        if failure is not None:
            raise failure


class PartitionedSubscription(Subscription):
    """A group's subscription to all partitions of a stream (see the module
    documentation); made by :meth:`Backbone.subscribe` for a stream with more
    than one partition, for one partition named alone (checked against the
    recorded count at start), or with ``ordered=True``.

    Ordered, a group that does not exist is created at the beginning of its
    partition even for ``StartFrom.NEW`` (see :meth:`_make`); an explicit
    start id is kept."""

    def __init__(
        self,
        backbone: Backbone,
        keys: StreamKeys,
        dispatcher: Dispatcher[Any],
        *,
        group: str,
        consumer: str | None = None,
        start: StartFrom | EventId | str = StartFrom.NEW,
        options: SubscriptionOptions | None = None,
        partitions: int = 1,
    ) -> None:
        # Not Subscription.__init__: this subscription has no stream of its
        # own, only per-partition subscriptions (made below, or when taken).
        self.backbone = backbone
        self.keys = keys
        self.dispatcher = dispatcher
        self.group = validate_name("group", group)
        self.consumer = validate_name("consumer", consumer or default_consumer_name())
        self.options = options or SubscriptionOptions()
        self.partitions = check_count(partitions)
        if self.partitions > 1 and keys.partition is not None:
            raise ConfigurationError(
                f"{keys.name!r} is one partition of stream {keys.uri!r}; subscribe "
                f"to {keys.uri!r} for all its partitions, or to {keys.name!r} "
                "without partitions= for this one"
            )
        if self.options.block + 1 > backbone.command_timeout:
            raise ConfigurationError(
                f"block ({self.options.block:g}s) must be at least 1s shorter than the "
                f"connection's command_timeout ({backbone.command_timeout:g}s); lower "
                "block or raise Backbone(command_timeout=...)"
            )
        self.start_id = start_id(start)
        self._start = start
        self.parts = (
            [keys]
            if self.partitions == 1
            else [keys.of_partition(p) for p in range(self.partitions)]
        )
        self._parts: _Parts
        if self.options.ordered:
            self._parts = OrderedParts(
                backbone,
                keys,
                self.parts,
                group=self.group,
                consumer=self.consumer,
                ttl=self.options.lease_ttl,
                make=self._make,
                name=repr(self),
            )
        else:
            self._parts = _SharedParts(
                backbone, [self._make(part) for part in self.parts]
            )
        self._task: asyncio.Task[None] | None = None
        self._start_lock = asyncio.Lock()
        self._stop_asked = False
        self._completion: asyncio.Future[None] | None = None
        self._agreed = False

    def _make(self, part: StreamKeys, lease: Lease | None = None) -> Subscription:
        start = self._start
        if lease is not None and start is StartFrom.NEW:
            # Ordered: a member that takes a partition whose group is missing
            # cannot tell a group never made from one Redis lost (a restart
            # without persistence, a failover to a replica that lagged); "new
            # events only" would then skip every event written since the loss.
            # So an ordered group starts at the beginning of what its partition
            # holds (nothing, for a partition not written yet); an explicit
            # start id is kept (ids written after a loss are above it).
            start = StartFrom.BEGINNING
        return Subscription(
            self.backbone,
            part,
            self.dispatcher,
            group=self.group,
            consumer=self.consumer,
            start=start,
            options=self.options,
            lease=lease,
        )

    # --- what it is made of -----------------------------------------------------------

    @property
    def subscriptions(self) -> list[Subscription]:
        """The per-partition subscriptions running now (ordered: those of the
        partitions this member holds)."""
        return self._parts.subscriptions

    @property
    def held(self) -> list[int]:
        """The partitions this member handles now: all of them in shared mode,
        the ones it holds the lease of in ordered mode (numbers, or [0] for an
        unpartitioned stream)."""
        if isinstance(self._parts, OrderedParts):
            return [self._number(i) for i in self._parts.held]
        return [self._number(i) for i in range(len(self.parts))]

    def _number(self, index: int) -> int:
        return self.parts[index].partition or 0

    @property
    def stats(self) -> SubscriptionStats:
        """The counters of every per-partition subscription, added up (the
        highest ``max_in_flight_seen``)."""
        return add_up(self._parts.stats)

    @stats.setter
    def stats(self, value: SubscriptionStats) -> None:
        raise AttributeError(
            f"{type(self).__name__}.stats adds up its partitions' counters; it "
            "cannot be set"
        )

    # --- lifetime -----------------------------------------------------------------

    async def start(self) -> Self:
        """Check the partition count with Redis and start every partition (shared)
        or this member's share of them (ordered) in the background."""
        async with self._start_lock:
            if self._task is not None:
                if self._task.done():
                    raise RuntimeError(
                        f"{self} has stopped and cannot be started again; "
                        "subscribe again for a new subscription"
                    )
                return self
            if self._stop_asked:
                raise RuntimeError(
                    f"{self} was stopped before it started; subscribe again for a "
                    "new subscription"
                )
            await self._agree(at_start=True)
            if isinstance(self._parts, _SharedParts) and not self._stop_asked:
                await self._parts.start()
            loop = asyncio.get_running_loop()
            self._completion = loop.create_future()
            self._task = loop.create_task(self._run(), name=f"backbone:{self}")
        return self

    async def _agree(self, *, at_start: bool = False) -> None:
        """The partition count this code declares must be the one Redis
        records, and a partition named alone (``orders#3``) must be one of the
        recorded count; a Redis not reachable yet is asked again by the running
        task."""
        if self._agreed:
            return
        try:
            if self.keys.partition is not None:
                await check_named(self.backbone, self.keys)
            else:
                await agree(self.backbone, self.keys, self.partitions)
        except Exception as exc:
            if not is_transient(exc):
                raise
            if at_start:
                log.warning(
                    "%s: Redis is not reachable yet (%s); the subscription keeps "
                    "trying",
                    self,
                    exc,
                )
                return
            raise
        self._agreed = True

    async def _run(self) -> None:
        """Agree on the partition count, then run the parts until a stop. The
        parts are always run, even after a stop or a failed agreement (then
        they were told to stop first): running them is what stops and awaits
        the partitions' subscriptions that start() already started, so that a
        stop at any moment leaves nothing running."""
        assert self._completion is not None
        failure: BaseException | None = None
        try:
            await self._agree_eventually()
        except BaseException as exc:
            failure = exc
            self._parts.stop()
        try:
            await self._parts.run()
        except BaseException as exc:
            failure = failure or exc
        if failure is not None:
            log.error("%s failed", self, exc_info=failure)
            self._completion.set_exception(failure)
        else:
            self._completion.set_result(None)
        SignalStops.forget(self)

    async def _agree_eventually(self) -> None:
        """Ask until Redis answers; every attempt that did not agree is
        followed by a wait, so this never holds the event loop."""
        delay = 0.05
        while not self._agreed and not self._stop_asked:
            try:
                await self._agree()
            except Exception as exc:
                if not is_transient(exc):
                    raise
            if not self._agreed:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    @property
    def in_flight(self) -> int:
        """Events read and not yet finished and acknowledged, all partitions."""
        return sum(s.in_flight for s in self._parts.subscriptions)

    @property
    def stopping(self) -> bool:
        return self._stop_asked

    async def stop(self) -> None:
        """Stop every partition's subscription (each lets its running handler
        finish, see :meth:`Subscription.stop`); in ordered mode leave the group's
        members and release the leases, so the partitions move at once. A stop
        during :meth:`start` waits for it, then stops what it started."""
        self._request_stop()
        if self._task is None:
            if not self._start_lock.locked():
                return
            async with self._start_lock:  # a start under way: wait for it
                pass
            if self._task is None:  # it failed, and stopped what it started
                return
        current = asyncio.current_task()
        if any(current in s._worker_tasks for s in self._parts.subscriptions):
            # Called by a handler: waiting here would wait for this handler.
            return
        await asyncio.shield(self._task)

    def _request_stop(self) -> None:
        self._stop_asked = True
        self._parts.stop()

    def __repr__(self) -> str:
        mode = "ordered" if self.options.ordered else "shared"
        return (
            f"PartitionedSubscription({self.keys.stream} partitions="
            f"{self.partitions} {mode} group={self.group} consumer={self.consumer})"
        )
