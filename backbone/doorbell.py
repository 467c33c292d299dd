"""The doorbell: wakes the readers of many partitions with ONE waiting
connection per Redis node, instead of one blocking ``XREAD`` connection per
partition.

A consumer of a stream split into N partitions cannot wait for all of them with
one ``XREAD BLOCK`` on a Redis Cluster (a command cannot span slots), and one
blocking connection per partition per subscription multiplies connections. So:

* **Writers ring.** ``publish.lua`` and ``append.lua`` end every write to a
  partition with ``SPUBLISH <stream>:bell <last entry id>``: a sharded Pub/Sub
  channel in the partition's hash tag, so in the script's own slot, served by
  the partition's master. Only partitions ring (their stream key, and no other,
  has a ``#``): on a single server a ring nobody hears costs well under a
  microsecond, but on a cluster every ``SPUBLISH`` also goes over the cluster
  bus to each replica of the shard, listener or not (measured on Redis 7.0:
  about 2.3 KB and 1 to 2 microseconds of the master's time per script call,
  so per batch, not per event), and only partitions have listeners.
* **Waiters listen.** :meth:`Doorbell.watch` subscribes (``SSUBSCRIBE``) to a
  partition's bell on the doorbell's connection to the master that serves its
  slot: one connection per such master, shared by every watched partition
  there. Each ring sets the partition's current :class:`asyncio.Event`, which
  :meth:`Backbone.wakeup_event <backbone.Backbone.wakeup_event>` hands to the
  readers. A reader takes the event BEFORE it reads, so a ring between its read
  and its wait is not lost.

Connections, per :class:`~backbone.Backbone`: the doorbell holds one for each
master that serves at least one watched partition: at most M on a cluster of M
masters, one on a single server, none while nothing is watched, whatever the
number of partitions P and subscriptions S (instead of P x S blocking ones).
Their readers wait on events, so they hold no connection while idle: their
reads share the client's pool.

**What is lost, and how it comes back.** Pub/Sub does not queue: a ring sent
while no subscription holds is gone. So a partition whose subscription is not
confirmed (just watched, or its connection lost, its master failed over, its
slot moved) is *unsure*, and its readers are woken every ``poll`` seconds to
read anyway; when the subscription is confirmed they are woken once more, which
reads whatever was written while nobody listened.

* A lost connection (an error, a server restart, ``CLIENT KILL``): reconnect
  with backoff and subscribe again.
* A failover: the connection to the dead master fails; the cluster client's
  slot map is refreshed (``CLUSTER SLOTS``, at most once per ``poll``) and the
  bells move to the promoted replica.
* A moved slot: the server drops the slot's subscriptions (``sunsubscribe``) or
  refuses one (``MOVED``): refresh the slot map and subscribe at the new owner.
* A silent network: a ``PING`` after ``heartbeat`` quiet seconds, no reply
  within the client's ``command_timeout`` drops the connection.
* Anything else: readers re-read after at most their ``block`` seconds anyway,
  so a lost ring delays a read, never stops it.

Which streams: the partitions of partitioned subscriptions, which call
:meth:`~Doorbell.watch` and :meth:`~Doorbell.unwatch`. An ordinary subscription
keeps its own ``XREAD BLOCK`` (one connection per subscription, woken by the
write itself, nothing rung in between). The embedded Redis (``memory://``)
keeps its in-process wake-ups: there the doorbell watches nothing.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
from typing import TYPE_CHECKING, Final

import redis.exceptions as rex

from .doorbell_line import CLIENT_NAME, NodeLine, Topology
from .errors import ConfigurationError
from .keys import StreamKeys

if TYPE_CHECKING:
    from .connection import Backbone

__all__ = ["BELL_SUFFIX", "CLIENT_NAME", "Doorbell", "bell"]

log = logging.getLogger("backbone.doorbell")

BELL_SUFFIX: Final = ":bell"
_SLOT_ERRORS: Final = (rex.AskError, rex.ClusterDownError, rex.TryAgainError)


def bell(stream: str) -> str:
    """The sharded Pub/Sub channel the writes to STREAM ring (its hash tag)."""
    return stream + BELL_SUFFIX


class _Watch:
    """One watched stream: its readers' event, and where its bell is heard."""

    __slots__ = ("channel", "count", "event", "heard_at", "node", "stream", "sure")

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.channel = bell(stream)
        self.count = 1
        self.event: asyncio.Event | None = None
        self.node: str | None = None  # the node it is assigned to
        self.heard_at: str | None = None  # the last node it was assigned to
        self.sure = False

    def current(self) -> asyncio.Event:
        if self.event is None:
            self.event = asyncio.Event()
        return self.event

    def ring(self) -> None:
        event, self.event = self.event, None
        if event is not None:
            event.set()


class Doorbell:
    """The wake-ups of watched streams, heard on one connection per node.

    ``poll``: how often the readers of a stream whose bell is not (yet, or any
    more) subscribed are woken to read anyway, and the least time between two
    refreshes of a cluster's slot map. ``heartbeat``: quiet seconds before a
    ``PING`` checks the connection; its reply is due within the client's
    ``command_timeout``.
    """

    def __init__(
        self, bus: Backbone, *, poll: float = 1.0, heartbeat: float = 5.0
    ) -> None:
        self.bus = bus
        self.poll = poll
        self.heartbeat = heartbeat
        self.reply_timeout = bus.command_timeout
        self.topology = Topology(bus)
        self._watches: dict[str, _Watch] = {}
        self._by_channel: dict[str, _Watch] = {}
        self._lines: dict[str, NodeLine] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping: set[asyncio.Task[None]] = set()
        self._dirty = asyncio.Event()
        self._unsure = asyncio.Event()
        self._stale, self._failed, self._refreshed = True, "", -math.inf
        self._warned: set[type[Exception]] = set()
        self._closed = False

    # --- the readers' side -----------------------------------------------------

    def watch(self, stream: str) -> None:
        """Hear the bell of STREAM (the stream key of a partition) from now on:
        its readers then wait on :meth:`current`. Counted: as many
        :meth:`unwatch` calls stop it. Call it from a coroutine (it starts the
        doorbell's tasks)."""
        if StreamKeys.from_stream_key(stream).partition is None:
            raise ConfigurationError(
                f"{stream!r} is not the stream key of a partition: only "
                "partitions ring a bell (publish.lua); a reader of an "
                "unpartitioned stream waits in XREAD BLOCK instead"
            )
        if self.bus.embedded:  # the in-process wake-ups serve
            return
        if self._closed:
            raise RuntimeError(
                "this Backbone is closed: its doorbell watches nothing; watch "
                "streams through an open Backbone"
            )
        watch = self._watches.get(stream)
        if watch is not None:
            watch.count += 1
            return
        if not self._tasks:
            loop = asyncio.get_running_loop()
            self._tasks = [
                loop.create_task(self._plan(), name=f"{CLIENT_NAME} plan"),
                loop.create_task(self._tick(), name=f"{CLIENT_NAME} poll"),
            ]
        watch = self._watches[stream] = self._by_channel[bell(stream)] = _Watch(stream)
        self._unsure.set()
        self._dirty.set()

    def unwatch(self, stream: str) -> None:
        """Undo one :meth:`watch` of STREAM; its readers are woken once, so they
        go back to waiting by themselves."""
        watch = self._watches.get(stream)
        if watch is None:
            return
        watch.count -= 1
        if watch.count > 0:
            return
        del self._watches[stream], self._by_channel[watch.channel]
        self._move(watch, None)
        watch.ring()

    def current(self, stream: str) -> asyncio.Event | None:
        """The event the next ring of STREAM sets; None when it is not watched."""
        watch = self._watches.get(stream)
        return None if watch is None else watch.current()

    def listening(self, stream: str) -> bool:
        """Whether STREAM's bell is subscribed (confirmed by its node) now."""
        watch = self._watches.get(stream)
        return watch is not None and watch.sure

    @property
    def connections(self) -> int:
        """How many connections the doorbell holds open now."""
        return sum(1 for line in self._lines.values() if line.connected)

    # --- what the lines report -------------------------------------------------

    def ring(self, channel: str) -> None:
        watch = self._by_channel.get(channel)
        if watch is not None:
            watch.ring()

    def confirmed(self, line: NodeLine, channel: str) -> None:
        """CHANNEL is subscribed on LINE: wake its readers once, to read what
        was written while nobody listened."""
        watch = self._by_channel.get(channel)
        if watch is not None and self._serves(line, watch) and not watch.sure:
            watch.sure = True
            watch.ring()

    def lost(self, line: NodeLine) -> None:
        """LINE's connection is gone: its bells are unsure until subscribed
        again, there or (after a failover) at another node."""
        for channel in line.channels:
            watch = self._by_channel.get(channel)
            if watch is not None:
                watch.sure = False
        if line.channels:
            self._unsure.set()
            self._refresh(line.node)

    def moved(
        self, line: NodeLine, channel: str, refusal: rex.ResponseError | None
    ) -> None:
        """LINE's node no longer serves CHANNEL (it was unsubscribed by the
        server, or its SSUBSCRIBE refused): learn the slot map again and
        subscribe where it is served."""
        why = "unsubscribed by the server" if refusal is None else str(refusal)
        if refusal is None or isinstance(refusal, _SLOT_ERRORS):
            log.info("doorbell: %s at %s: %s", channel, line.node, why)
        elif type(refusal) not in self._warned:
            self._warned.add(type(refusal))
            log.warning(
                "doorbell: %s refused SSUBSCRIBE %s (%s); until it is accepted, "
                "the readers of such partitions read every %s s (sharded Pub/Sub "
                "needs Redis 7 or later, and an ACL user allowed SSUBSCRIBE)",
                line.node,
                channel,
                why,
                self.poll,
            )
        watch = self._by_channel.get(channel)
        if watch is not None and self._serves(line, watch):
            self._move(watch, None)
            self._refresh(line.node)

    def _serves(self, line: NodeLine, watch: _Watch) -> bool:
        return watch.node == line.node and self._lines.get(line.node) is line

    # --- keeping the subscriptions where the slots are ---------------------------

    def _refresh(self, failed: str) -> None:
        self._stale, self._failed = True, failed
        self._dirty.set()

    def _move(self, watch: _Watch, node: str | None) -> None:
        """Hear WATCH's bell at NODE (None: nowhere, for now)."""
        if watch.node is not None:
            line = self._lines.get(watch.node)
            if line is not None:
                line.release(watch.channel)
                if not line.channels:
                    del self._lines[watch.node]
                    line.task.cancel()
                    self._stopping.add(line.task)
                    line.task.add_done_callback(self._stopping.discard)
        watch.node, watch.sure = node, False
        self._unsure.set()
        if node is not None:
            watch.heard_at = node
            line = self._lines.get(node)
            if line is None:
                line = self._lines[node] = NodeLine(self, node)
            line.assign(watch.channel)

    async def _plan(self) -> None:
        """Assign each watched bell to the node that serves it, learning the
        slot map again first when it may have changed (at most once a
        ``poll``)."""
        loop = asyncio.get_running_loop()
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            if self._stale:
                wait = self._refreshed + self.poll - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                self._stale = False
                try:
                    await self.topology.refresh(self._failed or None)
                except Exception as exc:  # the cluster is unreachable for now
                    log.warning("doorbell: cannot learn the slot map: %s", exc)
                    self._refresh(self._failed)
                self._refreshed = loop.time()
            try:
                self._assign()
            except Exception:  # never leave the bells unassigned for good
                log.exception("doorbell: assigning the bells failed; trying again")
                self._refresh(self._failed)

    def _assign(self) -> None:
        moves: collections.Counter[tuple[str, str]] = collections.Counter()
        for watch in list(self._watches.values()):
            node = self.topology.node_of(watch.channel)
            if node is None:
                self._refresh(self._failed)
            elif node != watch.node:
                if watch.heard_at not in (None, node):
                    moves[(str(watch.heard_at), node)] += 1
                self._move(watch, node)
        for (old, new), count in moves.items():
            log.info("doorbell: %d bell(s) moved from %s to %s", count, old, new)

    async def _tick(self) -> None:
        """Every ``poll`` seconds, wake the readers of unsure streams."""
        while True:
            await self._unsure.wait()
            await asyncio.sleep(self.poll)
            unsure = [w for w in self._watches.values() if not w.sure]
            if not unsure:
                self._unsure.clear()
            for watch in unsure:
                watch.ring()

    async def close(self) -> None:
        """Stop listening; readers still waiting are woken."""
        self._closed = True
        tasks = [
            *self._tasks,
            *self._stopping,
            *(line.task for line in self._lines.values()),
        ]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._lines.clear()
        for watch in self._watches.values():
            watch.ring()
