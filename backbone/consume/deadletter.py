"""The dead-letter step: move one event out of the group's way, with its reason.

``lua/dead_letter.lua`` appends the dead letter (the schema is
:class:`backbone.DeadLetter`), copies the payload key beside it and acks the event,
in one atomic step, and only while the event is still pending in the group: an
event another member acknowledged meanwhile is not dead-lettered. Holding a
partition's lease (an ordered subscription), the same step checks the lease:
a member that lost it dead-letters nothing, and the event stays pending for
the partition's new owner.

Each dead letter is one log line: at ERROR with the handler's traceback when the
handler failed on its last delivery, at WARNING for bad input (the reason says
what was wrong with it).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..deadletters import DeadLetter, DeadLetterReason
from ..events import EventId
from ..faults import is_transient
from ..telemetry import hooks
from .context import log_fields
from .leases import is_fenced

if TYPE_CHECKING:
    from .delivery import Delivery
    from .state import SubscriptionState

__all__ = ["DeadLetterStep"]

log = logging.getLogger("backbone.consumer")

_ATTEMPTS = 20


class DeadLetterStep:
    """Dead-letters deliveries of one subscription."""

    def __init__(self, state: SubscriptionState) -> None:
        self.state = state

    async def __call__(
        self,
        d: Delivery,
        reason: DeadLetterReason | str,
        error: BaseException | str,
        *,
        handler: str | None = None,
    ) -> None:
        """Dead-letter D. When Redis refuses (the dead-letter stream is not a
        stream, say) or stays away, D stays pending: it comes back later."""
        state = self.state
        letter = DeadLetter.of(
            EventId(state.stream, d.entry_id),
            group=state.group,
            consumer=state.consumer,
            handler=handler or "",
            reason=reason,
            error=error,
            deliveries=d.delivery_count,
            metadata=d.fields,
        )
        fields = letter.to_fields(d.fields)
        lease = state.lease
        fence = None if lease is None else (lease.key, lease.fence)
        attempt = 0
        while True:
            attempt += 1
            try:
                written = await state.backbone.scripts.dead_letter.move(
                    state.redis,
                    stream=state.stream,
                    dead_letters=state.keys.dead_letters,
                    payload=state.keys.payload(d.entry_id),
                    payload_copy=state.keys.dead_letter_payload(
                        state.group, d.entry_id
                    ),
                    group=state.group,
                    entry_id=d.entry_id,
                    only_if_pending=not state.noack,
                    fields=fields,
                    fence=fence,
                )
                break
            except Exception as exc:
                if lease is not None and is_fenced(exc):
                    log.warning(
                        "%s: %s not dead-lettered: %s; it stays pending for the "
                        "partition's new owner",
                        state,
                        d.entry_id,
                        exc,
                        extra=log_fields(state, d, handler=handler),
                    )
                    lease.lose()
                    return
                if (
                    not is_transient(exc)
                    or state.stopping.is_set()
                    or attempt >= _ATTEMPTS
                ):
                    log.error(
                        "%s: could not dead-letter %s (%s); it stays pending",
                        state,
                        d.entry_id,
                        exc,
                        exc_info=exc,
                        extra=log_fields(state, d, handler=handler),
                    )
                    return
                await state.outage.wait(exc)
        d.acked = True
        extra = log_fields(state, d, handler=handler)
        if written is None:
            log.info(
                "%s: %s was acked elsewhere; not dead-lettered",
                state,
                d.entry_id,
                extra=extra,
            )
            return
        state.stats.dead_lettered += 1
        observer = hooks.active
        if observer is not None:
            observer.dead_lettered(
                state.stream, state.group, extra["operation"] or "", letter.reason
            )
        extra["reason"] = letter.reason
        log.log(
            logging.ERROR if isinstance(error, BaseException) else logging.WARNING,
            "%s: dead-lettered %s (%s, %s) after %d deliveries: %s: %s",
            state,
            d.entry_id,
            extra["operation"],
            letter.reason,
            d.delivery_count,
            letter.error_type,
            letter.error_message[:300],
            exc_info=error if isinstance(error, BaseException) else None,
            extra=extra,
        )
