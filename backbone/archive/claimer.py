"""The claimer: keeps the entries this sink holds, takes over a dead sink's.

Every ``claim_interval`` (a third of ``claim_idle``, at most 10 s), per stream:

* it renews the idle time of the entries this consumer holds (``XCLAIM ...
  JUSTID``, not a delivery), so another sink of the group never claims what is
  only waiting for PostgreSQL to come back;
* it claims, for no more than the free room, entries idle longer than
  ``claim_idle`` with other consumers of the group (``XAUTOCLAIM`` through
  ``lua/archive_read.lua``, with their payloads; the cursor is kept between
  scans): those of a sink that died. They are archived like any others; a row
  the dead sink had committed before it died is not inserted twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from ..faults import Fault, classify

if TYPE_CHECKING:
    from .reader import StreamReader

__all__ = ["Claimer"]

log = logging.getLogger("backbone.archive")


class Claimer:
    def __init__(self, reader: StreamReader) -> None:
        self.reader = reader
        self.cursor = "0-0"
        self.scanned = False
        """A whole pass over the pending list ended (the cursor came back)."""

    async def run(self) -> None:
        reader = self.reader
        interval = reader.options.claim_interval
        while not reader.stopping.is_set():
            try:
                await asyncio.wait_for(reader.stopping.wait(), interval)
                return
            except TimeoutError:
                pass
            try:
                await self.renew_leases()
                await self.claim()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if classify(exc) is Fault.BUG:
                    raise
                # The reader sees the same outage and waits it out; a claim
                # interrupted here is scanned again at the next interval.
                log.debug("%s: claim scan failed: %s", reader.keys.stream, exc)

    async def renew_leases(self) -> None:
        reader = self.reader
        threshold = reader.options.claim_idle / 3
        now = time.monotonic()
        stale: list[Any] = [i for i, at in reader.held.items() if now - at >= threshold]
        if not stale:
            return
        await reader.backbone.redis.xclaim(
            reader.keys.stream,
            reader.options.group,
            reader.options.consumer,
            int(threshold * 1000),
            stale,
            justid=True,
        )
        for entry_id in stale:
            if entry_id in reader.held:
                reader.held[entry_id] = now

    async def claim(self) -> None:
        """One XAUTOCLAIM step for at most the free room."""
        reader = self.reader
        demand = reader.demand
        count = demand.free
        if count <= 0 or reader.stopping.is_set():
            return
        demand.take(count)
        try:
            cursor, entries = await reader.script.run("claim", count, self.cursor)
        except BaseException:
            demand.give(count)
            raise
        demand.give(count - len(entries))
        self.cursor = cursor or "0-0"
        if self.cursor == "0-0":
            self.scanned = True
        if entries:
            reader.stats.claimed += len(entries)
            log.info(
                "%s: claimed %d idle entries from other consumers of group %s",
                reader.keys.stream,
                len(entries),
                reader.options.group,
            )
            await reader.admit(entries)
