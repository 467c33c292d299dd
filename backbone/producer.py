"""Publishing events: validate, encode, append payload hash + stream entry atomically.

Calls that arrive while a round trip is under way are coalesced into the next
one (group commit: no added latency for a lone caller, one script call for many
concurrent ones). Each round trip is one ``EVALSHA`` of ``lua/publish.lua``,
which writes every event of the batch or none of them.

A lost connection is retried until ``publish_timeout``; a retried batch carries
the same batch number, and the script returns the entries the first attempt
wrote instead of writing them twice. Batch numbers only grow, so an attempt that
reaches Redis after a later batch was recorded writes nothing at all.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import secrets
import time
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import redis.exceptions as rex

from .codec import OperationCodec
from .connection import is_transient
from .errors import (
    ConfigurationError,
    PublishError,
    PublishTimeout,
    ReplicationTimeout,
)
from .events import (
    F_CAUSATION,
    F_CONTRACT,
    F_CORRELATION,
    F_OPERATION,
    F_PRODUCER,
    F_VERSION,
    EventId,
    current_event,
)
from .producer_options import ProducerOptions, default_identity
from .scripts import PublishStatus

if TYPE_CHECKING:
    from .connection import Backbone
    from .contract import ContractSpec
    from .keys import StreamKeys

__all__ = ["Batch", "Producer", "ProducerOptions"]

log = logging.getLogger("backbone.producer")


@dataclasses.dataclass(slots=True)
class _Item:
    """One event ready to send: its operation, producer time, extra metadata
    (correlation and causation) and encoded parameter values."""

    operation: OperationCodec
    millis: int
    extra: tuple[bytes | str, ...]
    values: list[bytes]
    future: asyncio.Future[EventId] | None


class Producer:
    """Appends events to one stream. Usually wrapped by a generated producer class."""

    def __init__(
        self,
        backbone: Backbone,
        keys: StreamKeys,
        *,
        contract: ContractSpec | None = None,
        options: ProducerOptions | None = None,
    ) -> None:
        self.backbone = backbone
        self.keys = keys
        self.contract = contract
        self.options = options or ProducerOptions()
        self.identity = self.options.identity or default_identity()
        self._stream = keys.stream
        # The batch record is this instance's alone, even when several producers
        # share an identity: a retry must only ever find its own batches.
        self._writer_key = keys.writer(f"{self.identity}:{secrets.token_hex(6)}")
        self._payload_prefix = keys.payload_prefix
        self._record_ttl_ms = str(int(self.options.batch_record_ttl * 1000))
        self._sequence = 0
        self._pending: collections.deque[_Item] = collections.deque()
        self._send_lock = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None
        self._templates: dict[OperationCodec, list[bytes | str | int]] = {}
        self._closed = False

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
        if not self._send_lock.locked() and not self._pending:
            # Nobody is writing: send this event now, from the caller's task.
            async with self._send_lock:
                ids = await self._send([item])
            self._kick()
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
        return await self._write_atomic([self._prepare(op, args) for op, args in calls])

    def _prepare(self, operation: OperationCodec, args: Sequence[Any]) -> _Item:
        values = operation.encode(args)
        return _Item(
            operation, time.time_ns() // 1_000_000, self._extra_meta(), values, None
        )

    async def _write_atomic(self, items: list[_Item]) -> list[EventId]:
        if not items:
            return []
        if self._closed:
            raise PublishError(f"producer for {self._stream} is closed")
        async with self._send_lock:
            ids = await self._send(items, atomic=True)
        self._kick()
        return ids

    async def close(self) -> None:
        """Wait for queued events to be written, then refuse new ones."""
        self._closed = True
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    def _check_atomic_size(self, size: int) -> None:
        if size > self.options.max_atomic_batch:
            raise ConfigurationError(
                f"an atomic batch holds at most {self.options.max_atomic_batch} "
                f"events, not {size}; split it or raise "
                "ProducerOptions.max_atomic_batch"
            )

    # --- internals -----------------------------------------------------------------

    def _template(self, operation: OperationCodec) -> list[bytes | str | int]:
        """The arguments describing OPERATION once per batch (see publish.lua)."""
        template = self._templates.get(operation)
        if template is None:
            spec = operation.operation
            fields = operation.field_names
            meta: list[bytes | str] = [
                F_OPERATION,
                spec.name,
                F_VERSION,
                str(spec.version),
                F_CONTRACT,
                spec.contract,
                F_PRODUCER,
                self.identity,
            ]
            template = [len(meta), *meta, len(fields), *fields]
            self._templates[operation] = template
        return template

    @staticmethod
    def _extra_meta() -> tuple[bytes | str, ...]:
        cause = current_event()
        if cause is None:
            return ()
        cause_id = str(cause.event_id)
        return (F_CORRELATION, cause.correlation_id or cause_id, F_CAUSATION, cause_id)

    def _kick(self) -> None:
        if self._pending and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.get_running_loop().create_task(
                self._flush(), name=f"backbone-producer:{self._stream}"
            )

    async def _flush(self) -> None:
        linger = self.options.linger
        while self._pending:
            if linger and len(self._pending) < self.options.max_batch:
                await asyncio.sleep(linger)
            async with self._send_lock:
                batch: list[_Item] = []
                while self._pending and len(batch) < self.options.max_batch:
                    batch.append(self._pending.popleft())
                try:
                    ids = await self._send(batch)
                except ReplicationTimeout as exc:
                    for item, event_id in zip(batch, exc.event_ids, strict=True):
                        if item.future is not None and not item.future.done():
                            item.future.set_exception(
                                ReplicationTimeout(str(exc), [event_id], exc.replicas)
                            )
                    continue
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
                    continue
                for item, event_id in zip(batch, ids, strict=True):
                    if item.future is not None and not item.future.done():
                        item.future.set_result(event_id)

    async def _send(self, items: list[_Item], *, atomic: bool = False) -> list[EventId]:
        """One atomic write of ITEMS, retried on transient errors until the timeout.

        The caller holds the send lock, so a producer has one batch in flight and
        its batch record describes the batch being retried or an older one; as
        batch numbers only grow, an attempt that arrives after a later batch
        writes nothing. When Redis refuses a coalesced (not ATOMIC) batch, its
        events are sent one by one so that only the refused ones fail.
        """
        self._sequence += 1
        sequence = str(self._sequence)
        argv: list[bytes | str | int] = [
            self._payload_prefix,
            sequence,
            self._record_ttl_ms,
            len(items),
            0,  # the number of templates, set below
        ]
        numbers: dict[OperationCodec, int] = {}
        body: list[bytes | str | int] = []
        for item in items:
            number = numbers.get(item.operation)
            if number is None:
                number = numbers[item.operation] = len(numbers) + 1
                argv.extend(self._template(item.operation))
            body.append(number)
            body.append(item.millis)
            body.append(len(item.extra))
            if item.extra:
                body.extend(item.extra)
            body.extend(item.values)
        argv[4] = len(numbers)
        argv.extend(body)
        deadline = time.monotonic() + self.options.publish_timeout
        delay = 0.05
        attempt = 0
        script = self.backbone.scripts.publish
        client = self.backbone.redis
        keys = (self._stream, self._writer_key)
        wait = self.options.min_replicas
        wait_ms = int(self.options.replica_timeout * 1000)
        replicas = 0
        while True:
            attempt += 1
            try:
                remaining = deadline - time.monotonic()
                async with asyncio.timeout(
                    max(remaining, 0.001)
                    + (self.options.replica_timeout if wait else 0)
                ):
                    reply, replicas = await script.append(
                        client, keys, argv, replicas=wait, timeout_ms=wait_ms
                    )
                break
            except (rex.ResponseError, rex.DataError) as exc:
                if is_transient(exc):
                    last_error: BaseException = exc
                else:
                    if len(items) > 1 and not atomic:
                        return await self._send_one_by_one(items)
                    raise PublishError(
                        f"Redis refused to append to {self._stream}: {exc}"
                    ) from exc
            except TimeoutError as exc:
                last_error = exc
            except Exception as exc:
                if not is_transient(exc):
                    raise
                last_error = exc
            # The outcome of the failed attempt is unknown: the same batch number
            # lets the script return what an attempt that got through wrote.
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PublishTimeout(
                    f"could not publish {len(items)} event(s) to {self._stream} within "
                    f"{self.options.publish_timeout:g}s ({attempt} attempts); last "
                    f"error: {type(last_error).__name__}: {last_error}. Check that "
                    f"Redis at {self.backbone!r} is up, or raise "
                    "ProducerOptions.publish_timeout"
                ) from last_error
            if attempt == 1:
                log.warning(
                    "publish to %s failed (%s: %s); retrying for up to %.1fs",
                    self._stream,
                    type(last_error).__name__,
                    last_error,
                    remaining,
                )
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, 1.0)
        stream = self._stream
        status = reply.status
        if status is PublishStatus.REFUSED:  # an earlier attempt's, answer lost
            if len(items) > 1 and not atomic:
                return await self._send_one_by_one(items)
            raise PublishError(f"Redis refused to append to {stream}: {reply.detail}")
        if status is PublishStatus.STALE:
            # Not met in normal runs: the answer to a stale attempt goes to a
            # connection the producer has given up on.
            raise PublishError(
                f"batch {sequence} of this producer is older than batch "
                f"{reply.detail}, the last one recorded for it on {stream}; "
                "nothing was written (its events were written by an earlier "
                "attempt, or their callers were told it failed)"
            )
        ids = [EventId(stream, raw) for raw in reply.ids]
        if status is PublishStatus.DUPLICATE and len(ids) != len(items):
            raise PublishError(
                f"a retried batch of {len(items)} event(s) was already written to "
                f"{self._stream}, but only {len(ids)} of its entries are still there "
                "(trimmed meanwhile); the events are not written twice"
            )
        self.backbone.notify_written(self._stream)
        if wait and replicas < wait:
            raise ReplicationTimeout(
                f"{len(ids)} event(s) written to {self._stream}, but only {replicas} "
                f"of {wait} replica(s) confirmed within "
                f"{self.options.replica_timeout:g}s; they are on the primary and would "
                "be lost only by a failover before the replicas catch up",
                list(ids),
                replicas,
            )
        return ids

    async def _send_one_by_one(self, items: list[_Item]) -> list[EventId]:
        """After Redis refused a whole batch, send its events one at a time, so
        that only the refused ones fail. Each caller learns its outcome as soon
        as it is known; when Redis becomes unreachable, the events not sent yet
        fail with that error (those already written keep their ids)."""
        results: list[EventId] = []
        for index, item in enumerate(items):
            try:
                (event_id,) = await self._send([item], atomic=True)
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
        self._items: list[_Item] = []
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
            return
        self._written = True
        self.event_ids = await self.producer._write_atomic(items)
