"""A projection's checkpoint: where it is, whether it must be rebuilt, and how
far behind its stream it is.

The checkpoint is a hash in the stream's hash tag, ``bb:{env:uri}:proj:<name>``:
``id`` the last entry applied, ``n`` events applied and ``s`` skipped since the
last rebuild, ``broken`` set when a page went in without a write Redis refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from ..errors import BackboneError, ConfigurationError
from ..events import as_text, id_key
from . import ranges

if TYPE_CHECKING:
    from ..connection import Backbone

__all__ = [
    "BROKEN",
    "LAG_CAP",
    "ProjectionError",
    "ProjectionStatus",
    "next_id",
    "projection_status",
]

LAG_CAP: Final = 10_000
"""Lag counts at most this many entries (one capped XRANGE)."""


class ProjectionError(BackboneError):
    """A projection cannot go on: its handler failed (nothing of the page was
    written), Redis refused a write of a page (the projection must be rebuilt),
    or its checkpoint is unreadable."""


BROKEN: Final = b"broken"
"""Checkpoint field set when a page was committed without a refused write."""


@dataclasses.dataclass(frozen=True, slots=True)
class ProjectionStatus:
    """A projection's checkpoint against its stream."""

    name: str
    stream: str
    checkpoint: str | None
    """The last entry id applied (None: from the beginning)."""
    last_id: str | None
    """The stream's last entry id (None: no stream)."""
    lag: int
    """Entries after the checkpoint (at most LAG_CAP; see ``lag_exact``)."""
    lag_exact: bool
    applied: int
    """Events applied since the last rebuild (kept with the checkpoint)."""
    skipped: int
    """Bad events skipped since the last rebuild."""
    broken: str | None = None
    """Set when Redis refused a write of an applied page: the read model misses
    it; the projection refuses to go on until rebuilt."""

    @property
    def ahead(self) -> bool:
        """True when the checkpoint is after the stream's last entry (the stream
        was replaced, or the checkpoint written by hand): events up to the
        checkpoint are never applied."""
        checkpoint, last = self.checkpoint, self.last_id
        return bool(checkpoint and last and id_key(checkpoint) > id_key(last))


def next_id(entry_id: str) -> str:
    """The smallest entry id after checkpoint ENTRY_ID (an inclusive XRANGE
    start); a checkpoint that is not an entry id is a :class:`ProjectionError`."""
    try:
        after = ranges.next_id(entry_id)
    except ConfigurationError:
        raise ProjectionError(
            f"the checkpoint {entry_id!r} is not an entry id (written by something "
            "else than backbone?); rebuild the projection"
        ) from None
    return after or "+"


def _count(saved: Mapping[Any, Any], field: bytes) -> int:
    """A counter of the checkpoint hash (0 when missing or unreadable)."""
    try:
        return int(saved.get(field, 0))
    except ValueError:
        return 0


async def projection_status(
    backbone: Backbone, uri: str, name: str, *, cap: int = LAG_CAP
) -> ProjectionStatus:
    """The status of projection NAME on stream URI (no handler needed)."""
    keys = backbone.keys(uri)
    checkpoint_key = keys.projection(name)
    redis = backbone.redis
    saved = await redis.hgetall(checkpoint_key)
    checkpoint = as_text(saved[b"id"]) if b"id" in saved else None
    last = await redis.xrevrange(keys.stream, count=1)
    last_id = as_text(last[0][0]) if last else None
    start = "-" if checkpoint is None else next_id(checkpoint)
    behind = await redis.xrange(keys.stream, start, "+", count=cap + 1) or []
    return ProjectionStatus(
        name=name,
        stream=keys.stream,
        checkpoint=checkpoint,
        last_id=last_id,
        lag=min(len(behind), cap),
        lag_exact=len(behind) <= cap,
        applied=_count(saved, b"n"),
        skipped=_count(saved, b"s"),
        broken=as_text(saved[BROKEN]) if BROKEN in saved else None,
    )
