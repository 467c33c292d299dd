"""The Lua scripts backbone runs, each behind one typed wrapper that owns its
arguments and its reply (the scripts' own headers document the wire format):

* ``publish.lua`` appends a batch, entries and payload hashes:
  :class:`PublishScript`;
* ``append.lua`` appends events of one aggregate if its version is the one
  expected, and indexes them: :class:`AppendScript`;
* ``snapshot.lua`` stores an aggregate's snapshot unless a newer one is there:
  :class:`SnapshotScript`;
* ``read.lua`` acks and reads new entries with their payloads: its reply becomes
  the consumer's deliveries, so its wrapper lives with the reader
  (``backbone.consume.reader.ReadScript``);
* ``dead_letter.lua`` moves one event to the dead-letter stream:
  :class:`DeadLetterScript`;
* ``redrive.lua`` appends a dead letter's event again: :class:`RedriveScript`;
* ``group.lua`` recreates a vanished consumer group: :class:`GroupScript`;
* ``forget_consumer.lua`` removes a stopped consumer that holds nothing:
  :class:`ForgetConsumerScript`;
* ``trim.lua`` removes a stream's oldest entries with their payload keys, up
  to what groups, projections and aggregates still need: :class:`TrimScript`;
* ``lease.lua`` (a partition's lease and the operations it fences) and
  ``members.lua`` (the live members of an ordered subscription): their
  wrappers live with the ordered consumer (``backbone.consume.leases`` and
  ``backbone.consume.membership``).
"""

from __future__ import annotations

import enum
import hashlib
import importlib.resources
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import redis.exceptions as rex
from redis.asyncio.cluster import RedisCluster

from .events import as_text
from .slot_node import relearn_slots

if TYPE_CHECKING:
    import redis.asyncio as aioredis

__all__ = [
    "AppendReply",
    "AppendScript",
    "AppendStatus",
    "DeadLetterScript",
    "ForgetConsumerScript",
    "GroupScript",
    "PublishReply",
    "PublishScript",
    "PublishStatus",
    "RedriveScript",
    "Script",
    "Scripts",
    "SnapshotScript",
    "TrimHold",
    "TrimReply",
    "TrimScript",
    "VersionsScript",
]


class Script:
    """A Lua script run by EVALSHA, loaded again after NOSCRIPT (a server restart)."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = (
            importlib.resources.files("backbone")
            .joinpath(f"lua/{name}.lua")
            .read_text()
        )
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    async def run(
        self, client: aioredis.Redis, keys: Sequence[str | bytes], args: Sequence[Any]
    ) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except rex.NoScriptError:
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)

    async def run_and_wait(
        self,
        client: aioredis.Redis,
        keys: Sequence[str | bytes],
        args: Sequence[Any],
        replicas: int,
        timeout_ms: int,
    ) -> tuple[Any, int]:
        """Run the script, then ``WAIT`` on the same connection for REPLICAS to
        confirm its writes; returns (script result, replicas that confirmed)."""
        if isinstance(client, RedisCluster):
            return await self._run_and_wait_on_node(
                client, keys, args, replicas, timeout_ms
            )
        for attempt in (1, 2):
            async with client.pipeline(transaction=False) as pipe:
                pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
                pipe.execute_command("WAIT", replicas, timeout_ms)
                result, confirmed = await pipe.execute(raise_on_error=False)
            if isinstance(result, rex.NoScriptError) and attempt == 1:
                await client.script_load(self.source)
                continue
            if isinstance(result, Exception):
                raise result
            return result, int(confirmed)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _run_and_wait_on_node(
        self,
        client: RedisCluster,
        keys: Sequence[str | bytes],
        args: Sequence[Any],
        replicas: int,
        timeout_ms: int,
    ) -> tuple[Any, int]:
        """:meth:`run_and_wait` on a Redis Cluster. ``WAIT`` has no key, so the
        cluster client would send it to any node, whose replicas know nothing of
        the script's writes: both commands go to the master of the keys' slot,
        on one connection. A redirection is not followed (the script would run
        on another node than the ``WAIT``): MOVED means the script did not run,
        so the client's map of the slots is corrected and both are sent again;
        ASK (a slot being moved) is transient."""
        for _ in range(3):
            await client.initialize()  # (once, or after a failure of the client's)
            node = client.get_node_from_key(as_text(keys[0]))
            if node is None:
                raise rex.SlotNotCoveredError(
                    f"no master holds the slot of {as_text(keys[0])} now"
                )
            try:
                async with client.pipeline(transaction=False) as pipe:
                    pipe.execute_command(
                        "EVALSHA", self.sha, len(keys), *keys, *args, target_nodes=node
                    )
                    pipe.execute_command(
                        "WAIT", replicas, timeout_ms, target_nodes=node
                    )
                    result, confirmed = await pipe.execute(
                        raise_on_error=False, allow_redirections=False
                    )
            except (rex.ConnectionError, rex.TimeoutError):
                # A pipeline does not make the client learn the slots again, as
                # a failed command does: the next attempt must not go to a
                # node that is gone (a failover) again.
                await relearn_slots(client, node.name)
                raise
            if isinstance(result, rex.NoScriptError):
                await client.script_load(self.source)
                continue
            if isinstance(result, rex.MovedError):
                await client.nodes_manager.move_slot(result)
                continue
            if isinstance(result, rex.AskError):
                raise rex.TryAgainError(
                    f"the slot of {as_text(keys[0])} is being moved to another "
                    f"node ({result}); try again"
                )
            if isinstance(result, Exception):
                raise result
            return result, int(confirmed)
        raise rex.TryAgainError(
            f"the node of {as_text(keys[0])}'s slot kept changing; try again"
        )


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
    ) -> tuple[PublishReply, int]:
        """Run one attempt; with REPLICAS, also ``WAIT`` for them. Returns the
        reply and the number of replicas that confirmed (0 without REPLICAS)."""
        if replicas:
            raw, confirmed = await self.run_and_wait(
                client, keys, argv, replicas, timeout_ms
            )
        else:
            raw, confirmed = await self.run(client, keys, argv), 0
        return self.reply(raw), confirmed

    @staticmethod
    def reply(raw: list[Any]) -> PublishReply:
        """The script's raw reply, read."""
        kind = PublishStatus(int(raw[0]))
        detail = raw[1]
        if kind in (PublishStatus.WRITTEN, PublishStatus.DUPLICATE):
            ids = [x.decode() for x in detail]
            return PublishReply(kind, ids, "", _marks(raw, 2))
        return PublishReply(kind, [], as_text(detail))


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


class DeadLetterScript(Script):
    """``dead_letter.lua``: append a dead letter, copy the payload key beside it,
    ack the event, in one step."""

    __slots__ = ()

    async def move(
        self,
        client: aioredis.Redis,
        *,
        stream: str,
        dead_letters: str,
        payload: str,
        payload_copy: str,
        group: str,
        entry_id: str,
        only_if_pending: bool,
        fields: Sequence[bytes | str],
        fence: tuple[str, str] | None = None,
    ) -> str | None:
        """The dead letter's id, or None when the event was no longer pending
        (acked by another member meanwhile): then nothing was written. FENCE,
        (lease key, fence), writes only while that lease holds that fence (an
        error starting "FENCED" otherwise)."""
        keys: tuple[str, ...] = (stream, dead_letters, payload, payload_copy)
        mode = "1" if only_if_pending else "0"
        if fence is not None:
            keys = (*keys, fence[0])
            mode = f"{mode} {fence[1]}"
        written = await self.run(client, keys, (group, entry_id, mode, *fields))
        return None if written is None else as_text(written)


class RedriveScript(Script):
    """``redrive.lua``: append a dead letter's event again, for its group only,
    with its payload; remove the dead letter."""

    __slots__ = ()

    async def redrive(
        self,
        client: aioredis.Redis,
        *,
        stream: str,
        dead_letters: str,
        payload_copy: str,
        dead_letter_id: str,
        payload_prefix: str,
    ) -> str | None:
        """The new entry's id, or None when the dead letter does not exist."""
        result = await self.run(
            client,
            (stream, dead_letters, payload_copy),
            (dead_letter_id, payload_prefix),
        )
        return as_text(result) if result else None


class GroupScript(Script):
    """``group.lua``: recreate a vanished group where it cannot skip events."""

    __slots__ = ()

    async def recreate(
        self,
        client: aioredis.Redis,
        *,
        stream: str,
        group: str,
        last_id: str,
        last_fields: Sequence[bytes | str] | None,
        start_after: str | None = None,
    ) -> tuple[bool, str]:
        """(whether this call created the group, the id it starts after). When
        the stream still holds LAST_ID with LAST_FIELDS, the group goes on after
        START_AFTER (default LAST_ID); else, or with LAST_FIELDS None (unknown),
        it starts at the beginning."""
        created, position = await self.run(
            client,
            (stream,),
            (
                group,
                last_id,
                start_after or last_id,
                "0" if last_fields is None else "1",
                *(last_fields or ()),
            ),
        )
        return bool(created), as_text(position)


class ForgetConsumerScript(Script):
    """``forget_consumer.lua``: remove a consumer that holds no pending entry."""

    __slots__ = ()

    async def forget(
        self, client: aioredis.Redis, *, stream: str, group: str, consumer: str
    ) -> bool:
        """True when CONSUMER was removed from GROUP (it held nothing)."""
        return bool(await self.run(client, (stream,), (group, consumer)))


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


class Scripts:
    """The scripts backbone runs, compiled once per connection."""

    __slots__ = (
        "append",
        "dead_letter",
        "forget_consumer",
        "group",
        "lease",
        "members",
        "partitions",
        "publish",
        "read",
        "redrive",
        "snapshot",
        "trim",
        "versions",
    )

    def __init__(self) -> None:
        self.publish = PublishScript("publish")
        self.append = AppendScript("append")
        self.snapshot = SnapshotScript("snapshot")
        self.read = Script("read")
        self.dead_letter = DeadLetterScript("dead_letter")
        self.redrive = RedriveScript("redrive")
        self.group = GroupScript("group")
        self.forget_consumer = ForgetConsumerScript("forget_consumer")
        self.trim = TrimScript("trim")
        self.versions = VersionsScript("versions")
        self.lease = Script("lease")
        self.members = Script("members")
        self.partitions = Script("partitions")
