"""What the archive's stages share: the demand (room), the counters, the items
that flow from the readers to the writers, and one view of each outage.

The stages are tasks of one event loop. A reader asks the :class:`Demand` for
room before it reads and only reads that much; the room comes back when the
writer has committed and acknowledged, or when an entry is dead-lettered. So at
most ``max_in_flight`` events are ever read and not yet finished, whatever
PostgreSQL does: when it is down, the writer keeps its batch, the room stays
taken and the readers stop reading.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from ..keys import StreamKeys
    from .mapper import ArchiveRow

__all__ = ["ArchiveStats", "Demand", "Item", "Outage"]

log = logging.getLogger("backbone.archive")


@dataclasses.dataclass(slots=True)
class ArchiveStats:
    """Counters of one archive sink."""

    read: int = 0
    """Entries read, recovered or claimed."""
    archived: int = 0
    """Rows inserted (committed)."""
    duplicates: int = 0
    """Rows already in the archive (a redelivery): not inserted again."""
    acked: int = 0
    dead_lettered: int = 0
    skipped: int = 0
    """Entries with nothing to archive: re-driven for another group, or deleted."""
    batches: int = 0
    """Transactions committed."""
    postgres_retries: int = 0
    redis_retries: int = 0
    recovered: int = 0
    claimed: int = 0


class Item(NamedTuple):
    """One entry on its way to the archive: its row, or None when it only needs
    its ack (an entry re-driven for another group, or deleted)."""

    keys: StreamKeys
    entry_id: str
    row: ArchiveRow | None
    fields: Mapping[bytes, bytes]


class Demand:
    """The room: how many more entries the readers may take.

    Under load a reader waits until a quarter of the room (at most a batch) is
    free, so reads stay large instead of one entry each time one is acked."""

    def __init__(self, limit: int, low_water: int) -> None:
        self.limit = limit
        self.low_water = max(1, min(low_water, limit))
        self.in_flight = 0
        self._room = asyncio.Event()
        self._room.set()
        self.drained = asyncio.Event()
        self.drained.set()

    @property
    def free(self) -> int:
        return self.limit - self.in_flight

    @property
    def ready(self) -> bool:
        """Whether a read may start now."""
        return self.free >= self.low_water or (self.in_flight == 0 and self.free > 0)

    def take(self, count: int) -> None:
        """Speak for COUNT places (a read in flight, then what it brought)."""
        self.in_flight += count
        self.drained.clear()
        if not self.ready:
            self._room.clear()

    def give(self, count: int) -> None:
        """COUNT places are free again (committed and acked, dead-lettered, or
        not used by a read)."""
        if count <= 0:
            return
        self.in_flight -= count
        if self.ready:
            self._room.set()
        if self.in_flight == 0:
            self.drained.set()

    async def wait(self) -> None:
        """Until a read may start."""
        await self._room.wait()


class Outage:
    """A lost PostgreSQL or Redis, as every stage sees it: one log line when it
    goes and one when it is back, and a growing pause between attempts."""

    def __init__(self, what: str, max_backoff: float) -> None:
        self.what = what
        self.max_backoff = max_backoff
        self.since: float | None = None
        self._delay = 0.05

    @property
    def down(self) -> bool:
        return self.since is not None

    async def wait(self, exc: BaseException, *, level: int = logging.WARNING) -> None:
        """Note the failure EXC, then pause before the caller tries again."""
        if self.since is None:
            self.since = time.monotonic()
            self._delay = 0.05
            log.log(
                level,
                "%s failed (%s: %s); retrying with backoff, nothing is acknowledged "
                "meanwhile",
                self.what,
                type(exc).__name__,
                str(exc).strip().splitlines()[0] if str(exc).strip() else "",
            )
        delay = self._delay * (0.5 + random.random())
        self._delay = min(self._delay * 2, self.max_backoff)
        await asyncio.sleep(delay)

    def over(self) -> None:
        if self.since is not None:
            log.warning(
                "%s is back after %.1fs", self.what, time.monotonic() - self.since
            )
            self.since = None
