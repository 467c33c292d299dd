"""The consumer group: created where the subscription asks, recreated when it
vanishes at a position that cannot skip events."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, cast

import redis.exceptions as rex

from ..events import as_text
from .delivery import before, id_key

if TYPE_CHECKING:
    from .state import SubscriptionState

__all__ = ["Group"]

log = logging.getLogger("backbone.consumer")


class Group:
    """The group of one subscription, and the last entry it saw.

    The last entry (its id *and* its fields) is what tells, when the group has
    vanished, whether the stream is still the one the subscription was reading:
    see ``lua/group.lua``.
    """

    def __init__(self, state: SubscriptionState, start_id: str) -> None:
        self.state = state
        self.start_id = start_id
        self.ready = False
        self.last_id = "0-0"
        self.last_fields: list[Any] | None = None

    def saw(self, entry_id: str, fields: list[Any] | dict[bytes, bytes] | None) -> None:
        """Remember ENTRY_ID (with FIELDS) when it is the newest entry seen."""
        if self.last_id != "0-0" and id_key(entry_id) <= id_key(self.last_id):
            return
        self.last_id = entry_id
        if isinstance(fields, dict):
            self.last_fields = [x for pair in fields.items() for x in pair]
        else:
            self.last_fields = fields

    async def ensure(self) -> None:
        """Create the group at the requested start unless it exists; learn where
        an existing group is."""
        state = self.state
        try:
            await state.redis.xgroup_create(
                state.stream, state.group, id=self.start_id, mkstream=True
            )
            log.info("%s: created group at %s", state, self.start_id)
        except rex.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        if self.last_id == "0-0":
            for info in await state.redis.xinfo_groups(state.stream):
                if as_text(info.get("name")) == state.group:
                    last = as_text(info.get("last-delivered-id")) or "0-0"
                    found = await state.redis.xrange(state.stream, last, last)
                    self.saw(last, cast(Any, found[0][1]) if found else None)
                    break
        self.ready = True

    async def recreate(self) -> None:
        """The group vanished: create it again right after the last entry seen if
        that entry is still in the stream unchanged, else at the beginning of the
        stream (it is not the stream that was read: a restart without persistence,
        a failover to a replica that lagged). A group this subscription never saw
        starts where it was asked to."""
        state = self.state
        if not self.ready:
            await self.ensure()
            return
        # Events this consumer holds (read, not yet acked) were in the vanished
        # group's pending list: go on before the oldest, so the new group has
        # them pending again (a crash before their acks must not lose them).
        window = state.window
        start_after = self.last_id
        held = [*window.held, *window.acking]
        if held:
            oldest = min(held, key=id_key)
            if id_key(oldest) <= id_key(start_after):
                start_after = before(oldest)
        created, position = await state.backbone.scripts.group.recreate(
            state.redis,
            stream=state.stream,
            group=state.group,
            last_id=self.last_id,
            last_fields=self.last_fields,
            start_after=start_after,
        )
        if not created:
            return  # another member recreated it first
        state.stats.groups_recreated += 1
        if position == start_after:
            log.warning(
                "%s: the consumer group was gone (NOGROUP); created it again after "
                "%s (the last entry this consumer saw is %s; events it still held "
                "are delivered again)",
                state,
                position,
                self.last_id,
            )
        else:
            log.warning(
                "%s: the consumer group was gone (NOGROUP) and the stream no longer "
                "holds the last entry this consumer saw (%s): it is not the stream "
                "that was read (Redis came back empty, or a replica that lagged took "
                "over); created the group at its beginning, so no event is skipped "
                "(events handled before the loss may come again)",
                state,
                self.last_id,
            )
            self.last_id, self.last_fields = "0-0", None
