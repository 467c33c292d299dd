"""Group commit: a producer's calls coalesced into batches, several in flight.

Calls that arrive while a round trip is under way are coalesced into the next
one: no added latency for a lone caller (it sends from its own task when a
writer is free and nobody waits), one script call for many concurrent ones.

Each batch in flight has a writer of its own (a *slot*): its own batch record,
so that a retried batch is still recognised exactly. A producer on a direct,
pipelined connection (replies in order) has several slots, so a batch goes out
while the previous ones are still in flight; elsewhere it has one.

When Redis refuses a coalesced batch as a whole, its events are sent again one by
one (:func:`one_by_one`), so that only the refused ones fail.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from .errors import PublishError, ReplicationTimeout
from .events import EventId

if TYPE_CHECKING:
    from .producer_options import ProducerOptions
    from .writer import Item, Writer

__all__ = ["GroupCommit", "one_by_one"]

Send = Callable[["list[Item]", "Writer"], Awaitable["list[EventId]"]]
"""Writes a (coalesced, not atomic) batch with a writer and returns its ids."""


class GroupCommit:
    """The writers (batch slots) of one producer and the callers queued for the
    next free one."""

    def __init__(
        self, writers: list[Writer], send: Send, options: ProducerOptions, stream: str
    ) -> None:
        self.writers = writers
        self._send = send
        self._options = options
        self._stream = stream
        self._idle = list(reversed(writers))
        self._freed = asyncio.Event()
        self._sending: set[asyncio.Task[None]] = set()
        self._pending: collections.deque[Item] = collections.deque()
        self._flusher: asyncio.Task[None] | None = None

    def publish(self, item: Item) -> Awaitable[EventId]:
        """Write ITEM: at once when nothing is being written, else in the next
        batch a free writer sends (calls that arrive while batches are in flight
        are coalesced, rather than each taking a slot of its own)."""
        if len(self._idle) == len(self.writers) and not self._pending:
            # Nothing in flight, nobody waits: send this event now, from the
            # caller's task.
            return self._send_now(item, self._idle.pop())
        item.future = future = asyncio.get_running_loop().create_future()
        self._pending.append(item)
        self._kick()
        return future

    async def _send_now(self, item: Item, writer: Writer) -> EventId:
        try:
            ids = await self._send([item], writer)
        finally:
            self.give(writer)
        return ids[0]

    async def take(self) -> Writer:
        """A free writer (a batch slot), waiting for one."""
        while not self._idle:
            self._freed.clear()
            await self._freed.wait()
        return self._idle.pop()

    def give(self, writer: Writer) -> None:
        """Give WRITER back (after :meth:`take`): the next batch may use it."""
        self._idle.append(writer)
        self._freed.set()
        self._kick()

    async def drain(self) -> None:
        """Wait until every queued call is written and no batch is in flight:
        the flusher's, a lone caller's or an atomic batch's (every writer is
        back)."""
        while True:
            if self._flusher is not None and not self._flusher.done():
                await asyncio.shield(self._flusher)
            elif self._sending:
                await asyncio.wait(set(self._sending))
            elif len(self._idle) < len(self.writers):
                self._freed.clear()
                await self._freed.wait()
            else:
                return

    def _kick(self) -> None:
        if self._pending and (self._flusher is None or self._flusher.done()):
            self._flusher = asyncio.get_running_loop().create_task(
                self._flush(), name=f"backbone-producer:{self._stream}"
            )

    async def _flush(self) -> None:
        """Send what callers queued, in batches of up to ``max_batch``, one per
        free writer: with several writers a batch goes out while the previous
        ones are still in flight."""
        linger = self._options.linger
        loop = asyncio.get_running_loop()
        while self._pending:
            if linger and len(self._pending) < self._options.max_batch:
                await asyncio.sleep(linger)
            writer = await self.take()
            batch: list[Item] = []
            while self._pending and len(batch) < self._options.max_batch:
                batch.append(self._pending.popleft())
            if not batch:
                self.give(writer)
                return
            task = loop.create_task(self._send_batch(batch, writer))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send_batch(self, batch: list[Item], writer: Writer) -> None:
        """Send BATCH with WRITER and settle its callers' futures."""
        try:
            ids = await self._send(batch, writer)
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
            self.give(writer)
        for item, event_id in zip(batch, ids, strict=True):
            if item.future is not None and not item.future.done():
                item.future.set_result(event_id)


async def one_by_one(
    items: list[Item],
    send: Callable[[list[Item]], Awaitable[list[EventId]]],
    stream: str,
) -> list[EventId]:
    """After Redis refused a whole batch, send its events one at a time with
    SEND, so that only the refused ones fail. Each caller learns its outcome as
    soon as it is known; when Redis becomes unreachable, the events not sent yet
    fail with that error (those already written keep their ids)."""
    results: list[EventId] = []
    for index, item in enumerate(items):
        try:
            (event_id,) = await send([item])
        except PublishError as exc:
            if item.future is None:
                raise
            item.future.set_exception(exc)
            results.append(EventId(stream, "0-0"))
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
