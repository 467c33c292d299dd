"""Publishing events: validate, encode, append payload hash + stream entry atomically.

Calls that arrive while a round trip is under way are coalesced into the next
one (group commit, :mod:`backbone.group_commit`). Each round trip is one
``EVALSHA`` of ``lua/publish.lua``, which writes every event of the batch or none
of them.

A lost connection is retried until ``publish_timeout``; a retried batch carries
the same batch number, and the script returns the entries the first attempt
wrote instead of writing them twice. Batch numbers only grow, so an attempt that
reaches Redis after a later batch was recorded writes nothing at all.

A producer of a partitioned stream (:mod:`backbone.partitions`) is a front for
one such producer per partition (a *lane*): each event goes to the lane of its
key's partition, so the events of one key are written in the order they were
published, and lanes write in parallel. An atomic batch is one script call, so
one partition: its events must share a partition (events without a key join
it).
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import logging
import time
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any

from .codec import OperationCodec
from .errors import (
    ConfigurationError,
    PublishError,
    ReplicationTimeout,
    RetiredVersionError,
)
from .events import (
    F_CAUSATION,
    F_CORRELATION,
    F_TRACE,
    EventId,
    current_event,
    current_event_or_none,
)
from .group_commit import GroupCommit, one_by_one
from .keyring import Keyring, aggregate_only, seal_items
from .partitions import agree, check_count, check_named, key_text, partition_for
from .producer_options import ProducerOptions, default_identity
from .retrying import until_answered
from .telemetry import hooks
from .writer import BatchRefused, Item, Writer

if TYPE_CHECKING:
    from .connection import Backbone
    from .contract import ContractSpec
    from .keys import StreamKeys
    from .telemetry.core import Telemetry

__all__ = ["Producer", "ProducerOptions"]

log = logging.getLogger("backbone.producer")


class Producer:
    """Appends events to one stream. Usually wrapped by a generated producer class."""

    def __init__(
        self,
        backbone: Backbone,
        keys: StreamKeys,
        *,
        contract: ContractSpec | None = None,
        options: ProducerOptions | None = None,
        partitions: int | None = None,
    ) -> None:
        self.backbone = backbone
        self.keys = keys
        self.contract = contract
        self.options = options or ProducerOptions()
        self.identity = self.options.identity or default_identity()
        if partitions is None:
            partitions = contract.partitions if contract is not None else 1
        self.partitions = check_count(partitions)
        """How many partitions the stream has (1: not partitioned)."""
        self._stream = keys.stream
        # Batches in flight at once: on a direct connection (pipelined, replies
        # in order) several, each with a writer of its own (its own batch record,
        # so a retry is still recognised exactly); elsewhere one.
        direct = backbone.direct is not None and not self.options.min_replicas
        slots = self.options.pipeline if direct else 1
        marked: set[OperationCodec] = set()
        self._commit = GroupCommit(
            [
                Writer(backbone, keys, self.identity, self.options, contract, marked)
                for _ in range(slots)
            ],
            lambda items, writer: self._send(items, writer=writer),
            self.options,
            self._stream,
        )
        # The steps a first write awaits (the partition count, version marks)
        # run one caller at a time, so that calls are still sent in the order
        # they were made: after them, nothing waits before the write itself.
        self._setup = asyncio.Lock()
        self._writer = self._commit.writers[0]
        self._keyring = Keyring.of(backbone)
        self._closed = False
        # A producer of one named partition (``orders#3``) writes there only,
        # once the recorded count shows that partition exists; a lane of a
        # producer of the whole stream is checked by that producer.
        self._agreed = False
        self._named: int | None = None
        self._key: Any = None
        self._lanes: list[Producer] | None = None
        self._turn = itertools.count()
        if self.partitions > 1 and keys.partition is None:
            self._lanes = [
                Producer(
                    backbone,
                    keys.of_partition(p),
                    contract=contract,
                    options=self.options,
                )
                for p in range(self.partitions)
            ]
            for lane in self._lanes:
                lane._agreed = True

    def keyed(self, key: Any) -> Producer:
        """This producer, putting events without a key parameter in the partition
        of KEY (a str, int or UUID): ``producer.keyed(order_id).publish(...)``.
        The explicit key wins over a key parameter."""
        key_text(key)  # a clear error now for a key that cannot be hashed
        if self._lanes is None:
            return self  # one stream: every key lands in it
        view = copy.copy(self)
        view._key = key
        return view

    # --- public -------------------------------------------------------------------

    async def publish(self, operation: OperationCodec, args: Sequence[Any]) -> EventId:
        """Validate ARGS for OPERATION, write the event, return its id.

        Raises :class:`~backbone.ValidationError` before anything is written when
        an argument is invalid, :class:`PublishTimeout` when Redis stays out of
        reach, :class:`PublishError` when Redis refuses the write.
        """
        if self._closed:
            raise PublishError(f"producer for {self._stream} is closed")
        item = self._prepare(operation, args)
        if self._lanes is not None:
            await self._agree()
            lane = self._lanes[self._partition_of([item])]
            return await lane._publish_item(item)
        if self._named is not None and self.keys.partition is not None:
            self._check_keys([item], self._named)  # before it joins a batch
        return await self._commit.publish(item)

    async def _publish_item(self, item: Item) -> EventId:
        if self._closed:
            raise PublishError(f"producer for {self._stream} is closed")
        if self._named is not None and self.keys.partition is not None:
            self._check_keys([item], self._named)  # before it joins a batch
        return await self._commit.publish(item)

    async def publish_many(
        self, calls: Sequence[tuple[OperationCodec, Sequence[Any]]]
    ) -> list[EventId]:
        """Write several events as one all-or-nothing step, in order.

        Every argument is validated before anything is written.
        """
        self._check_atomic_size(len(calls))
        items: list[Item] = []
        try:
            for op, args in calls:
                items.append(self._prepare(op, args))
        except BaseException as exc:
            self._settle(items, None, exc)
            raise
        return await self._write_atomic(items)

    def _prepare(self, operation: OperationCodec, args: Sequence[Any]) -> Item:
        if operation.personal and any(s is None for _, s in operation.personal):
            raise ConfigurationError(aggregate_only(operation.operation.qualified_name))
        values = operation.encode(args)
        extra = () if current_event_or_none() is None else self._extra_meta()
        item = Item(operation, time.time_ns() // 1_000_000, extra, values, None)
        if self._lanes is not None or self.keys.partition is not None:
            key = self._key
            if key is None:
                index = operation.operation.partition_key
                key = None if index is None else args[index]
            if key is not None and self._lanes is not None:
                item.partition = partition_for(key, self.partitions)
            else:
                item.key = key
        observer = hooks.active
        if observer is not None:
            # The span starts in the caller's context (a handler's span, say).
            item.telemetry, carried = observer.start_publish(
                self._stream, operation.operation.name
            )
            if carried is not None:
                item.extra = (*item.extra, F_TRACE, carried)
        return item

    def _check_keys(self, items: list[Item], count: int) -> None:
        """A producer of one named partition writes only events whose key (if
        they have one) belongs there: another key's events would be out of
        order with the rest of that key's."""
        partition = self.keys.partition
        for item in items:
            if item.key is not None and partition_for(item.key, count) != partition:
                raise ConfigurationError(
                    f"the event's partition key {item.key!r} belongs to partition "
                    f"{partition_for(item.key, count)} of {self.keys.uri!r}, not to "
                    f"{self.keys.name!r}; publish through a producer of the whole "
                    f"stream ({self.keys.uri!r}), which picks the partition"
                )

    def _partition_of(self, items: list[Item]) -> int:
        """The one partition of ITEMS: their keys' (a ConfigurationError when
        they differ), or, when none has a key, the next one round-robin."""
        found = {item.partition for item in items if item.partition is not None}
        if len(found) > 1:
            raise ConfigurationError(
                f"an atomic batch is written to one partition, but its events' keys "
                f"fall into partitions {sorted(found)} of {self.keys.uri!r}; write "
                "events of different keys in separate batches (or publish them one "
                "by one)"
            )
        if found:
            return found.pop()
        return next(self._turn) % self.partitions

    async def _agree(self, count: int = 1) -> None:
        """Check (once) that Redis records the partition count this producer
        declares; lost connections are retried until ``publish_timeout``."""
        if self._agreed:
            return

        async def check(_remaining: float) -> int | None:
            if self.keys.partition is not None:
                return await check_named(self.backbone, self.keys)
            return await agree(self.backbone, self.keys, self.partitions)

        self._named = await until_answered(
            check,
            timeout=self.options.publish_timeout,
            what=lambda: f"publish {count} event(s) to {self._stream}",
            where=self.backbone,
            refused=None,
            log_extra={"stream": self._stream},
        )
        self._agreed = True

    async def _write_atomic(self, items: list[Item]) -> list[EventId]:
        if not items:
            return []
        if self._closed:
            raise PublishError(f"producer for {self._stream} is closed")
        if self._lanes is not None:
            lane = self._lanes[self._partition_of(items)]
            await self._agree(len(items))
            return await lane._write_atomic(items)
        writer = await self._commit.take()
        try:
            return await self._send(items, atomic=True, writer=writer)
        finally:
            self._commit.give(writer)

    async def close(self) -> None:
        """Wait for queued events to be written, then refuse new ones."""
        self._closed = True
        for lane in self._lanes or ():
            await lane.close()
        await self._commit.drain()

    def _check_atomic_size(self, size: int) -> None:
        if size > self.options.max_atomic_batch:
            raise ConfigurationError(
                f"an atomic batch holds at most {self.options.max_atomic_batch} "
                f"events, not {size}; split it or raise "
                "ProducerOptions.max_atomic_batch"
            )

    # --- internals -----------------------------------------------------------------

    @staticmethod
    def _extra_meta() -> tuple[bytes | str, ...]:
        cause = current_event()
        if cause is None:
            return ()
        cause_id = str(cause.event_id)
        return (F_CORRELATION, cause.correlation_id or cause_id, F_CAUSATION, cause_id)

    def _send(
        self, items: list[Item], *, writer: Writer, atomic: bool = False
    ) -> Awaitable[list[EventId]]:
        """:meth:`_append`, and with telemetry on, the end of the items' records."""
        observer = hooks.active
        if observer is None:
            return self._append(items, writer, atomic=atomic)
        return self._send_observed(items, writer, atomic, observer)

    async def _send_observed(
        self, items: list[Item], writer: Writer, atomic: bool, observer: Telemetry
    ) -> list[EventId]:
        try:
            ids = await self._append(items, writer, atomic=atomic)
        except ReplicationTimeout as exc:
            written = [e for e in exc.event_ids if isinstance(e, EventId)]
            self._settle(items, written, exc, observer)
            raise
        except BaseException as exc:
            self._settle(items, None, exc, observer)
            raise
        self._settle(items, ids, None, observer)
        return ids

    def _settle(
        self,
        items: list[Item],
        ids: list[EventId] | None,
        error: BaseException | None,
        observer: Telemetry | None = None,
    ) -> None:
        """End the telemetry records of ITEMS: written as IDS (None: not written,
        a discarded batch say), or failed with ERROR. Once only: events sent one
        by one were settled by their own :meth:`_send`."""
        observer = observer or hooks.active
        records = [item.telemetry for item in items]
        for item in items:
            item.telemetry = None
        if observer is not None and any(record is not None for record in records):
            observer.publish_done(self._stream, records, ids, error)

    async def _append(
        self, items: list[Item], writer: Writer, *, atomic: bool = False
    ) -> list[EventId]:
        """One atomic write of ITEMS (see :mod:`backbone.writer`). When Redis
        refuses a coalesced (not ATOMIC) batch, or a retired operation version
        among its events refuses it, its events are sent one by one so that only
        the refused ones fail. Personal values are sealed first (one round trip
        to the keyring for the batch)."""
        if not self._agreed or writer.needs_marks(items):
            async with self._setup:
                await self._agree(len(items))
                await writer.record_marks(items)
        if self._named is not None and self.keys.partition is not None:
            self._check_keys(items, self._named)
        if _any_personal(items):
            await seal_items(
                self._keyring,
                items,
                aggregate_id=None,
                timeout=self.options.publish_timeout,
            )
        try:
            return await writer.write(items)
        except (BatchRefused, RetiredVersionError):
            if len(items) > 1 and not atomic:
                return await one_by_one(
                    items,
                    lambda one: self._send(one, atomic=True, writer=writer),
                    self._stream,
                )
            raise


def _any_personal(items: list[Item]) -> bool:
    """True when an event of ITEMS has personal values (to seal)."""
    for item in items:  # noqa: SIM110 - no generator per call
        if item.operation.personal:
            return True
    return False
