"""Publishing events: validate, encode, append payload hash + stream entry atomically.

Calls that arrive while a round trip is under way are coalesced into the next
one (group commit: no added latency for a lone caller, one script call for many
concurrent ones). Each round trip is one ``EVALSHA`` of ``lua/publish.lua``,
which writes every event of the batch or none of them.

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
import collections
import copy
import itertools
import logging
import time
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

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
)
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

__all__ = ["Batch", "Producer", "ProducerOptions"]

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
        declared = partitions if partitions is not None else None
        if declared is None:
            declared = contract.partitions if contract is not None else 1
        self.partitions = check_count(declared)
        """How many partitions the stream has (1: not partitioned)."""
        self._stream = keys.stream
        # Batches in flight at once: on a direct connection (pipelined, replies
        # in order) several, each with a writer of its own (its own batch record,
        # so a retry is still recognised exactly); elsewhere one.
        direct = backbone.direct is not None and not self.options.min_replicas
        slots = self.options.pipeline if direct else 1
        marked: set[OperationCodec] = set()
        self._writers = [
            Writer(backbone, keys, self.identity, self.options, contract, marked)
            for _ in range(slots)
        ]
        # The steps a first write awaits (the partition count, version marks)
        # run one caller at a time, so that calls are still sent in the order
        # they were made: after them, nothing waits before the write itself.
        self._setup = asyncio.Lock()
        self._writer = self._writers[0]
        self._idle = list(reversed(self._writers))
        self._freed = asyncio.Event()
        self._sending: set[asyncio.Task[None]] = set()
        self._keyring = Keyring.of(backbone)
        self._pending: collections.deque[Item] = collections.deque()
        self._flusher: asyncio.Task[None] | None = None
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
        return await self._publish_item(item)

    async def _publish_item(self, item: Item) -> EventId:
        if self._closed:
            raise PublishError(f"producer for {self._stream} is closed")
        if self._named is not None and self.keys.partition is not None:
            self._check_keys([item], self._named)  # before it joins a batch
        if self._idle and not self._pending:
            # A writer is free and nobody waits: send this event now, from the
            # caller's task.
            writer = self._idle.pop()
            try:
                ids = await self._send([item], writer=writer)
            finally:
                self._give(writer)
            return ids[0]
        item.future = asyncio.get_running_loop().create_future()
        self._pending.append(item)
        self._kick()
        return await item.future

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
        item = Item(
            operation, time.time_ns() // 1_000_000, self._extra_meta(), values, None
        )
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
            what=f"publish {count} event(s) to {self._stream}",
            where=repr(self.backbone),
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
        writer = await self._take()
        try:
            return await self._send(items, atomic=True, writer=writer)
        finally:
            self._give(writer)

    async def close(self) -> None:
        """Wait for queued events to be written, then refuse new ones."""
        self._closed = True
        for lane in self._lanes or ():
            await lane.close()
        while (self._flusher is not None and not self._flusher.done()) or (
            self._sending
        ):
            if self._flusher is not None and not self._flusher.done():
                await asyncio.shield(self._flusher)
            if self._sending:
                await asyncio.wait(set(self._sending))

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

    async def _take(self) -> Writer:
        """A free writer (a batch slot), waiting for one."""
        while not self._idle:
            self._freed.clear()
            await self._freed.wait()
        return self._idle.pop()

    def _give(self, writer: Writer) -> None:
        self._idle.append(writer)
        self._freed.set()
        self._kick()

    def _kick(self) -> None:
        if self._pending and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.get_running_loop().create_task(
                self._flush(), name=f"backbone-producer:{self._stream}"
            )

    async def _flush(self) -> None:
        """Send what callers queued, in batches of up to ``max_batch``, one per
        free writer: with several writers a batch goes out while the previous
        ones are still in flight."""
        linger = self.options.linger
        loop = asyncio.get_running_loop()
        while self._pending:
            if linger and len(self._pending) < self.options.max_batch:
                await asyncio.sleep(linger)
            writer = await self._take()
            batch: list[Item] = []
            while self._pending and len(batch) < self.options.max_batch:
                batch.append(self._pending.popleft())
            if not batch:
                self._give(writer)
                return
            task = loop.create_task(self._send_batch(batch, writer))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send_batch(self, batch: list[Item], writer: Writer) -> None:
        """Send BATCH with WRITER and settle its callers' futures."""
        try:
            ids = await self._send(batch, writer=writer)
        except ReplicationTimeout as exc:
            for item, event_id in zip(batch, exc.event_ids, strict=True):
                if item.future is not None and not item.future.done():
                    item.future.set_exception(
                        ReplicationTimeout(str(exc), [event_id], exc.replicas)
                    )
            return
        except BaseException as exc:
            for item in batch:
                if item.future is not None and not item.future.done():
                    item.future.set_exception(
                        exc
                        if isinstance(exc, Exception)
                        else PublishError(
                            f"publishing was interrupted ({type(exc).__name__})"
                        )
                    )
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            self._give(writer)
        for item, event_id in zip(batch, ids, strict=True):
            if item.future is not None and not item.future.done():
                item.future.set_result(event_id)

    async def _send(
        self, items: list[Item], *, writer: Writer, atomic: bool = False
    ) -> list[EventId]:
        """:meth:`_append`, and with telemetry on, the end of the items' records."""
        observer = hooks.active
        if observer is None:
            return await self._append(items, writer, atomic=atomic)
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
                return await self._send_one_by_one(items, writer)
            raise

    async def _send_one_by_one(
        self, items: list[Item], writer: Writer
    ) -> list[EventId]:
        """After Redis refused a whole batch, send its events one at a time, so
        that only the refused ones fail. Each caller learns its outcome as soon
        as it is known; when Redis becomes unreachable, the events not sent yet
        fail with that error (those already written keep their ids)."""
        results: list[EventId] = []
        for index, item in enumerate(items):
            try:
                (event_id,) = await self._send([item], atomic=True, writer=writer)
            except PublishError as exc:
                if item.future is None:
                    raise
                item.future.set_exception(exc)
                results.append(EventId(self._stream, "0-0"))
                continue
            except Exception as exc:
                for rest in items[index:]:
                    if rest.future is not None and not rest.future.done():
                        rest.future.set_exception(exc)
                raise
            if item.future is not None and not item.future.done():
                item.future.set_result(event_id)
            results.append(event_id)
        return results


class Batch:
    """Events collected in an ``async with`` block and written all-or-nothing when
    it ends without an exception (an exception discards them).

    Each event is validated when added. After the block, :attr:`event_ids` holds
    the ids in the order the events were added.
    """

    def __init__(self, producer: Producer) -> None:
        self.producer = producer
        self.event_ids: list[EventId] = []
        self._items: list[Item] = []
        self._written = False

    def add(self, operation: OperationCodec, args: Sequence[Any]) -> None:
        """Validate and queue one event (generated batch methods call this)."""
        if self._written:
            raise PublishError("this batch was already written; start a new one")
        self.producer._check_atomic_size(len(self._items) + 1)
        self._items.append(self.producer._prepare(operation, args))

    def __len__(self) -> int:
        return len(self._items)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        items, self._items = self._items, []
        if exc_type is not None:
            self.producer._settle(items, None, exc or PublishError("discarded"))
            return
        self._written = True
        self.event_ids = await self.producer._write_atomic(items)
