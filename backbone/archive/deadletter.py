"""Dead-lettering what the archive cannot store, the way every consumer does.

An entry that is malformed, whose payload is missing, unreadable or not valid
msgpack, or whose row PostgreSQL refuses, goes to the stream's dead letters
through ``lua/dead_letter.lua`` with a :class:`~backbone.DeadLetter` record
naming the archive's group: the script copies the payload beside it and acks
the entry in the same atomic step, only while it is still pending. So
``backbone dlq list|show|retry`` show and re-drive the archive's dead letters
like any group's; a re-driven entry comes back to the archive's group only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..deadletters import DeadLetter, DeadLetterReason
from ..events import EventId
from ..faults import is_transient
from .state import Outage

if TYPE_CHECKING:
    from ..connection import Backbone
    from ..keys import StreamKeys

__all__ = ["HANDLER", "dead_letter"]

log = logging.getLogger("backbone.archive")

HANDLER = "backbone.archive"
"""What a dead letter of the archive names as its handler."""
_ATTEMPTS = 20


async def dead_letter(
    backbone: Backbone,
    keys: StreamKeys,
    *,
    group: str,
    consumer: str,
    entry_id: str,
    fields: Mapping[bytes, bytes],
    reason: DeadLetterReason,
    message: str,
    outage: Outage,
) -> bool:
    """Dead-letter one entry; True when it is out of the group's pending list
    (dead-lettered now, or acked elsewhere meanwhile). False when Redis refused
    or stayed away: the entry stays pending and comes back later."""
    letter = DeadLetter.of(
        EventId(keys.stream, entry_id),
        group=group,
        consumer=consumer,
        handler=HANDLER,
        reason=reason,
        error=message,
        deliveries=1,
        metadata=fields,
    )
    values = letter.to_fields(fields)
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            written = await backbone.scripts.dead_letter.move(
                backbone.redis,
                stream=keys.stream,
                dead_letters=keys.dead_letters,
                payload=keys.payload(entry_id),
                payload_copy=keys.dead_letter_payload(group, entry_id),
                group=group,
                entry_id=entry_id,
                only_if_pending=True,
                fields=values,
            )
        except Exception as exc:
            if not is_transient(exc) or attempt == _ATTEMPTS:
                log.error(
                    "%s: could not dead-letter %s (%s); it stays pending",
                    keys.stream,
                    entry_id,
                    exc,
                )
                return False
            await outage.wait(exc)
            continue
        outage.over()
        if written is not None:
            log.warning(
                "%s: dead-lettered %s (%s): %s",
                keys.stream,
                entry_id,
                reason,
                message[:300],
            )
        return True
    return False  # pragma: no cover - the loop returns
