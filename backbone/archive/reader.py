"""The reader stage: one per stream, reading only as much as the demand allows.

Each read is one call of ``lua/archive_read.lua`` (:class:`ArchiveReadScript`):
up to the free room of entries with their whole payloads (``HGETALL``, any
contract) and, for an aggregate's events, their versions. At start the reader
first takes back this consumer's own pending entries (``XREADGROUP`` after
``0``: a restart under the same name finishes what it left); then it reads new
entries (``>``). With nothing new it blocks in ``XREAD`` (which consumes
nothing) until the stream grows or the sink stops.

Every entry is mapped at once (:func:`~backbone.archive.mapper.map_entry`):
rows go to the batcher, bad input to the dead letters. The room an entry takes
comes back when its row is committed and acked, or when it is dead-lettered.
Redis failures are classified once (:mod:`backbone.faults`): a lost connection
is waited out, a vanished group is created again at the beginning (archiving
is idempotent, so the price is only work), a refusal is logged and retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any, NamedTuple

import redis.exceptions as rex

from ..events import F_CONTRACT, F_OPERATION, F_REDRIVE_GROUP, as_text
from ..faults import Fault, classify
from ..script import Script
from .deadletter import dead_letter
from .mapper import Rejected, map_entry
from .state import Item

if TYPE_CHECKING:
    from ..connection import Backbone
    from ..keys import StreamKeys
    from .batcher import Batcher
    from .options import ArchiveOptions
    from .state import ArchiveStats, Demand, Outage

__all__ = ["ArchiveReadScript", "Entry", "StreamReader"]

log = logging.getLogger("backbone.archive")


class Entry(NamedTuple):
    """One entry as archive_read.lua answers it."""

    entry_id: str
    fields: dict[bytes, bytes] | None
    payload: dict[bytes, bytes] | str
    version: int | None


class ArchiveReadScript:
    """``lua/archive_read.lua``: its arguments and its reply."""

    script = Script("archive_read")

    def __init__(self, backbone: Backbone, keys: StreamKeys, options: ArchiveOptions):
        self.backbone = backbone
        self.keys = keys
        self._head = (options.group, options.consumer)
        self._tail = (
            int(options.claim_idle * 1000),
            keys.payload_prefix,
            f"{keys.stream}:agg:",
        )

    async def run(
        self, mode: str, count: int, position: str = "0"
    ) -> tuple[str | None, list[Entry]]:
        """(head, entries) of one call: MODE ``new``, ``own`` (after POSITION) or
        ``claim`` (from cursor POSITION)."""
        reply: list[Any] = await self.script.run(
            self.backbone.redis,
            (self.keys.stream,),
            (*self._head, count, mode, position, *self._tail),
        )
        head = None if reply[0] is None else as_text(reply[0])
        entries: list[Entry] = []
        for n in range(1, len(reply), 4):
            flat, payload = reply[n + 1], reply[n + 2]
            fields = None if flat is None else _pairs(flat)
            entries.append(
                Entry(
                    as_text(reply[n]),
                    fields,
                    as_text(payload) if isinstance(payload, bytes) else _pairs(payload),
                    None if reply[n + 3] is None else int(reply[n + 3]),
                )
            )
        return head, entries


def _pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


class StreamReader:
    """Reads one stream for the archive's group."""

    def __init__(
        self,
        backbone: Backbone,
        keys: StreamKeys,
        options: ArchiveOptions,
        *,
        demand: Demand,
        batcher: Batcher,
        stats: ArchiveStats,
        outage: Outage,
        parameterless: frozenset[tuple[str, str]],
        stopping: asyncio.Event,
    ) -> None:
        self.backbone = backbone
        self.keys = keys
        self.options = options
        self.demand = demand
        self.batcher = batcher
        self.stats = stats
        self.outage = outage
        self.parameterless = parameterless
        self.stopping = stopping
        self.script = ArchiveReadScript(backbone, keys, options)
        self.held: dict[str, float] = {}
        """Entries read and not yet acked (entry id -> when read or renewed)."""
        self.caught_up = False
        """The last read found nothing new and no own entry is left pending."""
        self.changed = asyncio.Event()
        """Set whenever the reader finds itself caught up."""
        self._group = options.group.encode()

    # --- the loop -------------------------------------------------------------

    async def run(self) -> None:
        recovering = True
        after = "0"
        while not self.stopping.is_set():
            if not self.demand.ready:
                await _first(self.demand.wait(), self.stopping.wait())
                continue
            # At most a batch per read: the writer starts on it while the next
            # read is mapped.
            count = min(self.demand.free, self.options.max_batch)
            mode = "own" if recovering else "new"
            # Taken before the read, so a write right after it is not missed.
            wakeup = self.backbone.wakeup_event(self.keys.stream)
            self.demand.take(count)
            try:
                reply = await self._guarded(self.script.run(mode, count, after))
            except BaseException:
                self.demand.give(count)
                raise
            if reply is None:
                self.demand.give(count)
                # The read may have run with its reply lost: what it delivered
                # is pending with this consumer; take it back first.
                recovering, after = True, "0"
                continue
            head, entries = reply
            self.demand.give(count - len(entries))
            if recovering:
                if entries:
                    after = entries[-1].entry_id
                    self.stats.recovered += len(entries)
                    await self.admit(entries)
                else:
                    recovering = False
                continue
            if entries:
                self.caught_up = False
                await self.admit(entries)
                continue
            self.caught_up = True
            self.changed.set()
            await self._wait_for_entries(head or "0-0", wakeup)

    async def ensure_group(self) -> None:
        """Create the group at the beginning of the stream unless it exists."""
        try:
            await self.backbone.redis.xgroup_create(
                self.keys.stream, self.options.group, id="0", mkstream=True
            )
            log.info(
                "%s: created group %s at the beginning",
                self.keys.stream,
                self.options.group,
            )
        except rex.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _wait_for_entries(self, last: str, wakeup: asyncio.Event | None) -> None:
        """Until an entry after LAST exists, ``block`` passes or the sink stops
        (WAKEUP: the embedded Redis' in-process signal of a write)."""
        if wakeup is not None:  # embedded Redis: XREAD does not block
            waiting: asyncio.Future[Any] = asyncio.ensure_future(wakeup.wait())
        else:
            waiting = asyncio.ensure_future(
                self.backbone.redis.xread(
                    {self.keys.stream: last},
                    count=1,
                    block=max(1, int(self.options.block * 1000)),
                )
            )
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait(
                (waiting, stop),
                timeout=self.options.block + 1,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            stop.cancel()
            if not waiting.done():
                # A blocked command is abandoned, not cancelled inside redis-py
                # (which may lose the cancel); its outcome is dropped.
                waiting.cancel()
            waiting.add_done_callback(_discard)
        if waiting.done() and not waiting.cancelled():
            exc = waiting.exception()
            if exc is not None:
                await self._fault(exc)

    # --- entries --------------------------------------------------------------

    async def admit(self, entries: list[Entry]) -> None:
        """Map ENTRIES: rows to the batcher, bad input to the dead letters. Each
        entry holds its place in the demand until it is finished."""
        self.stats.read += len(entries)
        now = time.monotonic()
        items: list[Item] = []
        rejected: list[tuple[Entry, Rejected]] = []
        duplicates = 0
        for entry in entries:
            if entry.entry_id in self.held:
                duplicates += 1  # claimed or recovered while already in flight
                continue
            self.held[entry.entry_id] = now
            fields = entry.fields
            if fields is None:
                # Deleted while pending (a forced trim): nothing to archive.
                self.stats.skipped += 1
                items.append(Item(self.keys, entry.entry_id, None, {}))
                continue
            only = fields.get(F_REDRIVE_GROUP)
            if only and only != self._group:
                self.stats.skipped += 1  # re-driven for another group
                items.append(Item(self.keys, entry.entry_id, None, fields))
                continue
            key = (
                as_text(fields.get(F_CONTRACT)),
                as_text(fields.get(F_OPERATION)),
            )
            mapped = map_entry(
                self.keys,
                entry.entry_id,
                fields,
                entry.payload,
                entry.version,
                parameterless=key in self.parameterless,
            )
            if isinstance(mapped, Rejected):
                rejected.append((entry, mapped))
            else:
                items.append(Item(self.keys, entry.entry_id, mapped, fields))
        self.demand.give(duplicates)
        self.batcher.add(items)
        for entry, why in rejected:
            await dead_letter(
                self.backbone,
                self.keys,
                group=self.options.group,
                consumer=self.options.consumer,
                entry_id=entry.entry_id,
                fields=entry.fields or {},
                reason=why.reason,
                message=why.message,
                outage=self.outage,
            )
            self.stats.dead_lettered += 1
            self.finished([entry.entry_id])

    def finished(self, entry_ids: list[str]) -> None:
        """ENTRY_IDS are acked or dead-lettered: their room is free again."""
        held = self.held
        for entry_id in entry_ids:
            held.pop(entry_id, None)
        self.demand.give(len(entry_ids))

    # --- failures -------------------------------------------------------------

    async def _guarded(self, call: Any) -> tuple[str | None, list[Entry]] | None:
        """Await CALL; None when it failed (after waiting out the failure)."""
        try:
            result: tuple[str | None, list[Entry]] = await call
        except Exception as exc:
            await self._fault(exc)
            return None
        self.outage.over()
        return result

    async def _fault(self, exc: BaseException) -> None:
        fault = classify(exc)
        if fault is Fault.BUG:
            raise exc
        self.stats.redis_retries += 1
        if fault is Fault.NO_GROUP:
            with contextlib.suppress(Exception):
                await self.ensure_group()
            log.warning(
                "%s: group %s was gone; created it again at the beginning (what "
                "is archived already is not inserted twice)",
                self.keys.stream,
                self.options.group,
            )
            return
        level = logging.WARNING if fault is Fault.TRANSIENT else logging.ERROR
        await self.outage.wait(exc, level=level)


async def _first(*waits: Any) -> None:
    """Until the first of WAITS (coroutines) is done; the others are cancelled."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def _discard(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
