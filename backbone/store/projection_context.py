"""What a projection's handler sees of one event, and what a projection counts."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.asyncio.client import Pipeline

    from ..events import EventId

__all__ = ["ProjectionContext", "ProjectionStats"]


@dataclasses.dataclass(frozen=True, slots=True)
class ProjectionContext:
    """What a projection's handler method receives as ``context``: the event's
    id, operation and metadata, and ``writes``, the transaction on which it
    queues its Redis writes (not awaited: they run with the checkpoint)."""

    id: EventId
    operation: str
    metadata: Mapping[str, str]
    writes: Pipeline

    @property
    def produced_at(self) -> dt.datetime | None:
        try:
            return dt.datetime.fromtimestamp(int(self.metadata["t"]) / 1000, dt.UTC)
        except (KeyError, ValueError, OverflowError, OSError):
            return None


@dataclasses.dataclass(slots=True)
class ProjectionStats:
    """What this instance did since it was made."""

    applied: int = 0
    """Events whose handler method ran (and whose page was written)."""
    skipped: int = 0
    """Bad events skipped: missing or undecodable payload, unknown operation."""
    unimplemented: int = 0
    """Events of operations the handler does not implement."""
    pages: int = 0
