"""The batcher: gathers the readers' items into batches for the writers.

A batch closes when it holds ``max_batch`` items or when its first item has
waited ``max_latency`` seconds, whichever comes first, or at once when the sink
flushes (a stop). Closed batches wait in order for a free writer. The batcher
holds no more than the demand lets the readers read, so it needs no limit of
its own.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time

from .state import Item

__all__ = ["Batch", "Batcher"]


class Batch:
    """Items to commit in one transaction and acknowledge together."""

    __slots__ = ("items", "opened")

    def __init__(self) -> None:
        self.items: list[Item] = []
        self.opened = time.monotonic()

    def __len__(self) -> int:
        return len(self.items)


class Batcher:
    def __init__(self, max_batch: int, max_latency: float) -> None:
        self.max_batch = max_batch
        self.max_latency = max_latency
        self._open: Batch | None = None
        self._closed: collections.deque[Batch] = collections.deque()
        self._changed = asyncio.Event()
        self._flushing = False
        self._ended = False

    @property
    def waiting(self) -> int:
        """Items not yet taken by a writer."""
        return sum(len(b) for b in self._closed) + (len(self._open or ()))

    def add(self, items: list[Item]) -> None:
        """Queue ITEMS in the open batch, closing it each time it is full."""
        for item in items:
            if self._open is None:
                self._open = Batch()
            self._open.items.append(item)
            if len(self._open) >= self.max_batch:
                self._closed.append(self._open)
                self._open = None
        if items:
            self._changed.set()

    def flush(self) -> None:
        """Close the open batch now, and every batch opened later (a stop)."""
        self._flushing = True
        self._changed.set()

    def end(self) -> None:
        """No more items will come: :meth:`next` returns None once all are taken."""
        self._ended = True
        self.flush()

    async def next(self) -> Batch | None:
        """The next closed batch, waiting for one to close; None once ended and
        empty."""
        while True:
            if self._closed:
                return self._closed.popleft()
            batch = self._open
            if batch is not None:
                age = time.monotonic() - batch.opened
                if self._flushing or age >= self.max_latency:
                    self._open = None
                    return batch
                timeout: float | None = self.max_latency - age
            elif self._ended:
                return None
            else:
                timeout = None
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)
