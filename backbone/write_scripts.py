"""The scripts that write a stream's events and what goes with them, each
behind a typed wrapper owning its arguments and its reply (the scripts' headers
document the wire format): ``publish.lua`` (:class:`PublishScript`, the
producer's batches), ``append.lua`` (:class:`AppendScript`, an aggregate's
events checked against its expected version), ``snapshot.lua``
(:class:`SnapshotScript`) and ``versions.lua`` (:class:`VersionsScript`, the
operation-version marks the first two check in the same atomic step).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from .events import as_text
from .script import Script

if TYPE_CHECKING:
    import redis.asyncio as aioredis

__all__ = [
    "AppendReply",
    "AppendScript",
    "AppendStatus",
    "PublishReply",
    "PublishScript",
    "PublishStatus",
    "SnapshotScript",
    "VersionsScript",
]


class PublishStatus(enum.IntEnum):
    """What publish.lua did with an attempt of a batch."""

    WRITTEN = 0
    """Written now."""
    DUPLICATE = 1
    """An earlier attempt of this batch wrote it: ``ids`` are its entries."""
    REFUSED = 2
    """Redis refused an earlier attempt of this batch: ``detail`` is the error."""
    STALE = 3
    """A later batch of the producer was recorded (``detail``): nothing written."""
    RETIRED = 4
    """An operation version of the batch is retired (``detail``): nothing written."""


class PublishReply(NamedTuple):
    status: PublishStatus
    ids: list[str]
    detail: str
    deprecated: tuple[str, ...] = ()
    """The deprecated operation versions (``contract.op:version``) written."""


class PublishScript(Script):
    """``publish.lua``. The producer builds the batch's arguments (templates and
    values, see the script's header); this wrapper runs it and reads the reply."""

    __slots__ = ()

    async def append(
        self,
        client: aioredis.Redis,
        keys: tuple[str, ...],
        argv: Sequence[bytes | str | int],
        *,
        replicas: int = 0,
        timeout_ms: int = 0,
    ) -> tuple[Any, int]:
        """Run one attempt; with REPLICAS, also ``WAIT`` for them. Returns the
        raw reply (read it with :meth:`reply`) and the number of replicas that
        confirmed (0 without REPLICAS)."""
        if replicas:
            return await self.run_and_wait(client, keys, argv, replicas, timeout_ms)
        return await self.run(client, keys, argv), 0

    @staticmethod
    def reply(raw: list[Any]) -> PublishReply:
        """The script's raw reply, read."""
        kind = _PUBLISH_STATUSES[int(raw[0])]
        detail = raw[1]
        if kind is PublishStatus.WRITTEN or kind is PublishStatus.DUPLICATE:
            ids = [x.decode() for x in detail]
            return PublishReply(kind, ids, "", _marks(raw, 2))
        return PublishReply(kind, [], as_text(detail))


_PUBLISH_STATUSES: Final = tuple(PublishStatus)


def _marks(raw: list[Any], index: int) -> tuple[str, ...]:
    """The deprecated marks a script reply carries at INDEX (none when absent)."""
    if len(raw) <= index or not raw[index]:
        return ()
    return tuple(as_text(x) for x in raw[index])


class VersionsScript(Script):
    """``versions.lua``: raise a stream's operation-version marks."""

    __slots__ = ()

    async def mark(
        self, client: aioredis.Redis, key: str, marks: Sequence[tuple[str, str]]
    ) -> int:
        """Record MARKS (field, status); the number raised."""
        argv = [item for pair in marks for item in pair]
        return int(await self.run(client, (key,), argv))


class AppendStatus(enum.IntEnum):
    """What append.lua did with an attempt of a batch."""

    WRITTEN = 0
    DUPLICATE = 1
    REFUSED = 2
    STALE = 3
    CONFLICT = 4
    """The aggregate's version was not the one expected: ``version`` is its
    actual version, nothing was written."""
    RETIRED = 5
    """An operation version of the batch is retired: ``detail`` names it."""


class AppendReply(NamedTuple):
    status: AppendStatus
    ids: list[str]
    version: int
    """The aggregate's version after the write (WRITTEN, DUPLICATE), or its
    actual version (CONFLICT)."""
    detail: str
    deprecated: tuple[str, ...] = ()


class AppendScript(Script):
    """``append.lua``: the events of one aggregate, checked against the expected
    version, written and indexed in one step. Its arguments are publish.lua's
    (see :class:`~backbone.writer.Writer`) behind the expected version and the
    aggregate id."""

    __slots__ = ()

    async def append(
        self,
        client: aioredis.Redis,
        *,
        stream: str,
        index: str,
        record: str,
        marks: str,
        expected: str,
        aggregate_id: str,
        argv: Sequence[bytes | str | int],
    ) -> AppendReply:
        raw = await self.run(
            client, (stream, index, record, marks), (expected, aggregate_id, *argv)
        )
        kind = AppendStatus(int(raw[0]))
        if kind in (AppendStatus.WRITTEN, AppendStatus.DUPLICATE):
            ids = [as_text(x) for x in raw[1]]
            return AppendReply(kind, ids, int(raw[2]), "", _marks(raw, 3))
        if kind is AppendStatus.CONFLICT:
            return AppendReply(kind, [], int(raw[1]), "")
        return AppendReply(kind, [], 0, as_text(raw[1]))


class SnapshotScript(Script):
    """``snapshot.lua``: store an aggregate's snapshot unless the one stored is
    of a later version."""

    __slots__ = ()

    async def store(
        self,
        client: aioredis.Redis,
        *,
        key: str,
        version: int,
        schema: int,
        data: bytes,
    ) -> bool:
        """Whether it was stored (False: a later snapshot is there)."""
        return bool(await self.run(client, (key,), (version, schema, data)))
