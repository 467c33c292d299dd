"""Admission of entries a subscription took over from the pending list.

Claimed entries (another member's, idle too long) and recovered ones (this
consumer's own, left by an earlier run or a lost reply) arrive from ``XCLAIM`` /
``XAUTOCLAIM`` with their fields but without their payloads. The fetcher gets
each payload's values the way read.lua does (``HMGET`` in parameter order) and
its idempotency mark, in one pipeline, and hands the deliveries to the window.

An error about one entry's key (``WRONGTYPE``: the payload key is not a hash)
is that entry's fault, kept on the delivery so the worker dead-letters it; it
never fails the whole admission.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from ..events import F_OPERATION, F_REDRIVE_GROUP, F_VERSION, as_text, entry_version
from ..faults import is_transient
from ..keyring import Keyring
from .delivery import Delivery, logical_id, open_sealed

if TYPE_CHECKING:
    from .group import Group
    from .state import SubscriptionState

__all__ = ["Fetcher"]

Entry = tuple[bytes, dict[bytes, bytes] | None]


class Fetcher:
    def __init__(self, state: SubscriptionState, group: Group) -> None:
        self.state = state
        self.group = group
        self._group_bytes = state.group.encode()
        dispatcher = state.dispatcher
        self._fields = {
            name.encode(): (codec.version, codec.field_names)
            for name, codec in dispatcher.contract.codecs.items()
            if dispatcher.implements(name)
        }
        self._codecs = {
            name.encode(): codec
            for name, codec in dispatcher.contract.codecs.items()
            if dispatcher.implements(name)
        }
        self._keyring = Keyring.of(state.backbone)

    def mine(self, d: Delivery) -> bool:
        """False for a re-driven entry meant for another group."""
        only = d.only
        return not only or only == self._group_bytes

    async def delivery_counts(self, entries: Sequence[Entry]) -> dict[str, int]:
        """Each entry's delivery count (one XPENDING per id: a range query would
        also count this consumer's other pending entries against its COUNT)."""
        if not entries:
            return {}
        state = self.state
        async with state.redis.pipeline(transaction=False) as pipe:
            for entry_id, _ in entries:
                pipe.xpending_range(
                    state.stream,
                    state.group,
                    min=entry_id,
                    max=entry_id,
                    count=1,
                    consumername=state.consumer,
                )
            replies: list[Any] = await pipe.execute()
        return {
            as_text(cast(bytes, row["message_id"])): int(row["times_delivered"])
            for rows in replies
            for row in rows
        }

    async def admit(self, entries: Sequence[Entry], counts: dict[str, int]) -> None:
        """Fetch the payloads of claimed or recovered ENTRIES and hold them."""
        state = self.state
        window = state.window
        now = time.monotonic()
        deliveries: list[Delivery] = []
        for raw_id, fields in entries:
            entry_id = as_text(raw_id)
            self.group.saw(entry_id, fields)
            if window.busy(entry_id):
                continue
            d = Delivery(entry_id, None, counts.get(entry_id, 1), now)
            d.parsed = fields or {}
            d.op = d.parsed.get(F_OPERATION)
            d.only = d.parsed.get(F_REDRIVE_GROUP)
            d.version = entry_version(d.parsed.get(F_VERSION))
            deliveries.append(d)
        if not deliveries:
            return
        # Payloads only for operations this consumer handles (others are skipped
        # or dead-lettered, and the dead-letter script copies the key itself).
        # None instead of names: another version, read whole (as read.lua does).
        wanted: list[tuple[Delivery, tuple[bytes, ...] | None]] = []
        for d in deliveries:
            known = self._fields.get(d.op) if d.op is not None else None
            if known is not None and self.mine(d):
                version, names = known
                other = d.version is not None and d.version != version
                wanted.append((d, None if other else names))
        if wanted and not await self._fetch(wanted):
            return  # stopping: the entries stay pending with this consumer
        # The claimer and a recovery may have fetched the same entry meanwhile.
        window.hold([d for d in deliveries if not window.busy(d.entry_id)])

    async def _fetch(
        self, wanted: list[tuple[Delivery, tuple[bytes, ...] | None]]
    ) -> bool:
        """Set each delivery's payload values (or its fault) and idempotency mark,
        in one pipeline, then open their personal values (one read of the
        keyring), retried through outages: the entries are already this
        consumer's. False when the subscription stopped first."""
        state = self.state
        idempotent = state.options.idempotent
        while True:
            try:
                async with state.redis.pipeline(transaction=False) as pipe:
                    for d, names in wanted:
                        if names is None:
                            pipe.hgetall(state.keys.payload(d.entry_id))
                        elif names:
                            pipe.hmget(state.keys.payload(d.entry_id), list(names))
                    if idempotent:
                        pipe.zmscore(
                            state.keys.done(state.group),
                            [logical_id(d) for d, _ in wanted],
                        )
                    results: list[Any] = await pipe.execute(raise_on_error=False)
                for reply in results:
                    if isinstance(reply, Exception) and is_transient(reply):
                        raise reply  # the server, not the entry (LOADING, say)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                if state.stopping.is_set():
                    return False
                await state.outage.wait(exc)
                continue
            replies = iter(results)
            for d, names in wanted:
                reply = next(replies) if names is None or names else []
                if isinstance(reply, Exception):
                    d.fault = str(reply)
                elif isinstance(reply, dict):
                    d.values = [item for pair in reply.items() for item in pair]
                else:
                    d.values = reply
            if idempotent:
                scores = next(replies)
                if not isinstance(scores, Exception):
                    for (d, _), score in zip(wanted, scores, strict=True):
                        d.done_mark = score is not None
            try:
                await open_sealed(self._keyring, [d for d, _ in wanted], self._codecs)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                if state.stopping.is_set():
                    return False
                await state.outage.wait(exc)
                continue  # fetch again: the values were opened in place
            return True
