"""The claimer: keeps this consumer's leases and takes over dead members' events.

Every ``claim_interval``:

* it renews the idle time of the events this consumer holds (``XCLAIM ...
  JUSTID``, which does not count as a delivery), so live members never claim
  events that are only slow;
* it claims events idle longer than ``claim_idle`` with other members
  (``XAUTOCLAIM`` with its cursor kept between scans), for no more than the free
  room, which it holds while the scan runs so the reader cannot fill it
  meanwhile;
* it prunes old idempotency marks.

An ordered subscription (one holding a partition's lease) only prunes: the
lease, not the entries' idle time, says who handles the partition's events, and
its holder took every pending entry of the group when it took the lease.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, cast

from ..events import as_text
from ..faults import Fault, classify

if TYPE_CHECKING:
    from .fetcher import Fetcher
    from .idempotency import Marks
    from .state import SubscriptionState

__all__ = ["Claimer"]

log = logging.getLogger("backbone.consumer")


class Claimer:
    def __init__(
        self, state: SubscriptionState, fetcher: Fetcher, marks: Marks | None
    ) -> None:
        self.state = state
        self.fetcher = fetcher
        self.marks = marks
        self.cursor = "0-0"

    async def run(self) -> None:
        state = self.state
        interval = state.options.effective_claim_interval
        while not state.stopping.is_set():
            await asyncio.sleep(interval)
            try:
                if state.lease is None:
                    await self.renew_leases()
                    await self.claim()
                if self.marks is not None:
                    await self.marks.prune()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Entries claimed before the failure are this consumer's now: the
                # reader takes them back from the pending list.
                state.needs_recovery = True
                if classify(exc) not in (Fault.TRANSIENT, Fault.NO_GROUP):
                    log.exception("%s: claim scan failed", state)

    async def renew_leases(self) -> None:
        """Reset the idle time of events this consumer holds."""
        state = self.state
        threshold = state.options.claim_idle / 3
        now = time.monotonic()
        stale = [d for d in state.window.held.values() if now - d.touched >= threshold]
        if not stale:
            return
        renewed = await state.redis.xclaim(
            state.stream,
            state.group,
            state.consumer,
            int(threshold * 1000),
            [d.entry_id for d in stale],
            justid=True,
        )
        renewed_ids = {as_text(cast(bytes, x)) for x in renewed}
        for d in stale:
            if d.entry_id in renewed_ids:
                d.touched = now

    async def claim(self) -> None:
        """One XAUTOCLAIM scan for at most the free room."""
        state = self.state
        window = state.window
        free = window.free_room()
        if free <= 0 or state.stopping.is_set():
            return
        # Hold the room while claiming, or the reader would fill it meanwhile;
        # give back what the claim does not use as soon as that is known.
        window.reserve(free)
        held_back = free
        try:
            state.stats.claim_scans += 1
            response = await state.redis.xautoclaim(
                state.stream,
                state.group,
                state.consumer,
                int(state.options.claim_idle * 1000),
                self.cursor,
                count=free,
            )
            entries = [e for e in response[1] if not window.busy(as_text(e[0]))]
            window.release(held_back - len(entries))
            held_back = len(entries)
            if entries:
                counts = await self.fetcher.delivery_counts(entries)
                state.stats.claimed += len(entries)
                log.info(
                    "%s: claimed %d idle event(s) from other consumers",
                    state,
                    len(entries),
                )
                await self.fetcher.admit(entries, counts)
            self.cursor = as_text(response[0])
        finally:
            window.release(held_back)
