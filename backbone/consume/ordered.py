"""The ordered side of a partitioned subscription: each partition held by one
member at a time, through a lease (:mod:`backbone.consume.leases`).

One member runs two loops:

* **membership** (every ``min(lease_ttl / 3, 0.5)`` seconds, and at once when a
  holding ends): a heartbeat answers the live members
  (:mod:`backbone.consume.membership`); from that list every member computes the
  same assignment. A partition assigned here and not held is *taken*: its lease
  is acquired when free (or expired), and a per-partition
  :class:`~backbone.consume.Subscription` starts with the lease. That
  subscription first takes over every pending entry of the partition's group,
  whichever consumer held it (the previous owner's, dead or not), in id order,
  before it reads new ones, and handles one event at a time. A partition held
  here and no longer assigned is *handed over*: its subscription stops
  gracefully (the running handler finishes and is acknowledged, events read
  ahead stay pending), then the lease is released so that the new owner starts
  at once instead of waiting for the time to live.
* **renewal** (every ``lease_ttl / 3``): each lease held is renewed. A renewal
  that finds the lease gone or another member's loses the holding. A renewal
  that cannot reach Redis keeps the holding until the time to live has passed
  on this member's clock (Redis cannot have expired it earlier); at that
  moment it is lost too. A lost holding's subscription stops with no grace:
  its running handler is cancelled at once (its event stays pending for the
  new holder), since another member may already be handling the partition's
  next events; a handover, with the lease still held, stays graceful.

Where a partition's group is. The group of a partition taken here is created,
when it is missing, at the beginning of what the partition holds (an ordered
subscription never creates it at "new events only", see
:class:`~backbone.consume.partitioned.PartitionedSubscription`): a member cannot
tell a group never made from one Redis lost. A member that held the partition
before keeps the last entry its holdings saw (id and fields), across holdings:
a missing group is then created again right after that entry when the stream
still holds it unchanged (``lua/group.lua``: the group was deleted, the stream
kept), else at the beginning, so a Redis restarted without persistence neither
skips the events written since nor is mistaken for the stream that was read.

Fencing makes a lost holding harmless even before this member notices: every
write its subscription makes checks the lease in Redis in the same step.

A clean stop leaves the membership first (the others rebalance at their next
heartbeat), stops every partition's subscription gracefully while still
renewing, and releases each lease. A member that dies leaves its leases to
expire: its partitions wait ``lease_ttl`` at most, then move, its pending
entries first.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import redis.exceptions as rex

from ..events import as_text
from ..faults import is_transient
from .leases import Lease, Leases
from .membership import Membership, assign, member_id
from .state import Outage, SubscriptionStats

if TYPE_CHECKING:
    from ..connection import Backbone
    from ..keys import StreamKeys
    from .subscription import Subscription

__all__ = ["OrderedParts", "add_up", "unwatch", "watch"]

log = logging.getLogger("backbone.consumer")

MEMBERSHIP_INTERVAL = 0.5
_LEAVE_TIMEOUT = 2.0

MakeSubscription = Callable[["StreamKeys", Lease], "Subscription"]


def watch(backbone: Backbone, part: StreamKeys) -> None:
    """Wake PART's readers through the doorbell (:mod:`backbone.doorbell`: one
    connection per node for all partitions) instead of a blocking ``XREAD`` of
    their own; an unpartitioned stream rings no bell and keeps its ``XREAD``."""
    if part.partition is not None:
        backbone.doorbell.watch(part.stream)


def unwatch(backbone: Backbone, part: StreamKeys) -> None:
    if part.partition is not None:
        backbone.doorbell.unwatch(part.stream)


async def stop_at_once(subscription: Subscription) -> None:
    """Stop SUBSCRIPTION without letting its running handler finish: it is
    cancelled at once and its event stays pending. For a holding whose lease is
    lost, where the new holder may already be handling the partition."""
    subscription.options = dataclasses.replace(
        subscription.options, shutdown_timeout=0.0
    )
    await subscription.stop()


def add_up(counters: Iterable[SubscriptionStats]) -> SubscriptionStats:
    """The sum of COUNTERS (the highest ``max_in_flight_seen``)."""
    total = SubscriptionStats()
    for stats in counters:
        for field in dataclasses.fields(SubscriptionStats):
            name = field.name
            mine, theirs = getattr(total, name), getattr(stats, name)
            if name == "max_in_flight_seen":
                setattr(total, name, max(mine, theirs))
            else:
                setattr(total, name, mine + theirs)
    return total


LastSeen = tuple[str, list[Any] | None]


class _Holding:
    """A partition this member holds: its lease and its subscription."""

    def __init__(self, index: int, lease: Lease, subscription: Subscription) -> None:
        self.index = index
        self.lease = lease
        self.subscription = subscription
        self.releasing = False
        self.task: asyncio.Task[None] | None = None
        self.stop_task: asyncio.Task[None] | None = None


class OrderedParts:
    """Takes, keeps and hands over this member's share of the partitions."""

    def __init__(
        self,
        backbone: Backbone,
        target: StreamKeys,
        parts: list[StreamKeys],
        *,
        group: str,
        consumer: str,
        ttl: float,
        make: MakeSubscription,
        name: str,
    ) -> None:
        self.backbone = backbone
        self.parts = parts
        self.group = group
        self.ttl = ttl
        self.make = make
        self.name = name
        self.member = member_id(consumer)
        self.membership = Membership(backbone, target, group, self.member, ttl)
        self.leases = [Leases(backbone, part, group) for part in parts]
        self.holdings: dict[int, _Holding] = {}
        # Per partition (index), the last entry this member's holdings saw.
        self.seen: dict[int, LastSeen] = {}
        self.members: list[str] = []
        self._ended = SubscriptionStats()  # the holdings that ended, added up
        self.stopping = asyncio.Event()
        self.failure: BaseException | None = None
        self._changed = asyncio.Event()
        self._outage = Outage(f"{name} member {self.member}", SubscriptionStats())

    @property
    def subscriptions(self) -> list[Subscription]:
        return [h.subscription for h in self.holdings.values()]

    @property
    def stats(self) -> list[SubscriptionStats]:
        """The counters of every holding so far: those that ended, added up,
        and each current one's."""
        return [self._ended, *(s.stats for s in self.subscriptions)]

    @property
    def held(self) -> list[int]:
        """The partitions (indexes into ``parts``) this member holds now."""
        return sorted(self.holdings)

    def stop(self) -> None:
        self.stopping.set()

    async def run(self) -> None:
        """Until :meth:`stop`; raises what a partition's subscription failed of."""
        loop = asyncio.get_running_loop()
        renewing = loop.create_task(self._renew_loop(), name=f"backbone-renew:{self}")
        stopped = loop.create_task(self.stopping.wait())
        interval = min(self.ttl / 3, MEMBERSHIP_INTERVAL)
        try:
            while not self.stopping.is_set():
                self._changed.clear()
                await self._tick()
                changed = loop.create_task(self._changed.wait())
                await asyncio.wait(
                    {changed, stopped}, timeout=interval, return_when="FIRST_COMPLETED"
                )
                changed.cancel()
        finally:
            stopped.cancel()
            await self._shutdown()
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
        if self.failure is not None:
            raise self.failure

    def __repr__(self) -> str:
        return f"{self.name} member {self.member}"

    # --- membership, handovers, takes -------------------------------------------------

    async def _tick(self) -> None:
        try:
            self.members = await self.membership.heartbeat()
        except Exception as exc:
            if not is_transient(exc):
                log.error("%s: heartbeat refused: %s", self, exc)
            await self._outage.wait(exc)
            return
        self._outage.over()
        mine = set(assign(self.members, len(self.parts)).get(self.member, ()))
        for index, holding in list(self.holdings.items()):
            if index not in mine and not holding.releasing:
                log.info(
                    "%s: handing %s over (members: %s)",
                    self,
                    self.parts[index].name,
                    ", ".join(self.members),
                )
                self._release(holding)
        wanted = sorted(i for i in mine if i not in self.holdings)
        if wanted and not self.stopping.is_set():
            await asyncio.gather(*(self._take(i) for i in wanted))

    async def _take(self, index: int) -> None:
        part = self.parts[index]
        try:
            got = await self.leases[index].acquire(self.member, self.ttl)
        except Exception as exc:
            if not is_transient(exc):
                log.error("%s: lease of %s refused: %s", self, part.name, exc)
            return
        if not isinstance(got, Lease):
            log.debug("%s: %s is still held (%s, %d ms left)", self, part.name, *got)
            return
        if self.stopping.is_set():
            with contextlib.suppress(Exception):
                await self.leases[index].release(got)
            return
        subscription = self.make(part, got)
        holding = _Holding(index, got, subscription)
        self.holdings[index] = holding
        log.info("%s: took %s (token %d)", self, part.name, got.token)
        holding.task = asyncio.get_running_loop().create_task(
            self._hold(holding), name=f"backbone-hold:{part.name}"
        )

    def _release(self, holding: _Holding) -> None:
        """Hand HOLDING over: a graceful stop, then the lease is released."""
        holding.releasing = True
        holding.stop_task = asyncio.get_running_loop().create_task(
            holding.subscription.stop()
        )

    async def _hold(self, holding: _Holding) -> None:
        """Run HOLDING's subscription until it ends, is handed over or its lease
        is lost; then free the lease and forget the holding."""
        subscription, lease = holding.subscription, holding.lease
        part = self.parts[holding.index]
        lost: asyncio.Future[None] | None = None
        watch(self.backbone, part)
        try:
            if holding.releasing:
                return  # handed over before it started
            await self._resume(holding.index)
            await subscription.start()
            lost = asyncio.ensure_future(lease.wait_lost())
            ended = subscription.completion
            await asyncio.wait({lost, ended}, return_when="FIRST_COMPLETED")
            if lost.done() and not ended.done():
                log.warning(
                    "%s: lost the lease of %s (token %d); stopping its "
                    "subscription, its events stay pending for the new owner",
                    self,
                    part.name,
                    lease.token,
                )
                await stop_at_once(subscription)
            await ended
        except Exception as exc:
            log.error("%s: the subscription of %s failed", self, part.name)
            if self.failure is None:
                self.failure = exc
            self.stopping.set()
        finally:
            unwatch(self.backbone, part)
            if lost is not None:
                lost.cancel()
            # Forgotten before the release: once released, another member may
            # hold the partition, and this one must not claim it any more.
            self.holdings.pop(holding.index, None)
            self._ended = add_up([self._ended, subscription.stats])
            self._remember(holding.index, subscription)
            if lease.held:
                lease.lose()
                try:
                    await self.leases[holding.index].release(lease)
                except Exception as exc:  # it expires by itself
                    log.info("%s: lease of %s not released: %s", self, part.name, exc)
                else:
                    log.info("%s: released %s", self, part.name)
            self._changed.set()

    def _remember(self, index: int, subscription: Subscription) -> None:
        group = subscription._group
        if group.last_id != "0-0":
            self.seen[index] = (group.last_id, group.last_fields)

    async def _resume(self, index: int) -> None:
        """Before a new holding starts: when the partition's group is missing,
        create it again after the last entry an earlier holding here saw (see
        the module documentation). Nothing to do when it exists, or when no
        holding here saw an entry (the subscription creates it at the start)."""
        seen = self.seen.get(index)
        if seen is None:
            return
        part = self.parts[index]
        try:
            if await self._group_exists(part):
                return
            created, position = await self.backbone.scripts.group.recreate(
                self.backbone.redis,
                stream=part.stream,
                group=self.group,
                last_id=seen[0],
                last_fields=seen[1],
            )
        except Exception as exc:
            if not is_transient(exc):
                raise
            # The subscription's own start creates it (at the beginning).
            log.info("%s: group of %s not checked: %s", self, part.name, exc)
            return
        if created:
            log.warning(
                "%s: the consumer group of %s was gone; created it again after "
                "%s (the last entry seen here was %s)",
                self,
                part.name,
                position,
                seen[0],
            )

    async def _group_exists(self, part: StreamKeys) -> bool:
        """Whether PART has this subscription's group: the usual case, answered
        by a read, so that the recreating script only runs for a missing one."""
        try:
            groups = await self.backbone.redis.xinfo_groups(part.stream)
        except rex.ResponseError as exc:
            if "no such key" in str(exc).lower():
                return False
            raise
        return any(as_text(info.get("name")) == self.group for info in groups)

    # --- renewals ---------------------------------------------------------------------

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            holdings = list(self.holdings.values())
            if holdings:
                await asyncio.gather(*(self._renew(h) for h in holdings))

    async def _renew(self, holding: _Holding) -> None:
        lease = holding.lease
        if not lease.held:
            return
        try:
            renewed = await self.leases[holding.index].renew(lease, self.ttl)
        except Exception as exc:
            # Kept until the time to live ran out on this clock (Lease.held).
            log.warning(
                "%s: lease of %s not renewed (%s); kept while its time to live lasts",
                self,
                self.parts[holding.index].name,
                exc,
            )
            return
        if not renewed:
            lease.lose()

    # --- stopping ---------------------------------------------------------------------

    async def _shutdown(self) -> None:
        try:
            async with asyncio.timeout(_LEAVE_TIMEOUT):
                await self.membership.leave()
        except Exception as exc:  # the entry expires by itself
            log.info("%s: membership not removed: %s", self, exc)
        for holding in list(self.holdings.values()):
            if not holding.releasing:
                self._release(holding)
        tasks = [h.task for h in self.holdings.values() if h.task is not None]
        if tasks:
            await asyncio.wait(tasks)
