"""``trim.lua`` behind its typed wrapper: one call removes at most COUNT of a
stream's oldest entries with their payload keys, up to what its groups,
projections and aggregates still need, and says where it stopped and why
(:class:`TrimReply`, with the :class:`TrimHold` it met). Retention
(:mod:`backbone.retention`) calls it in chunks and reads the holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from .events import as_text
from .script import Script

if TYPE_CHECKING:
    import redis.asyncio as aioredis

__all__ = ["TrimHold", "TrimReply", "TrimScript"]


class TrimHold(NamedTuple):
    """One hold trim.lua met: what holds (``group``, ``projection``,
    ``aggregates``), its name, the first entry it holds and why."""

    kind: str
    name: str
    entry_id: str
    reason: str


class TrimReply(NamedTuple):
    removed: int
    """Entries removed (dry run: that would be)."""
    payloads: int
    """Payload keys removed (dry run: that exist and would be)."""
    stop: str
    """``policy`` (nothing more to remove), ``held`` or ``chunk`` (call again)."""
    stop_id: str
    """The entry the call stopped at ("": none)."""
    cutoff: str
    """With an age bound: entries before ``<cutoff>-0`` are too old."""
    last_id: str
    """The stream's last entry id ("": empty or missing)."""
    last_taken: str
    """The last entry removed (dry run: counted) by the call ("": none)."""
    first_kept: str
    """The first entry left (dry run: the first not counted; "": none)."""
    holds: list[TrimHold]


class TrimScript(Script):
    """``trim.lua``: remove at most COUNT of a stream's oldest entries and their
    payload keys, up to what its groups, projections and aggregates need."""

    __slots__ = ()

    async def trim(
        self,
        client: aioredis.Redis,
        *,
        stream: str,
        payload_prefix: str,
        dead_letters: bool,
        count: int,
        max_len: int | None,
        max_age_ms: int | None,
        force: bool,
        dry_run: bool,
        upto: str,
        after: str,
        counted: int,
        projections: Sequence[tuple[str, str]] = (),
    ) -> TrimReply:
        """One call (see the script's header). PROJECTIONS: (name, checkpoint
        key) of each projection of the stream."""
        raw = await self.run(
            client,
            (stream, *(key for _, key in projections)),
            (
                "dead-letters" if dead_letters else "events",
                payload_prefix,
                count,
                "" if max_len is None else max_len,
                "" if max_age_ms is None else max_age_ms,
                "1" if force else "0",
                "1" if dry_run else "0",
                upto,
                after,
                counted,
                *(name for name, _ in projections),
            ),
        )
        text = [as_text(x) if isinstance(x, (bytes, str)) else x for x in raw]
        rest = [str(x) for x in text[8:]]
        holds = [TrimHold(*rest[i : i + 4]) for i in range(0, len(rest) - 3, 4)]
        return TrimReply(
            int(text[0]),
            int(text[1]),
            str(text[2]),
            str(text[3]),
            str(text[4]),
            str(text[5]),
            str(text[6]),
            str(text[7]),
            holds,
        )
