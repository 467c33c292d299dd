"""Projections: read models folded from a contract's stream, with a checkpoint.

A projection reads the stream in pages (``XRANGE`` after its cursor), from its
checkpoint or from the beginning, and when it has caught up it waits (``XREAD
BLOCK`` from the same cursor, no consumer group) for the next entry and reads on:
one cursor throughout, so the switch to live has no gap and no duplicate.

Each page is one transaction: ``WATCH`` the checkpoint, call the handler for
each event (it queues its Redis writes on ``context.writes``), then ``MULTI``,
those writes, the new checkpoint, ``EXEC``. A projection killed at any point
has either applied a whole page with its checkpoint or nothing of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import redis.exceptions as rex

from ..consume.reader import discard_outcome
from ..dispatch import Dispatcher
from ..errors import ConfigurationError, DecodeError
from ..events import (
    F_CONTRACT,
    F_OPERATION,
    F_REDRIVE_GROUP,
    F_REDRIVE_ORIGIN,
    F_VERSION,
    EventId,
    as_text,
    entry_version,
)
from ..keyring import Keyring, open_payloads
from ..sealing import SealError
from ..slot_node import transaction
from .checkpoint import (
    BROKEN,
    LAG_CAP,
    ProjectionError,
    ProjectionStatus,
    next_id,
    projection_status,
)
from .projection_context import ProjectionContext, ProjectionStats

if TYPE_CHECKING:
    from redis.asyncio.client import Pipeline

    from ..connection import Backbone

__all__ = [
    "Projection",
    "ProjectionContext",
    "ProjectionError",
    "ProjectionStats",
    "ProjectionStatus",
    "projection_status",
]

log = logging.getLogger("backbone.projection")

Entry = tuple[str, dict[bytes, bytes]]


class Projection:
    """HANDLER's methods applied to the events of stream URI, with checkpoint NAME.

    DISPATCHER is the contract's generated dispatcher class (it decodes each
    payload into the handler's typed arguments); the handler may implement only
    some operations (``partial=True``). A method declaring ``context`` gets a
    :class:`ProjectionContext`; an optional ``async def reset(self, writes)``
    queues the deletion of the read model for :meth:`rebuild`.
    """

    def __init__(
        self,
        backbone: Backbone,
        uri: str,
        name: str,
        handler: object,
        dispatcher: type[Dispatcher[Any]],
        *,
        page: int = 100,
        block: float = 1.0,
    ) -> None:
        if not 1 <= page <= 10_000:
            raise ConfigurationError(f"page must be 1 to 10000 events, not {page!r}")
        if not 0 < block <= backbone.command_timeout - 1:
            raise ConfigurationError(
                f"block ({block:g}s) must be > 0 and at least 1s shorter than the "
                f"connection's command_timeout ({backbone.command_timeout:g}s)"
            )
        self.backbone = backbone
        self.keys = backbone.keys(uri)
        self.name = name
        self.checkpoint_key = self.keys.projection(name)
        self.handler = handler
        self.dispatcher = dispatcher(handler, partial=True)
        self.page = page
        self.block = block
        self.stats = ProjectionStats()
        self._cursor: str | None = None
        self._stopping = asyncio.Event()
        reset = getattr(handler, "reset", None)
        if reset is not None and not inspect.iscoroutinefunction(reset):
            raise ConfigurationError(
                f"{type(handler).__qualname__}.reset must be `async def reset(self, "
                "writes) -> None` (it queues the read model's deletion on writes)"
            )
        self._reset = reset
        self._keyring = Keyring.of(backbone)

    @property
    def stream(self) -> str:
        return self.keys.stream

    def key(self, part: str) -> str:
        """A key of this projection's read model, in the stream's hash tag."""
        return self.keys.projection(self.name, part)

    def __repr__(self) -> str:
        return f"<Projection {self.name} of {self.stream}>"

    # --- observing --------------------------------------------------------------

    async def checkpoint(self) -> str | None:
        """The last entry id applied, as stored (None: none yet)."""
        raw = await self.backbone.redis.hget(self.checkpoint_key, "id")
        return None if raw is None else as_text(raw)

    async def status(self, *, cap: int = LAG_CAP) -> ProjectionStatus:
        return await projection_status(self.backbone, self.keys.uri, self.name, cap=cap)

    async def lag(self, *, cap: int = LAG_CAP) -> int:
        """Entries of the stream after the checkpoint (counted up to CAP)."""
        return (await self.status(cap=cap)).lag

    # --- running ----------------------------------------------------------------

    async def catch_up(self) -> int:
        """Apply every event after the checkpoint, up to the stream's end as it is
        read; return how many were applied."""
        before = self.stats.applied
        while await self._step():
            pass
        return self.stats.applied - before

    async def run(self) -> None:
        """Catch up, then follow the stream live until :meth:`stop` (the page
        being applied is finished and its checkpoint written first)."""
        self._stopping.clear()
        await self._warn_if_ahead()
        while not self._stopping.is_set():
            wakeup = self.backbone.wakeup_event(self.stream)
            if await self._step():
                continue
            if self._stopping.is_set():
                break
            await self._wait(wakeup)

    async def _warn_if_ahead(self) -> None:
        """A checkpoint after the stream's last entry (the stream was replaced,
        or the checkpoint written by hand) would skip every event up to it."""
        status = await self.status(cap=0)
        if status.ahead:
            log.warning(
                "projection %s: its checkpoint %s is after the last entry %s of "
                "%s; events up to the checkpoint are never applied (rebuild the "
                "projection if the stream was replaced)",
                self.name,
                status.checkpoint,
                status.last_id,
                self.stream,
            )

    def stop(self) -> None:
        """Ask :meth:`run` to return after the page it is applying."""
        self._stopping.set()

    async def reset(self) -> None:
        """Clear the checkpoint and, with the handler's ``reset`` hook, the read
        model: one transaction (the hook's writes and the checkpoint's DEL).

        The checkpoint stays as a hash without ``id`` (nothing applied yet), so
        retention still sees the projection and keeps the whole stream for the
        rebuild until its pages move the checkpoint."""
        async with transaction(self.backbone.redis, self.checkpoint_key) as writes:
            if self._reset is not None:
                await self._reset(writes)
            writes.delete(self.checkpoint_key)
            writes.hset(self.checkpoint_key, mapping={"n": 0, "s": 0})
            await writes.execute()
        self._cursor = None

    async def rebuild(self) -> int:
        """Reset, then catch up from the beginning; return the events applied."""
        await self.reset()
        return await self.catch_up()

    # --- one page ---------------------------------------------------------------

    async def _step(self) -> bool:
        """Apply the next page; False when there was nothing after the cursor."""
        # The checkpoint and the read model share the stream's hash tag: one
        # slot, so one master of a Redis Cluster.
        async with transaction(self.backbone.redis, self.checkpoint_key) as writes:
            while True:
                try:
                    return await self._page(writes)
                except rex.WatchError:
                    # Another writer moved the checkpoint (a rebuild, a second
                    # instance): read it again and start from there.
                    await writes.reset()  # type: ignore[no-untyped-call]

    async def _page(self, writes: Pipeline) -> bool:
        await writes.watch(self.checkpoint_key)
        raw = await writes.hget(self.checkpoint_key, "id")
        broken = await writes.hget(self.checkpoint_key, BROKEN)
        if broken is not None:
            await writes.unwatch()  # type: ignore[no-untyped-call]
            raise ProjectionError(
                f"projection {self.name} must be rebuilt: {as_text(broken)}"
            )
        self._cursor = None if raw is None else as_text(raw)
        start = "-" if self._cursor is None else next_id(self._cursor)
        found: list[Any] = (
            await self.backbone.redis.xrange(self.stream, start, "+", count=self.page)
            or []
        )
        if not found:
            await writes.unwatch()  # type: ignore[no-untyped-call]
            return False
        entries: list[Entry] = [(as_text(i), fields) for i, fields in found]
        payloads = await self._payloads(entries)
        writes.multi()  # type: ignore[no-untyped-call]
        counts = ProjectionStats(pages=1)
        queued_by: list[str] = []  # the event each queued command is for
        for (entry_id, fields), payload in zip(entries, payloads, strict=True):
            await self._apply(writes, entry_id, fields, payload, counts)
            queued_by += [entry_id] * (len(writes) - len(queued_by))
        last = entries[-1][0]
        writes.hset(self.checkpoint_key, "id", last)
        writes.hincrby(self.checkpoint_key, "n", counts.applied)
        writes.hincrby(self.checkpoint_key, "s", counts.skipped)
        results = await writes.execute(raise_on_error=False)
        self._cursor = last
        refused = [
            (queued_by[i] if i < len(queued_by) else "the checkpoint", result)
            for i, result in enumerate(results)
            if isinstance(result, Exception)
        ]
        if refused:
            # Redis applies the rest of a transaction when one command fails at
            # run time: the page is in, without that write. Say so, and stay
            # stopped until a rebuild, rather than go on with a read model that
            # silently misses it.
            event, error = refused[0]
            message = (
                f"Redis refused a write queued for {event} ({error}); the page up "
                f"to {last} was committed without it, so the read model misses it: "
                "fix the data it writes to, then rebuild the projection"
            )
            await self.backbone.redis.hset(self.checkpoint_key, BROKEN, message)
            raise ProjectionError(f"projection {self.name}: {message}")
        for field in ("applied", "skipped", "unimplemented", "pages"):
            total = getattr(self.stats, field) + getattr(counts, field)
            setattr(self.stats, field, total)
        return True

    async def _payloads(
        self, entries: Sequence[Entry]
    ) -> list[dict[bytes, bytes] | SealError]:
        """The pages' payload hashes, their personal values opened (one read of
        the keyring), or why one cannot be."""
        async with self.backbone.redis.pipeline(transaction=False) as pipe:
            for entry_id, _ in entries:
                pipe.hgetall(self.keys.payload(entry_id))
            replies: list[dict[bytes, bytes]] = await pipe.execute()
        opened = await open_payloads(self._keyring, replies)
        return [
            outcome if isinstance(outcome, SealError) else reply
            for reply, outcome in zip(replies, opened, strict=True)
        ]

    async def _apply(
        self,
        writes: Pipeline,
        entry_id: str,
        fields: dict[bytes, bytes],
        payload: dict[bytes, bytes] | SealError,
        counts: ProjectionStats,
    ) -> None:
        if F_REDRIVE_GROUP in fields or F_REDRIVE_ORIGIN in fields:
            return  # a re-driven copy of an event this projection saw already
        operation = as_text(fields.get(F_OPERATION))
        contract = self.dispatcher.contract
        try:
            if as_text(fields.get(F_CONTRACT)) != contract.name:
                raise DecodeError(
                    "malformed-entry",
                    f"an event of contract {as_text(fields.get(F_CONTRACT))!r}, "
                    f"not {contract.name}",
                )
            codec = contract.codecs.get(operation)
            if codec is None:
                raise DecodeError(
                    "unknown-operation",
                    f"operation {operation!r} is not one of {contract.name}",
                )
            found = self.dispatcher.get(operation)
            if found is None:
                counts.unimplemented += 1
                return
            if isinstance(payload, SealError):
                raise DecodeError(
                    "undecodable", f"a personal value cannot be opened: {payload}"
                )
            args = codec.decode(
                payload, entry_version(fields.get(F_VERSION)), key="its payload hash"
            )
        except DecodeError as exc:
            counts.skipped += 1
            log.warning(
                "projection %s: skipped %s %s (%s): %s",
                self.name,
                self.stream,
                entry_id,
                exc.reason,
                exc,
                extra={"event_id": entry_id, "stream": self.stream},
            )
            return
        try:
            if found.takes_context:
                metadata = {as_text(k): as_text(v) for k, v in fields.items()}
                context = ProjectionContext(
                    EventId(self.stream, entry_id), operation, metadata, writes
                )
                await found.method(*args, context=context)
            else:
                await found.method(*args)
        except Exception as exc:
            raise ProjectionError(
                f"projection {self.name}: {found.handler_name} failed on "
                f"{self.stream} {entry_id} ({type(exc).__name__}: {exc}); nothing "
                f"of its page was written, the checkpoint stays at {self._cursor}"
            ) from exc
        counts.applied += 1

    async def _wait(self, wakeup: asyncio.Event | None) -> None:
        """Until an entry after the cursor may exist, or a stop; XREAD BLOCK from
        the cursor (or the embedded backend's wake-up)."""
        stopping = asyncio.ensure_future(self._stopping.wait())
        if wakeup is not None:
            waiting: asyncio.Future[Any] = asyncio.ensure_future(wakeup.wait())
        else:
            waiting = asyncio.ensure_future(
                self.backbone.redis.xread(
                    {self.stream: self._cursor or "0-0"},
                    count=1,
                    block=max(1, int(self.block * 1000)),
                )
            )
        try:
            await asyncio.wait(
                {stopping, waiting},
                timeout=self.block,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for task in (stopping, waiting):
                if not task.done():
                    task.cancel()
                    task.add_done_callback(discard_outcome)
                elif not task.cancelled():
                    with contextlib.suppress(rex.RedisError, OSError):
                        task.result()
