"""The scripts of a consumer group's side of a stream, each behind a typed
wrapper owning its arguments and its reply (the scripts' headers document the
wire format): ``dead_letter.lua`` (:class:`DeadLetterScript`), ``redrive.lua``
(:class:`RedriveScript`), ``group.lua`` (:class:`GroupScript`, a vanished
group recreated) and ``forget_consumer.lua`` (:class:`ForgetConsumerScript`).
``read.lua``'s wrapper lives with the reader, whose deliveries its reply
becomes (``backbone.consume.reader``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .events import as_text
from .script import Script

if TYPE_CHECKING:
    import redis.asyncio as aioredis

__all__ = [
    "DeadLetterScript",
    "ForgetConsumerScript",
    "GroupScript",
    "RedriveScript",
]


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
