"""Event sourcing on backbone's streams: aggregates with optimistic concurrency,
reads of an aggregate's events through its index, and snapshots.

One module per concept:

- :mod:`.expected`: :class:`ExpectedVersion`, the rules an append checks;
- :mod:`.appender`: one atomic, version-checked append (``append.lua``), retried
  without duplicates;
- :mod:`.aggregate`: :class:`Aggregate`, state folded from events and events
  recorded by commands;
- :mod:`.history`: :class:`RecordedEvent` and reads of an aggregate's events;
- :mod:`.snapshots`: storing and loading an aggregate's state at a version;
- :mod:`.repository`: :class:`Repository`, which ties them together;
- :mod:`.replay`: :func:`replay`, a stream or a range of it into a handler.

See docs/event-sourcing.md.
"""

from __future__ import annotations

from .aggregate import Aggregate
from .expected import ExpectedVersion
from .history import RecordedEvent
from .projection import (
    Projection,
    ProjectionContext,
    ProjectionError,
    ProjectionStats,
    ProjectionStatus,
    projection_status,
)
from .replay import ReplayError, ReplaySummary, replay
from .repository import Repository

__all__ = [
    "Aggregate",
    "ExpectedVersion",
    "Projection",
    "ProjectionContext",
    "ProjectionError",
    "ProjectionStats",
    "ProjectionStatus",
    "RecordedEvent",
    "ReplayError",
    "ReplaySummary",
    "Repository",
    "projection_status",
    "replay",
]
