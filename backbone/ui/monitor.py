"""One background poller per dashboard: it samples Redis at a steady pace,
whatever number of pages are open, and remembers what it last saw.

The pages read the poller's latest snapshot; none of them reaches Redis for
it, so ten open tabs cost Redis what one does. When Redis cannot be reached
the poller keeps the last figures, says since when Redis is away, and goes on
trying at the same pace: the page shows a banner and recovers by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Final

from ..faults import Fault, classify
from .history import History, sample_of
from .snapshot import ARCHIVE_GROUP, RESCAN, Reader, State, state_document

if TYPE_CHECKING:
    from ..connection import Backbone

__all__ = ["FORMAT", "Monitor"]

log = logging.getLogger("backbone.ui")

FORMAT: Final = 1
"""Version of the snapshot document's shape (fields may be added)."""


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="milliseconds")


def _where(backbone: Backbone) -> str:
    """The server's URL without its password (the page shows it)."""
    if backbone.embedded:
        return "embedded Redis (memory://)"
    scheme, _, rest = backbone.url.partition("://")
    rest = rest.partition("?")[0]  # query parameters may carry credentials
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    return f"{scheme}://{netloc}{slash}{path}"


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Monitor:
    """Samples BACKBONE's environment every INTERVAL seconds while running."""

    def __init__(
        self,
        backbone: Backbone,
        *,
        interval: float = 1.0,
        rescan: float = RESCAN,
        archive_group: str = ARCHIVE_GROUP,
        history: History | None = None,
    ) -> None:
        self.backbone = backbone
        self.interval = interval
        # A sample that takes longer than this is abandoned as an outage: a
        # server that stops answering must not freeze the page's figures silently.
        self.sample_timeout = max(5.0, 3 * interval)
        self.archive_group = archive_group
        self.reader = Reader(backbone, rescan=rescan)
        self.history = history or History()
        self.state: State | None = None
        self.seq = 0
        self.down_since: float | None = None
        """Wall-clock seconds of the first failed sample of an outage."""
        self.error: str | None = None
        self.checked_at: float | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # --- running ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Monitor]:
        """Sample in the background while the block runs (the first sample is
        taken before it starts, so the first page has figures)."""
        await self.sample()
        self._task = asyncio.create_task(self._run(), name="backbone-ui-monitor")
        try:
            yield self
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def refresh(self) -> None:
        """Sample now rather than at the next tick (after an action)."""
        self.reader.rescan_soon()
        self._wake.set()

    async def _run(self) -> None:
        while True:
            # Pacing between samples, cut short by refresh(); not a synchronisation.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            await self.sample()

    async def sample(self) -> None:
        """Read the state once; an error is recorded, never raised."""
        try:
            async with asyncio.timeout(self.sample_timeout):
                state = await self.reader.read()
        except Exception as exc:
            self._failed(exc)
            return
        self.checked_at = time.time()
        if self.down_since is not None:
            log.warning(
                "Redis is back after %.1fs", max(0.0, time.time() - self.down_since)
            )
        self.down_since = None
        self.error = None
        self.seq += 1
        self.state = state
        self.history.add(sample_of(self.seq, state.at, state.mono, state.streams))

    def _failed(self, exc: Exception) -> None:
        self.checked_at = time.time()
        fault = classify(exc)
        if isinstance(exc, TimeoutError) and not str(exc):
            text = f"no answer within {self.sample_timeout:.0f}s"
        else:
            text = _describe(exc)
        if fault is Fault.TRANSIENT:
            self.error = f"Redis unreachable ({text})"
        elif fault is Fault.BUG:
            log.exception("reading the dashboard's figures failed")
            self.error = f"reading the figures failed ({text})"
        else:
            self.error = f"Redis refused a read ({text})"
        if self.down_since is None:
            self.down_since = self.checked_at
            log.warning("%s; retrying every %.1fs", self.error, self.interval)

    # --- what the page reads ----------------------------------------------------------

    @property
    def up(self) -> bool:
        return self.state is not None and self.down_since is None

    def snapshot(self) -> dict[str, Any]:
        """The latest figures with the state of the connection (JSON-ready)."""
        document: dict[str, Any] = {
            "format": FORMAT,
            "environment": self.backbone.environment,
            "redis": {
                "up": self.up,
                "where": _where(self.backbone),
                "down_since": _iso(self.down_since),
                "error": self.error,
                "checked_at": _iso(self.checked_at),
            },
            "interval": self.interval,
            "seq": self.seq,
            "streams": [],
            "projections": [],
            "archives": [],
            "read_at": None,
            "point": None,
        }
        if self.state is not None:
            document.update(
                state_document(
                    self.state, self.history, archive_group=self.archive_group
                )
            )
            document["point"] = self.history.last_point()
        return document
