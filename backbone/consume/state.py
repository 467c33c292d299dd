"""The state the stages of one subscription share.

The stages (reader, claimer, workers, acker) are tasks of one event loop; they
meet here and nowhere else:

* :class:`Window` is the room: which events are held, which wait for a worker,
  which acks are queued or being written, and how much room reads and claims in
  flight have spoken for. A stage asks it for room; it never counts on its own.
* :class:`Outage` is the shared view of a lost Redis: one backoff, one log line
  when it goes and one when it comes back, whichever stage noticed.
* :class:`SubscriptionState` holds both with the subscription's settings.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any

from ..options import AckPolicy
from .delivery import Delivery

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from ..connection import Backbone
    from ..dispatch import Dispatcher
    from ..keys import StreamKeys
    from ..options import SubscriptionOptions
    from .leases import Lease

__all__ = ["Outage", "SubscriptionState", "SubscriptionStats", "Window"]

log = logging.getLogger("backbone.consumer")


@dataclasses.dataclass(slots=True)
class SubscriptionStats:
    """Counters of one subscription (for logs, tests and dashboards)."""

    received: int = 0
    handled: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    skipped: int = 0
    unimplemented: int = 0
    duplicates_skipped: int = 0
    acked: int = 0
    claimed: int = 0
    claim_scans: int = 0
    recovered: int = 0
    max_in_flight_seen: int = 0
    reconnects: int = 0
    groups_recreated: int = 0


class Window:
    """The room of one subscription: at most ``limit`` events in flight.

    An event is in flight from the moment a read or claim brings it until its ack
    is written: *held* while queued for a worker or running, then *acking* while
    its ack is queued (``acks``) or being written (``sending``). ``reserved`` is
    room spoken for by a read or claim whose reply has not come yet.
    """

    def __init__(self, limit: int, stats: SubscriptionStats) -> None:
        self.limit = limit
        self.stats = stats
        self.held: dict[str, Delivery] = {}
        self.ready: collections.deque[Delivery] = collections.deque()
        self.ready_signal = asyncio.Event()
        self.acks: list[str] = []
        self.acking: set[str] = set()
        self.ack_signal = asyncio.Event()
        self.sending = 0
        self.reserved = 0
        # Under load the reader waits for a quarter of the room, so reads stay
        # large and it is not woken by every finished event.
        self.low_water = max(1, limit // 4)
        self._room = asyncio.Event()
        self._wanted = 1
        self._waiting = False

    @property
    def in_flight(self) -> int:
        """Events read and not yet finished and acknowledged."""
        return len(self.held) + len(self.acks) + self.sending + self.reserved

    def busy(self, entry_id: str) -> bool:
        """True while ENTRY_ID is held, or finished with its ack not yet written:
        it must not be claimed or recovered again."""
        return entry_id in self.held or entry_id in self.acking

    def free_room(self) -> int:
        """Room for a claim or recovery, which leave queued acks where they are."""
        return self.limit - self.in_flight

    def read_room(self) -> int:
        """Room for read.lua, which writes the queued acks before it reads."""
        return self.limit - len(self.held) - self.sending - self.reserved

    # --- reads and claims -----------------------------------------------------------

    def reserve(self, count: int) -> None:
        """Speak for COUNT places until :meth:`release` (a read or claim in flight)."""
        self.reserved += count

    def release(self, count: int) -> None:
        """Give back COUNT reserved places, waking a reader that waits for room."""
        self.reserved -= count
        if count and self._waiting:
            self._room.set()

    def hold(self, deliveries: list[Delivery]) -> None:
        """Take DELIVERIES in and queue them for the workers."""
        held = self.held
        for d in deliveries:
            held[d.entry_id] = d
        self.ready.extend(deliveries)
        self.ready_signal.set()
        self.stats.received += len(deliveries)
        holding = len(held) + len(self.acks) + self.sending
        if holding > self.stats.max_in_flight_seen:
            self.stats.max_in_flight_seen = holding

    def hold_new(self, deliveries: list[Delivery]) -> None:
        """:meth:`hold` those of DELIVERIES that are not :meth:`busy`: an entry
        this consumer still holds can come again after its group was recreated,
        and the held one finishes it (its ack settles both)."""
        held, acking = self.held, self.acking
        if held or acking:
            deliveries = [
                d
                for d in deliveries
                if d.entry_id not in held and d.entry_id not in acking
            ]
        self.hold(deliveries)

    def drop_unstarted(self) -> None:
        """Forget the events no worker started (a stop): they stay pending."""
        while self.ready:
            self.held.pop(self.ready.popleft().entry_id, None)

    async def wait_for_room(self, wanted: int) -> None:
        """Wait until a finished event, an ack written or a release gives room
        (or :meth:`wake`). The caller checks the room again afterwards."""
        self._wanted = wanted
        self._room.clear()
        self._waiting = True
        try:
            await self._room.wait()
        finally:
            self._waiting = False

    def wake(self) -> None:
        self._room.set()

    # --- finishing ------------------------------------------------------------------

    def finish(self, d: Delivery) -> None:
        """A worker is done with D (its ack, if any, is queued already)."""
        self.held.pop(d.entry_id, None)
        if self._waiting and self.read_room() >= self._wanted:
            self._room.set()

    def finish_handled(self, d: Delivery, *, ack: bool, noack: bool) -> None:
        """:meth:`queue_ack` (when ACK) and :meth:`finish` of D in one step, for
        an event its handler has just handled."""
        if ack and not d.acked:
            d.acked = True
            if not noack:
                entry_id = d.entry_id
                self.acks.append(entry_id)
                self.acking.add(entry_id)
                self.ack_signal.set()
        self.finish(d)

    def queue_ack(self, d: Delivery, *, noack: bool) -> None:
        """Queue D's ack (once; nothing to write when read with NOACK)."""
        if d.acked or noack:
            d.acked = True
            return
        d.acked = True
        self.acks.append(d.entry_id)
        self.acking.add(d.entry_id)
        self.ack_signal.set()

    def take_acks(self, most: int | None = None) -> list[str]:
        """Take up to MOST queued acks to write; they count as being sent."""
        if most is None or most >= len(self.acks):
            batch, self.acks = self.acks, []
        else:
            batch = self.acks[:most]
            del self.acks[:most]
        self.sending += len(batch)
        return batch

    def acks_written(self, batch: list[str]) -> None:
        self.sending -= len(batch)
        self.acking.difference_update(batch)
        self.stats.acked += len(batch)
        if self._waiting:
            self._room.set()

    def acks_dropped(self, batch: list[str]) -> None:
        """Forget BATCH unwritten: the lease it needed is lost, and the events
        stay pending for the partition's new owner."""
        self.sending -= len(batch)
        self.acking.difference_update(batch)
        if self._waiting:
            self._room.set()

    def acks_failed(self, batch: list[str]) -> None:
        """Put BATCH back at the front of the queue, to be written again."""
        self.sending -= len(batch)
        self.acks[:0] = batch
        if self._waiting:
            self._room.set()


class Outage:
    """A lost Redis, as all stages of one subscription see it."""

    def __init__(self, name: str, stats: SubscriptionStats) -> None:
        self.name = name
        self.stats = stats
        self.since: float | None = None
        self._delay = 0.05

    async def wait(
        self,
        exc: BaseException,
        *,
        what: str = "lost Redis",
        level: int = logging.WARNING,
    ) -> None:
        """Note the failure EXC, then wait before the caller retries (backoff)."""
        if self.since is None:
            self.since = time.monotonic()
            self._delay = 0.05
            log.log(
                level,
                "%s: %s (%s: %s); retrying",
                self.name,
                what,
                type(exc).__name__,
                exc,
            )
        await asyncio.sleep(self._delay)
        self._delay = min(self._delay * 2, 2.0)

    def over(self) -> None:
        """A command went through: the outage, if any, is over."""
        if self.since is not None:
            log.warning(
                "%s: Redis is back after %.1fs",
                self.name,
                time.monotonic() - self.since,
            )
            self.since = None
            self.stats.reconnects += 1


class SubscriptionState:
    """What every stage of one subscription uses: where it reads, as whom, with
    which options, its room, its counters, and whether it is stopping."""

    def __init__(
        self,
        backbone: Backbone,
        keys: StreamKeys,
        dispatcher: Dispatcher[Any],
        *,
        group: str,
        consumer: str,
        options: SubscriptionOptions,
        name: str,
        lease: Lease | None = None,
    ) -> None:
        self.backbone = backbone
        self.redis: aioredis.Redis = backbone.redis
        self.keys = keys
        self.stream = keys.stream
        self.dispatcher = dispatcher
        self.group = group
        self.consumer = consumer
        self.options = options
        self.name = name
        self.noack = options.ack is AckPolicy.ON_RECEIPT
        self.stats = SubscriptionStats()
        self.window = Window(options.max_in_flight, self.stats)
        self.outage = Outage(name, self.stats)
        self.stopping = asyncio.Event()
        # An ordered subscription's hold on its partition: every write checks it
        # in Redis (backbone.consume.leases); None for any other subscription.
        self.lease = lease
        # Set when entries may be pending with this consumer without being held:
        # at start, after a read whose reply was lost, after a failed claim.
        self.needs_recovery = not self.noack

    def __repr__(self) -> str:
        return self.name
