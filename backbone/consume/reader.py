"""The reader: produces deliveries for the room it is given, never more.

Each read writes the acks queued since the last one, reads up to the free room
of new entries (``XREADGROUP ... >``) and answers each with its payload values in
parameter order: one call of ``lua/read.lua`` (wrapped by :class:`ReadScript`),
or, for a plain subscription on a direct connection, the same in plain commands
pipelined in two round trips (:mod:`.pipelined`, cheaper for the server). When
nothing is new the reader blocks in ``XREAD`` (which
consumes nothing) until the stream grows. At start, and after a read whose reply
was lost or a failed claim, it first takes back this consumer's own pending
entries (``XPENDING`` + ``XCLAIM`` to itself) through the fetcher.

Failures are classified once (:mod:`backbone.faults`): a lost connection waits
out the outage, a vanished group is recreated, a command Redis refuses as a whole
is logged and retried with backoff. Errors about one entry never get here.

An ordered subscription holds its partition's lease (:mod:`.leases`): read.lua
checks the lease before it acks or reads anything, and its recovery takes every
pending entry of the group (the previous holder's too), in id order, with a
fenced ``XCLAIM``, before the first read. A read or claim refused by the fence
loses the lease and ends the reader: the subscription stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ..events import as_text
from ..faults import Fault, classify
from ..keyring import Keyring
from . import leases
from .delivery import Delivery, open_sealed
from .leases import LeaseLost, raise_if_fenced
from .pipelined import PipelinedRead, Versions, usable

if TYPE_CHECKING:
    from .fetcher import Fetcher
    from .group import Group
    from .state import SubscriptionState, Window

__all__ = ["ReadScript", "Reader"]

log = logging.getLogger("backbone.consumer")

T = TypeVar("T")
_FAILED: Any = object()


class ReadScript:
    """The arguments and reply of ``lua/read.lua`` for one subscription."""

    def __init__(self, state: SubscriptionState) -> None:
        self.state = state
        # Payloads only of the operations the handler implements.
        dispatcher = state.dispatcher
        handled = {
            name: codec
            for name, codec in dispatcher.contract.codecs.items()
            if dispatcher.implements(name)
        }
        known: list[bytes | str | int] = [len(handled)]
        for name, codec in handled.items():
            known += [name, codec.version, len(codec.field_names), *codec.field_names]
        self._head = (
            state.group,
            state.consumer,
        )
        self._known = tuple(known)
        self._mode = "1" if state.noack else "0"
        keys: tuple[str, ...] = (state.stream,)
        if state.options.idempotent:
            keys = (state.stream, state.keys.done(state.group))
        if state.lease is not None:
            keys = (*keys, state.lease.key)
            self._mode = f"{self._mode} {state.lease.fence}"
        self._keys = keys
        self.version = Versions()
        self.sealable: list[Delivery] = []
        """The deliveries of the last read that may hold sealed personal values
        (all of them: open_sealed chooses)."""

    async def run(
        self, count: int, acks: list[str], window: Window
    ) -> str | list[Delivery]:
        """Ack ACKS (their bookkeeping in WINDOW done here), read up to COUNT new
        entries. The deliveries, or, when nothing is new, the stream's last entry
        id."""
        state = self.state
        try:
            reply: list[Any] = await state.backbone.scripts.read.run(
                state.redis,
                self._keys,
                (
                    *self._head,
                    count,
                    self._mode,
                    state.keys.payload_prefix,
                    *self._known,
                    *acks,
                ),
            )
        except Exception as exc:
            window.acks_failed(acks)
            raise_if_fenced(exc)
            raise
        except BaseException:
            window.acks_failed(acks)
            raise
        window.acks_written(acks)
        head = reply[0]
        if head is not None:
            return as_text(head)
        now = time.monotonic()
        version_of = self.version
        deliveries: list[Delivery] = []
        for n in range(1, len(reply), 7):
            values = reply[n + 4]
            d = Delivery(
                reply[n].decode(),
                reply[n + 3],
                1,
                now,
                reply[n + 1],
                reply[n + 2],
                version=version_of(reply[n + 6]),
                done_mark=reply[n + 5] is not None,
            )
            if isinstance(values, bytes):
                d.fault = values.decode(errors="replace")
            else:
                d.values = values
            deliveries.append(d)
        self.sealable = deliveries
        return deliveries


class Reader:
    def __init__(
        self, state: SubscriptionState, group: Group, fetcher: Fetcher
    ) -> None:
        self.state = state
        self.group = group
        self.fetcher = fetcher
        self.script: ReadScript | PipelinedRead = (
            PipelinedRead(state) if usable(state) else ReadScript(state)
        )
        self.keyring = Keyring.of(state.backbone)
        dispatcher = state.dispatcher
        self.codecs = {
            name.encode(): codec
            for name, codec in dispatcher.contract.codecs.items()
            if dispatcher.implements(name)
        }

    async def run(self) -> None:
        try:
            await self._run()
        except LeaseLost as exc:
            state = self.state
            log.warning("%s: %s; stopping", state, exc)
            if state.lease is not None:
                state.lease.lose()
            state.stopping.set()

    async def _run(self) -> None:
        state = self.state
        window = state.window
        block = state.options.block
        block_ms = max(1, int(block * 1000))
        while not state.stopping.is_set():
            if state.needs_recovery:
                if await self._guarded(self._recover_pending) is True:
                    state.needs_recovery = False
                continue
            free = window.read_room()
            if free <= 0 or (free < window.low_water and window.held):
                await window.wait_for_room(window.low_water if window.held else 1)
                continue
            wakeup = state.backbone.wakeup_event(state.stream)
            last = await self._guarded(self._read, free)
            if last is _FAILED:
                # The read may have run with its reply lost: what it delivered is
                # pending with this consumer; take it back before reading on.
                state.needs_recovery = not state.noack
                continue
            if last is None:
                continue
            if state.stopping.is_set():
                # A stop's cancel can be lost inside a command that completes
                # (redis-py catches it there); never start blocking after a stop.
                break
            # Nothing new: wait until the stream grows past its last entry.
            if wakeup is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), block)
            else:
                await self._guarded(self._wait_for_entries, last, block_ms)

    async def _read(self, count: int) -> str | None:
        """One read: None when it brought entries, else the stream's last id."""
        window = self.state.window
        acks = window.take_acks()
        # The entries this read may bring are spoken for until they are held, so
        # a concurrent claim cannot take the same room.
        window.reserve(count)
        try:
            result = await self.script.run(count, acks, window)
            if isinstance(result, str):
                return result
            last = result[-1]
            self.group.saw(last.entry_id, last.flat)
            # Personal values, opened with one read of the keyring for the batch.
            # A failure here is a lost reply: the entries are recovered (and
            # opened) through the fetcher.
            sealable = self.script.sealable
            if sealable:
                await open_sealed(self.keyring, sealable, self.codecs)
        finally:
            window.release(count)
        window.hold_new(result)
        return None

    async def _wait_for_entries(self, last: str, block_ms: int) -> None:
        """Block (XREAD, which consumes nothing) until an entry after LAST exists.

        The XREAD runs in a task of its own: redis-py can swallow a cancellation
        that arrives as a blocking command starts, and a stop must not wait for
        the block to run out.
        """
        state = self.state
        waiting = asyncio.ensure_future(
            state.redis.xread({state.stream: last}, count=1, block=block_ms)
        )
        try:
            reply = await asyncio.shield(waiting)
        except asyncio.CancelledError:
            waiting.cancel()
            waiting.add_done_callback(discard_outcome)
            raise
        if isinstance(self.script, PipelinedRead):
            self.script.hint = _first_entry(reply)

    async def _guarded(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T | Any:
        """Run FN; survive lost connections, a vanished group and refusals.
        ``_FAILED`` when it did not go through."""
        state = self.state
        try:
            result = await fn(*args)
        except LeaseLost:
            raise
        except Exception as exc:
            fault = classify(exc)
            if fault is Fault.BUG:
                raise
            if fault is Fault.NO_GROUP:
                try:
                    await self.group.recreate()
                except Exception as again:
                    if classify(again) is Fault.BUG:
                        raise
                    await state.outage.wait(again)
            elif fault is Fault.TRANSIENT:
                await state.outage.wait(exc)
            else:
                # Refused as a whole (the stream key holds another type, say):
                # the same read fails until someone repairs the data; say so
                # loudly and keep trying, the loop does not die.
                await state.outage.wait(
                    exc, what="Redis refused the read", level=logging.ERROR
                )
            return _FAILED
        state.outage.over()
        return result

    async def _recover_pending(self) -> bool:
        """Take back this consumer's pending entries that it does not hold: those
        an earlier run left, or those whose reply was lost. True when done.

        XPENDING lists them without touching them; XCLAIM (to ourselves) counts the
        new delivery and drops entries deleted meanwhile from the pending list.
        Holding a lease, it takes those of every consumer of the group (the
        partition's previous holders'), with the fenced XCLAIM of lease.lua.
        """
        state = self.state
        window = state.window
        lease = state.lease
        # Holding a lease: every consumer's (None), else this consumer's alone.
        consumer = None if lease is not None else state.consumer
        start = "-"
        while not state.stopping.is_set():
            free = window.free_room()
            if free <= 0:
                await window.wait_for_room(1)
                continue
            rows = await state.redis.xpending_range(
                state.stream,
                state.group,
                min=start,
                max="+",
                count=free,
                consumername=consumer,
            )
            if not rows:
                return True
            start = "(" + as_text(cast(bytes, rows[-1]["message_id"]))
            counts = {
                as_text(cast(bytes, row["message_id"])): int(row["times_delivered"]) + 1
                for row in rows
            }
            ids: list[Any] = [i for i in counts if not window.busy(i)]
            if not ids:
                continue
            entries: Any
            if lease is None:
                entries = await state.redis.xclaim(
                    state.stream, state.group, state.consumer, 0, ids
                )
            else:
                entries = await leases.claim(state, ids)
            if entries:
                state.stats.recovered += len(entries)
                log.info(
                    "%s: re-processing %d pending event(s) of %s",
                    state,
                    len(entries),
                    "this consumer" if lease is None else "the group",
                )
                await self.fetcher.admit(cast(Any, entries), counts)
        return False


def _first_entry(reply: Any) -> tuple[bytes, list[bytes]] | None:
    """The entry (id, flat fields) an XREAD of one stream answered, if any."""
    try:
        entry_id, fields = reply[0][1][0]
    except (TypeError, IndexError, KeyError, ValueError):
        return None
    if not isinstance(entry_id, bytes) or not isinstance(fields, dict):
        return None
    return entry_id, [item for pair in fields.items() for item in pair]


def discard_outcome(task: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned task's outcome so asyncio does not warn about it."""
    if not task.cancelled():
        task.exception()
