"""The consumer loop of one subscription: a consumer in a consumer group.

Tasks of one subscription::

    reader    read.lua: XACK what finished, XREADGROUP COUNT <free room> >, the
              payload values of each entry, in one call; when nothing is new,
              XREAD BLOCK until the stream grows (own pending entries first)
    workers   `concurrency` of them: decode, call the handler, retry, dead-letter
    acker     writes the acks the reader did not carry (an idle reader), batched
    claimer   renews the leases of held events (XCLAIM JUSTID) and claims events
              idle too long with other members (XAUTOCLAIM, with its cursor)

At most ``max_in_flight`` events are held (queued or running). An event leaves the
pending list only by an ack or by the dead-letter script, which acks it in the
same atomic step; everything else (a crash, a stop, a lost connection) leaves it
pending, to be handled again by this consumer on restart or by another member
once idle for ``claim_idle``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import logging
import os
import signal
import socket
import time
import traceback
from collections.abc import Awaitable, Callable, Generator, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self, cast

import redis.exceptions as rex

from .connection import is_transient
from .errors import ConfigurationError, DecodeError
from .events import (
    F_CAUSATION,
    F_CONTRACT,
    F_CORRELATION,
    F_OPERATION,
    F_PRODUCER,
    F_REDRIVE_GROUP,
    F_REDRIVE_ORIGIN,
    F_TIME,
    F_VERSION,
    EventContext,
    EventId,
    reset_current_event,
    set_current_event,
)
from .keys import validate_name
from .options import AckPolicy, StartFrom, SubscriptionOptions, UnknownOperation

if TYPE_CHECKING:
    from .connection import Backbone
    from .dispatch import Dispatcher, Route
    from .keys import StreamKeys

__all__ = ["Subscription", "SubscriptionStats"]

log = logging.getLogger("backbone.consumer")

_MAX_ERROR_TEXT: Final = 2000
_YIELD_EVERY: Final = 64
_ACK_DELAY: Final = 0.002
_MARK_PRUNE_EVERY: Final = 60.0


@dataclasses.dataclass(slots=True)
class SubscriptionStats:
    """Counters of one subscription (for logs, tests and dashboards)."""

    received: int = 0
    handled: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    skipped: int = 0
    duplicates_skipped: int = 0
    acked: int = 0
    claimed: int = 0
    claim_scans: int = 0
    recovered: int = 0
    max_in_flight_seen: int = 0
    reconnects: int = 0


@dataclasses.dataclass(slots=True)
class _Delivery:
    """One event held by the subscription.

    From read.lua it comes with its operation, re-drive group, flat fields and
    payload VALUES in parameter order; from a claim or a recovery, with its
    fields already parsed and the same VALUES fetched separately.
    """

    entry_id: str
    flat: list[bytes] | None
    delivery_count: int
    touched: float
    op: bytes | None = None
    only: bytes | None = None
    values: list[bytes | None] | None = None
    done_mark: bool = False
    acked: bool = False
    parsed: dict[bytes, bytes] | None = None

    @property
    def fields(self) -> dict[bytes, bytes]:
        """The stream entry's fields (empty when the entry was deleted)."""
        if self.parsed is None:
            self.parsed = _pairs(self.flat)
        return self.parsed


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _before(entry_id: str) -> str:
    """The id just before ENTRY_ID (to start a group at an entry, inclusive)."""
    ms_text, _, seq_text = entry_id.partition("-")
    ms, seq = int(ms_text), int(seq_text or "0")
    if seq > 0:
        return f"{ms}-{seq - 1}"
    if ms > 0:
        return f"{ms - 1}-18446744073709551615"
    return "0-0"


class Subscription:
    """A running consumer: returned by ``subscribe``; await ``completion``, call
    :meth:`stop`, or use it as an async context manager (leaving stops it)."""

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
    ) -> None:
        self.backbone = backbone
        self.keys = keys
        self.dispatcher = dispatcher
        self.group = validate_name("group", group)
        self.consumer = validate_name("consumer", consumer or default_consumer_name())
        self.options = options or SubscriptionOptions()
        if self.options.block + 1 > backbone.command_timeout:
            raise ConfigurationError(
                f"block ({self.options.block:g}s) must be at least 1s shorter than the "
                f"connection's command_timeout ({backbone.command_timeout:g}s); lower "
                "block or raise Backbone(command_timeout=...)"
            )
        self.start_id = self._start_id(start)
        self.stats = SubscriptionStats()
        self._redis = backbone.redis
        self._stream = keys.stream
        self._noack = self.options.ack is AckPolicy.ON_RECEIPT
        self._ready: collections.deque[_Delivery] = collections.deque()
        self._ready_signal = asyncio.Event()
        self._workers_closing = False
        self._held: dict[str, _Delivery] = {}
        self._read_script = backbone.scripts.read
        self._prefix = keys.payload_prefix
        known: list[bytes | str | int] = [len(dispatcher.contract.codecs)]
        for name, codec in dispatcher.contract.codecs.items():
            known += [name, len(codec.field_names), *codec.field_names]
        self._known_operations = tuple(known)
        self._group_bytes = self.group.encode()
        self._routes = {
            name.encode(): (name, dispatcher.get(name))
            for name in dispatcher.contract.codecs
        }
        self._room = asyncio.Event()
        self._stopping = asyncio.Event()
        self._acks: list[str] = []
        self._ack_wakeup = asyncio.Event()
        self._acks_closing = False
        self._acks_sending = 0
        self._acking: set[str] = set()
        self._reserved = 0
        self._low_water = max(1, self.options.max_in_flight // 4)
        self._room_wanted = 1
        self._room_waiting = False
        self._ack_after_success = self.options.ack is AckPolicy.AFTER_SUCCESS
        self._last_seen = "0-0"
        self._group_ready = False
        self._outage_since: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._completion: asyncio.Future[None] | None = None
        self._last_prune = 0.0
        self._needs_recovery = False

    @staticmethod
    def _start_id(start: StartFrom | EventId | str) -> str:
        if isinstance(start, StartFrom):
            return start.value
        entry = start.id if isinstance(start, EventId) else start
        parts = entry.split("-")
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise ConfigurationError(
                f"start {start!r} is not StartFrom.BEGINNING, StartFrom.NEW, an "
                "EventId or an entry id like '1700000000000-0'"
            )
        return _before(entry)

    # --- lifetime -----------------------------------------------------------------

    async def start(self) -> Self:
        """Create the group if needed and start consuming in the background."""
        if self._task is not None:
            return self
        try:
            await self._ensure_group(self.start_id)
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning(
                "%s: Redis is not reachable yet (%s); the subscription keeps trying",
                self,
                exc,
            )
        loop = asyncio.get_running_loop()
        self._completion = loop.create_future()
        self._task = loop.create_task(self._run(), name=f"backbone:{self}")
        return self

    @property
    def completion(self) -> asyncio.Future[None]:
        """Done when the subscription has stopped (raises if it failed)."""
        if self._completion is None:
            raise RuntimeError(f"{self} was not started; await its start() first")
        return self._completion

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def in_flight(self) -> int:
        """Events read and not yet finished and acknowledged."""
        return len(self._held) + len(self._acks) + self._acks_sending + self._reserved

    def _busy(self, entry_id: str) -> bool:
        """True while ENTRY_ID is held, or finished with its ack not yet written:
        it must not be claimed or recovered again."""
        return entry_id in self._held or entry_id in self._acking

    def _free_room(self) -> int:
        """Room for reads that leave queued acks where they are."""
        return self.options.max_in_flight - self.in_flight

    def _read_room(self) -> int:
        """Room for read.lua, which writes the queued acks before it reads."""
        return (
            self.options.max_in_flight
            - len(self._held)
            - self._acks_sending
            - self._reserved
        )

    async def stop(self) -> None:
        """Stop reading, let running handlers finish (``shutdown_timeout``), ack them
        and return. Events not finished stay pending for the group."""
        self._request_stop()
        if self._task is not None:
            await asyncio.shield(self._task)

    def stop_on_signals(
        self, signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
    ) -> None:
        """Stop gracefully when the process receives one of SIGNALS."""
        loop = asyncio.get_running_loop()
        for sig in signals:
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("%s: %s received, stopping", self, sig.name)
        self._request_stop()

    def _request_stop(self) -> None:
        self._stopping.set()
        self._room.set()
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()

    def __await__(self) -> Generator[Any, None, Self]:
        return self.start().__await__()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def __repr__(self) -> str:
        return (
            f"Subscription({self._stream} group={self.group} consumer={self.consumer})"
        )

    # --- main -----------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._completion is not None
        loop = asyncio.get_running_loop()
        workers = [
            loop.create_task(self._worker(), name=f"backbone-worker:{self}:{i}")
            for i in range(self.options.concurrency)
        ]
        acker = loop.create_task(self._ack_loop(), name=f"backbone-acker:{self}")
        claimer = (
            None
            if self._noack
            else loop.create_task(self._claim_loop(), name=f"backbone-claimer:{self}")
        )
        failure: BaseException | None = None
        try:
            self._reader = loop.create_task(
                self._read_loop(), name=f"backbone-reader:{self}"
            )
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        except BaseException as exc:  # pragma: no cover - bug guard
            failure = exc
        if (
            self._reader is not None
            and self._reader.done()
            and not self._reader.cancelled()
        ):
            failure = failure or self._reader.exception()
        try:
            await self._shutdown(workers, acker, claimer)
        except BaseException as exc:  # pragma: no cover - bug guard
            failure = failure or exc
        if failure is not None:
            log.error("%s failed", self, exc_info=failure)
            self._completion.set_exception(failure)
        else:
            self._completion.set_result(None)

    async def _shutdown(
        self,
        workers: list[asyncio.Task[None]],
        acker: asyncio.Task[None],
        claimer: asyncio.Task[None] | None,
    ) -> None:
        self._stopping.set()
        if claimer is not None:
            claimer.cancel()
            _, stuck_claimer = await asyncio.wait({claimer}, timeout=1.0)
            for task in stuck_claimer:
                task.add_done_callback(_discard_outcome)
        # Events read but not started stay pending (this consumer's PEL).
        while self._ready:
            self._held.pop(self._ready.popleft().entry_id, None)
        self._workers_closing = True
        self._ready_signal.set()
        _, late = await asyncio.wait(workers, timeout=self.options.shutdown_timeout)
        for task in late:
            task.cancel()
        if late:
            log.warning(
                "%s: %d handler(s) did not finish within %.1fs; their events stay "
                "pending",
                self,
                len(late),
                self.options.shutdown_timeout,
            )
            # A cancel can be lost inside a Redis command a handler makes; do not
            # wait for such a handler for ever.
            _, stuck = await asyncio.wait(late, timeout=1.0)
            for task in stuck:
                task.add_done_callback(_discard_outcome)
        self._acks_closing = True
        self._ack_wakeup.set()
        try:
            await asyncio.wait_for(
                acker, timeout=max(self.options.shutdown_timeout, 1.0)
            )
        except TimeoutError:
            log.warning("%s: final acks not written; those events stay pending", self)

    # --- group ----------------------------------------------------------------------

    async def _ensure_group(self, start_id: str) -> None:
        try:
            await self._redis.xgroup_create(
                self._stream, self.group, id=start_id, mkstream=True
            )
            log.info("%s: created group at %s", self, start_id)
        except rex.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        for info in await self._redis.xinfo_groups(self._stream):
            if _text(info.get("name")) == self.group:
                last = _text(info.get("last-delivered-id"))
                if last and self._last_seen == "0-0":
                    self._last_seen = last
                break
        self._group_ready = True

    async def _recreate_group(self) -> None:
        """The group vanished (a Redis restart without persistence, XGROUP DESTROY):
        create it again where this consumer last read, so nothing after is lost."""
        log.warning(
            "%s: the consumer group is gone (NOGROUP); creating it again after %s",
            self,
            self._last_seen,
        )
        # A group this subscription never saw starts where it was asked to.
        await self._ensure_group(
            self._last_seen if self._group_ready else self.start_id
        )

    # --- reading --------------------------------------------------------------------

    async def _read_loop(self) -> None:
        self._needs_recovery = not self._noack
        block_ms = max(1, int(self.options.block * 1000))
        while not self._stopping.is_set():
            if self._needs_recovery:
                if await self._guarded(self._recover_pending):
                    self._needs_recovery = False
                continue
            free = self._read_room()
            if free <= 0 or (free < self._low_water and self._held):
                # Wait for a quarter of the room, so reads stay large under load
                # (and the reader is not woken by every finished event).
                self._room_wanted = self._low_water if self._held else 1
                await self._wait_for_room()
                continue
            wakeup = self.backbone.wakeup_event(self._stream)
            last = await self._guarded(self._read_batch, free)
            if last is None:
                # The read may have run with its reply lost: what it delivered is
                # pending with this consumer; take it back before reading on.
                self._needs_recovery = not self._noack
                continue
            if last is True:
                continue
            if self._stopping.is_set():
                # A stop's cancel can be lost inside a command that completes
                # (redis-py catches it there); never start blocking after a stop.
                break
            # Nothing new: wait until the stream grows past its last entry.
            if wakeup is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), self.options.block)
            else:
                await self._guarded(self._wait_for_entries, last, block_ms)

    async def _wait_for_room(self) -> None:
        self._room.clear()
        self._room_waiting = True
        try:
            await self._room.wait()
        finally:
            self._room_waiting = False

    async def _read_batch(self, count: int) -> str | bool:
        """One call of read.lua: ack what finished, read new entries with their
        payloads. True when it got entries, else the stream's last entry id."""
        keys: tuple[str, ...] = (self._stream,)
        if self.options.idempotent:
            keys = (self._stream, self.keys.done(self.group))
        acks, self._acks = self._acks, []
        self._acks_sending += len(acks)
        # The entries this read may bring are spoken for until they are held, so
        # a concurrent claim cannot take the same room.
        self._reserved += count
        try:
            try:
                reply: list[Any] = await self._read_script.run(
                    self._redis,
                    keys,
                    (
                        self.group,
                        self.consumer,
                        count,
                        "1" if self._noack else "0",
                        self._prefix,
                        *self._known_operations,
                        *acks,
                    ),
                )
            except BaseException:
                self._acks[:0] = acks
                raise
            finally:
                self._acks_sending -= len(acks)
            self._acking.difference_update(acks)
            self.stats.acked += len(acks)
            head = reply[0]
            if head is not None:
                return _text(head)
            now = time.monotonic()
            deliveries: list[_Delivery] = []
            for n in range(1, len(reply), 6):
                d = _Delivery(reply[n].decode(), reply[n + 3], 1, now, reply[n + 1])
                d.only = reply[n + 2]
                d.values = reply[n + 4]
                d.done_mark = reply[n + 5] is not None
                deliveries.append(d)
        finally:
            self._release_room(count)
        self._last_seen = deliveries[-1].entry_id
        self._enqueue(deliveries)
        return True

    async def _wait_for_entries(self, last: str, block_ms: int) -> None:
        """Block (XREAD, which consumes nothing) until an entry after LAST exists.

        The XREAD runs in a task of its own: redis-py can swallow a cancellation
        that arrives as a blocking command starts, and a stop must not wait for
        the block to run out.
        """
        waiting = asyncio.ensure_future(
            self._redis.xread({self._stream: last}, count=1, block=block_ms)
        )
        try:
            await asyncio.shield(waiting)
        except asyncio.CancelledError:
            waiting.cancel()
            waiting.add_done_callback(_discard_outcome)
            raise

    async def _guarded(self, fn: Any, *args: Any) -> Any:
        """Run FN; survive lost connections and a vanished group. None on failure."""
        try:
            result = await fn(*args)
        except rex.ResponseError as exc:
            if "NOGROUP" in str(exc):
                with contextlib.suppress(Exception):
                    await self._recreate_group()
                return None
            if not is_transient(exc):
                raise
            await self._outage(exc)
            return None
        except Exception as exc:
            if not is_transient(exc):
                raise
            await self._outage(exc)
            return None
        if self._outage_since is not None:
            log.warning(
                "%s: Redis is back after %.1fs",
                self,
                time.monotonic() - self._outage_since,
            )
            self._outage_since = None
            self.stats.reconnects += 1
        return result

    async def _outage(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self._outage_since is None:
            self._outage_since = now
            self._outage_delay = 0.05
            log.warning(
                "%s: lost Redis (%s: %s); retrying", self, type(exc).__name__, exc
            )
        await asyncio.sleep(self._outage_delay)
        self._outage_delay = min(self._outage_delay * 2, 2.0)

    async def _recover_pending(self) -> bool:
        """Take back this consumer's pending entries that it does not hold: those
        an earlier run left, or those whose payloads could not be fetched.

        XPENDING lists them without touching them; XCLAIM (to ourselves) counts the
        new delivery and drops entries deleted meanwhile from the pending list.
        """
        start = "-"
        while not self._stopping.is_set():
            free = self._free_room()
            if free <= 0:
                self._room_wanted = 1
                await self._wait_for_room()
                continue
            rows = await self._redis.xpending_range(
                self._stream,
                self.group,
                min=start,
                max="+",
                count=free,
                consumername=self.consumer,
            )
            if not rows:
                return True
            start = "(" + _text(cast(bytes, rows[-1]["message_id"]))
            counts = {
                _text(cast(bytes, row["message_id"])): int(row["times_delivered"]) + 1
                for row in rows
            }
            ids: list[Any] = [i for i in counts if not self._busy(i)]
            if not ids:
                continue
            entries = await self._redis.xclaim(
                self._stream, self.group, self.consumer, 0, ids
            )
            if entries:
                self.stats.recovered += len(entries)
                log.info(
                    "%s: re-processing %d pending event(s) of this consumer",
                    self,
                    len(entries),
                )
                await self._admit(cast(Any, entries), counts)
        return False

    async def _delivery_counts(
        self, entries: Sequence[tuple[bytes, Any]]
    ) -> dict[str, int]:
        """Each entry's delivery count (one XPENDING per id: a range query would
        also count this consumer's other pending entries against its COUNT)."""
        if not entries:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for entry_id, _ in entries:
                pipe.xpending_range(
                    self._stream,
                    self.group,
                    min=entry_id,
                    max=entry_id,
                    count=1,
                    consumername=self.consumer,
                )
            replies: list[Any] = await pipe.execute()
        return {
            _text(cast(bytes, row["message_id"])): int(row["times_delivered"])
            for rows in replies
            for row in rows
        }

    async def _admit(
        self,
        entries: Sequence[tuple[bytes, dict[bytes, bytes] | None]],
        counts: dict[str, int] | None,
    ) -> None:
        """Fetch the payloads of claimed or recovered ENTRIES and queue them."""
        now = time.monotonic()
        deliveries: list[_Delivery] = []
        for raw_id, fields in entries:
            entry_id = _text(raw_id)
            if _id_key(entry_id) > _id_key(self._last_seen):
                self._last_seen = entry_id
            if self._busy(entry_id):
                continue
            count = counts.get(entry_id, 1) if counts is not None else 1
            d = _Delivery(entry_id, None, count, now)
            d.parsed = fields or {}
            d.op = d.parsed.get(F_OPERATION)
            d.only = d.parsed.get(F_REDRIVE_GROUP)
            deliveries.append(d)
        if not deliveries:
            return
        # Payloads only for operations this consumer handles (others are skipped
        # or dead-lettered, and the dead-letter script copies the hash itself).
        wanted: list[tuple[_Delivery, tuple[bytes, ...]]] = []
        for d in deliveries:
            known = self._routes.get(d.op) if d.op is not None else None
            if known is not None and known[1] is not None and self._mine(d):
                wanted.append((d, known[1].codec.field_names))
        if wanted and not await self._fetch_payloads(wanted):
            return  # stopping: the entries stay pending with this consumer
        # The claimer and a recovery may have fetched the same entry meanwhile.
        self._enqueue([d for d in deliveries if not self._busy(d.entry_id)])

    def _enqueue(self, deliveries: list[_Delivery]) -> None:
        held = self._held
        for d in deliveries:
            held[d.entry_id] = d
        self._ready.extend(deliveries)
        self._ready_signal.set()
        self.stats.received += len(deliveries)
        holding = len(held) + len(self._acks) + self._acks_sending
        if holding > self.stats.max_in_flight_seen:
            self.stats.max_in_flight_seen = holding

    async def _fetch_payloads(
        self, wanted: list[tuple[_Delivery, tuple[bytes, ...]]]
    ) -> bool:
        """Set each delivery's payload values (HMGET of its fields, in parameter
        order, as read.lua answers them) and idempotency mark, in one pipeline
        retried through outages: the entries are already this consumer's. False
        when the subscription stopped first."""
        while True:
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for d, names in wanted:
                        if names:
                            pipe.hmget(self.keys.payload(d.entry_id), list(names))
                    if self.options.idempotent:
                        pipe.zmscore(
                            self.keys.done(self.group),
                            [_logical_id(d) for d, _ in wanted],
                        )
                    results: list[Any] = await pipe.execute()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                if self._stopping.is_set():
                    return False
                await self._outage(exc)
                continue
            replies = iter(results)
            for d, names in wanted:
                d.values = next(replies) if names else []
            if self.options.idempotent:
                for (d, _), score in zip(wanted, next(replies), strict=True):
                    d.done_mark = score is not None
            return True

    def _mine(self, d: _Delivery) -> bool:
        only = d.only
        return not only or only == self._group_bytes

    # --- handling -------------------------------------------------------------------

    async def _worker(self) -> None:
        ready = self._ready
        held = self._held
        handled = 0
        while True:
            if not ready:
                if self._workers_closing:
                    return
                self._ready_signal.clear()
                await self._ready_signal.wait()
                continue
            delivery = ready.popleft()
            try:
                await self._process(delivery)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Never let one event kill the loop; it stays pending and comes back.
                log.exception(
                    "%s: unexpected error handling %s", self, delivery.entry_id
                )
            finally:
                held.pop(delivery.entry_id, None)
                if self._room_waiting and self._read_room() >= self._room_wanted:
                    self._room.set()
            handled += 1
            if handled % _YIELD_EVERY == 0:
                # Handlers that never suspend would starve the reader and acker.
                await asyncio.sleep(0)

    async def _process(self, d: _Delivery) -> None:
        op_name = d.op
        if op_name is None and not d.fields:
            # Deleted from the stream (trimmed) while pending: nothing to handle.
            log.info(
                "%s: pending entry %s no longer exists; acking it", self, d.entry_id
            )
            self._ack(d)
            return
        if not self._mine(d):
            self.stats.skipped += 1
            self._ack(d)
            return
        if op_name is None:
            await self._dead_letter(
                d, "malformed-entry", "the stream entry has no operation field 'o'"
            )
            return
        known = self._routes.get(op_name)
        if known is None:
            operation, route = op_name.decode(errors="replace"), None
        else:
            operation, route = known
        if route is None:
            if self.options.unknown_operation is UnknownOperation.SKIP:
                self.stats.skipped += 1
                self._ack(d)
                return
            await self._dead_letter(
                d,
                "unknown-operation",
                f"contract {self.dispatcher.contract_name} of this consumer has no "
                f"operation {operation!r} (a newer producer?); update the contract "
                "and regenerate, or subscribe with unknown_operation=SKIP",
            )
            return
        if d.delivery_count > self.options.retry.max_deliveries:
            await self._dead_letter(
                d,
                "too-many-deliveries",
                f"delivered {d.delivery_count} times (max_deliveries is "
                f"{self.options.retry.max_deliveries}); the consumers handling it may "
                "have crashed",
                handler=route.handler_name,
            )
            return
        if d.done_mark:
            self.stats.duplicates_skipped += 1
            self._ack(d)
            return
        try:
            args = self._decode(route, d)
        except DecodeError as exc:
            await self._dead_letter(d, exc.reason, str(exc), handler=route.handler_name)
            return
        await self._call(route, d, operation, args)

    def _decode(self, route: Route, d: _Delivery) -> list[Any]:
        values = d.values if d.values is not None else []
        if values.count(None) == len(values) and route.codec.parameter_names:
            raise DecodeError(
                "missing-payload",
                f"the payload hash {self.keys.payload(d.entry_id)} does not exist "
                "(deleted, expired or never written)",
            )
        return route.codec.decode_values(values)

    async def _call(
        self,
        route: Route,
        d: _Delivery,
        operation: str,
        args: list[Any],
    ) -> None:
        opts = self.options
        method = route.method
        timeout = opts.handler_timeout
        while True:
            context = _LazyContext(self, d, operation)
            token = set_current_event(context)
            try:
                if route.takes_context:
                    call = method(*args, context=context())
                else:
                    call = method(*args)
                if timeout is None:
                    await call
                else:
                    async with asyncio.timeout(timeout):
                        await call
            except (Exception, asyncio.CancelledError) as exc:
                if isinstance(exc, asyncio.CancelledError) and _being_cancelled():
                    raise  # the subscription is stopping: the event stays pending
                self.stats.failed += 1
                if d.delivery_count >= opts.retry.max_deliveries:
                    await self._dead_letter(
                        d,
                        "handler-error",
                        exc,
                        handler=route.handler_name,
                    )
                    return
                delay = opts.retry.backoff(d.delivery_count)
                log.info(
                    "%s: %s failed on %s (delivery %d of %d: %s: %s); retry in %.2fs",
                    self,
                    route.handler_name,
                    d.entry_id,
                    d.delivery_count,
                    opts.retry.max_deliveries,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                if self._stopping.is_set():
                    return  # stays pending
                if not await self._redeliver(d):
                    return
                self.stats.retried += 1
                continue
            finally:
                reset_current_event(token)
            self.stats.handled += 1
            if opts.idempotent:
                await self._mark_done(d)
            if self._ack_after_success and not d.acked:
                self._ack(d)
            return

    def _context(self, d: _Delivery, operation: str) -> EventContext:
        fields = d.fields
        produced = fields.get(F_TIME)
        origin = fields.get(F_REDRIVE_ORIGIN)
        produced_at = None
        if produced:
            with contextlib.suppress(ValueError):
                produced_at = _from_millis(int(produced))
        version_text = fields.get(F_VERSION)
        try:
            version = int(version_text) if version_text else 1
        except ValueError:
            version = 1
        return EventContext(
            id=EventId(self._stream, d.entry_id),
            operation=operation,
            version=version,
            contract=_text(fields.get(F_CONTRACT)),
            producer=_text(fields.get(F_PRODUCER)),
            produced_at=produced_at,
            group=self.group,
            consumer=self.consumer,
            delivery_count=d.delivery_count,
            correlation_id=_text(fields[F_CORRELATION])
            if F_CORRELATION in fields
            else None,
            causation_id=_text(fields[F_CAUSATION]) if F_CAUSATION in fields else None,
            original_id=EventId(self._stream, _text(origin)) if origin else None,
            _ack=self._manual_ack(d) if self.options.ack is AckPolicy.MANUAL else None,
        )

    def _manual_ack(self, d: _Delivery) -> Callable[[], Awaitable[None]]:
        async def ack() -> None:
            self._ack(d)

        return ack

    async def _redeliver(self, d: _Delivery) -> bool:
        """Count a retry as a delivery in Redis (XCLAIM RETRYCOUNT), so the count
        survives a crash. False when the entry is gone from the pending list."""
        if self._noack:
            d.delivery_count += 1
            return True
        next_count = d.delivery_count + 1
        while not self._stopping.is_set():
            try:
                claimed = await self._redis.xclaim(
                    self._stream,
                    self.group,
                    self.consumer,
                    0,
                    [d.entry_id],
                    retrycount=next_count,
                    justid=True,
                )
            except Exception as exc:
                if not is_transient(exc):
                    raise
                await self._outage(exc)
                continue
            if not claimed:
                log.info(
                    "%s: %s is no longer pending (acked elsewhere or trimmed); "
                    "not retrying it",
                    self,
                    d.entry_id,
                )
                return False
            d.delivery_count = next_count
            d.touched = time.monotonic()
            return True
        return False

    def _ack(self, d: _Delivery) -> None:
        if d.acked or self._noack:
            d.acked = True
            return
        d.acked = True
        self._acks.append(d.entry_id)
        self._acking.add(d.entry_id)
        self._ack_wakeup.set()

    async def _mark_done(self, d: _Delivery) -> None:
        key = self.keys.done(self.group)
        mark = _logical_id(d)
        while True:
            try:
                await self._redis.zadd(key, {mark: time.time()})
                return
            except Exception as exc:
                if not is_transient(exc) or self._stopping.is_set():
                    log.warning("%s: could not mark %s as handled: %s", self, mark, exc)
                    return
                await self._outage(exc)

    async def _dead_letter(
        self,
        d: _Delivery,
        reason: str,
        error: BaseException | str,
        *,
        handler: str | None = None,
    ) -> None:
        if isinstance(error, BaseException):
            error_type = type(error).__qualname__
            module = type(error).__module__
            if module not in ("builtins", "__main__"):
                error_type = f"{module}.{error_type}"
            message = str(error) or repr(error)
            trace = "".join(traceback.format_exception(error)[-12:])
        else:
            error_type = reason
            message = error
            trace = ""
        fields: list[bytes | str] = [
            "id",
            d.entry_id,
            "g",
            self.group,
            "cn",
            self.consumer,
            "h",
            handler or "",
            "r",
            reason,
            "et",
            error_type,
            "em",
            message[:_MAX_ERROR_TEXT],
            "n",
            str(d.delivery_count),
            "at",
            str(time.time_ns() // 1_000_000),
        ]
        if trace:
            fields += ["tb", trace[-_MAX_ERROR_TEXT * 2 :]]
        for name, value in d.fields.items():
            fields.append(b"m:" + name)
            fields.append(value)
        keys = (
            self._stream,
            self.keys.dead_letters,
            self.keys.payload(d.entry_id),
            self.keys.dead_letter_payload(self.group, d.entry_id),
        )
        argv = [self.group, d.entry_id, "0" if self._noack else "1", *fields]
        attempt = 0
        while True:
            attempt += 1
            try:
                written = await self.backbone.scripts.dead_letter.run(
                    self._redis, keys, argv
                )
                break
            except Exception as exc:
                if not is_transient(exc) or self._stopping.is_set() or attempt >= 20:
                    log.error(
                        "%s: could not dead-letter %s (%s); it stays pending",
                        self,
                        d.entry_id,
                        exc,
                    )
                    return
                await self._outage(exc)
        d.acked = True
        if written is None:
            log.info("%s: %s was acked elsewhere; not dead-lettered", self, d.entry_id)
            return
        self.stats.dead_lettered += 1
        log.warning(
            "%s: dead-lettered %s (%s) after %d deliveries: %s: %s",
            self,
            d.entry_id,
            reason,
            d.delivery_count,
            error_type,
            message[:300],
        )

    # --- acks -----------------------------------------------------------------------

    async def _ack_loop(self) -> None:
        while True:
            await self._ack_wakeup.wait()
            self._ack_wakeup.clear()
            closing = self._acks_closing
            if not closing:
                # Under load the reader carries the acks with its next read; give
                # it the chance before spending a round trip on them.
                await asyncio.sleep(_ACK_DELAY)
            await self._flush_acks(final=closing)
            if closing:
                return

    async def _flush_acks(self, *, final: bool) -> None:
        failures = 0
        while self._acks:
            batch = self._acks[:1000]
            del self._acks[:1000]
            self._acks_sending += len(batch)
            try:
                await self._redis.xack(self._stream, self.group, *batch)
            except Exception as exc:
                self._acks[:0] = batch
                failures += 1
                if final and failures > 5:
                    log.warning(
                        "%s: %d ack(s) not written (%s); those events stay pending",
                        self,
                        len(self._acks),
                        exc,
                    )
                    return
                if not is_transient(exc) and failures == 1:
                    log.error("%s: acks refused (%s); retrying", self, exc)
                # The acker must not die: without it an idle reader's acks would
                # never be written.
                await self._outage(exc)
                continue
            finally:
                self._acks_sending -= len(batch)
                self._room.set()
            self._acking.difference_update(batch)
            self.stats.acked += len(batch)

    # --- claims ---------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        interval = self.options.effective_claim_interval
        cursor = "0-0"
        while not self._stopping.is_set():
            await asyncio.sleep(interval)
            try:
                await self._renew_leases()
                cursor = await self._claim(cursor)
                await self._prune_marks()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Entries claimed before the failure are this consumer's now: the
                # reader takes them back from the pending list.
                self._needs_recovery = True
                if not is_transient(exc) and "NOGROUP" not in str(exc):
                    log.exception("%s: claim scan failed", self)

    async def _renew_leases(self) -> None:
        """Reset the idle time of events this consumer holds, so live members do
        not claim events that are only slow."""
        threshold = self.options.claim_idle / 3
        now = time.monotonic()
        stale = [d for d in self._held.values() if now - d.touched >= threshold]
        if not stale:
            return
        renewed = await self._redis.xclaim(
            self._stream,
            self.group,
            self.consumer,
            int(threshold * 1000),
            [d.entry_id for d in stale],
            justid=True,
        )
        renewed_ids = {_text(cast(bytes, x)) for x in renewed}
        for d in stale:
            if d.entry_id in renewed_ids:
                d.touched = now

    async def _claim(self, cursor: str) -> str:
        free = self._free_room()
        if free <= 0 or self._stopping.is_set():
            return cursor
        # Hold the room while claiming, or the reader would fill it meanwhile;
        # give back what the claim does not use as soon as that is known.
        self._reserved += free
        held_back = free
        try:
            self.stats.claim_scans += 1
            response = await self._redis.xautoclaim(
                self._stream,
                self.group,
                self.consumer,
                int(self.options.claim_idle * 1000),
                cursor,
                count=free,
            )
            entries = [e for e in response[1] if not self._busy(_text(e[0]))]
            self._release_room(held_back - len(entries))
            held_back = len(entries)
            if entries:
                counts = await self._delivery_counts(entries)
                self.stats.claimed += len(entries)
                log.info(
                    "%s: claimed %d idle event(s) from other consumers",
                    self,
                    len(entries),
                )
                await self._admit(entries, counts)
            return _text(response[0])
        finally:
            self._release_room(held_back)

    def _release_room(self, count: int) -> None:
        """Give back COUNT reserved places, waking a reader that waits for room."""
        self._reserved -= count
        if count and self._room_waiting:
            self._room.set()

    async def _prune_marks(self) -> None:
        if not self.options.idempotent:
            return
        now = time.monotonic()
        if now - self._last_prune < _MARK_PRUNE_EVERY:
            return
        self._last_prune = now
        await self._redis.zremrangebyscore(
            self.keys.done(self.group),
            "-inf",
            time.time() - self.options.idempotency_ttl,
        )


class _LazyContext:
    """Builds a delivery's EventContext on first use, then keeps it."""

    __slots__ = ("_d", "_made", "_operation", "_sub")

    def __init__(self, sub: Subscription, d: _Delivery, operation: str) -> None:
        self._sub = sub
        self._d = d
        self._operation = operation
        self._made: EventContext | None = None

    def __call__(self) -> EventContext:
        if self._made is None:
            self._made = self._sub._context(self._d, self._operation)
        return self._made


def _pairs(flat: list[Any] | None) -> dict[bytes, bytes]:
    """A flat [field, value, ...] reply as a dict."""
    if not flat:
        return {}
    it = iter(flat)
    return dict(zip(it, it))  # noqa: B905 - pairs by construction


def _discard_outcome(task: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned task's outcome so asyncio does not warn about it."""
    if not task.cancelled():
        task.exception()


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _logical_id(d: _Delivery) -> str:
    origin = d.fields.get(F_REDRIVE_ORIGIN)
    return _text(origin) if origin else d.entry_id


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms or 0), int(seq or 0)


def _from_millis(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
