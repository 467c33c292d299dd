"""Idempotency marks (opt-in): a group's record of the events it handled.

A mark is written right *after* the handler returns and before the ack, and
read.lua (or the payload fetch of a claim) reports whether an entry is marked, so
a redelivered event that was handled is acked without calling the handler again.
Written before the handler, a mark would make an interrupted handler's event be
skipped on redelivery: lost. Holding a partition's lease (an ordered
subscription), the mark is written only while the lease holds (lease.lua).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Final

from ..faults import is_transient
from . import leases
from .delivery import logical_id
from .leases import LeaseLost

if TYPE_CHECKING:
    from .delivery import Delivery
    from .state import SubscriptionState

__all__ = ["Marks"]

log = logging.getLogger("backbone.consumer")

PRUNE_EVERY: Final = 60.0


class Marks:
    def __init__(self, state: SubscriptionState) -> None:
        self.state = state
        self.key = state.keys.done(state.group)
        self._last_prune = 0.0

    async def mark_done(self, d: Delivery) -> None:
        """Record D as handled (retried through outages until a stop)."""
        state = self.state
        mark = logical_id(d)
        while True:
            try:
                if state.lease is None:
                    await state.redis.zadd(self.key, {mark: time.time()})
                else:
                    await leases.mark(state, self.key, mark, time.time())
                return
            except LeaseLost as exc:
                log.warning("%s: %s not marked as handled: %s", state, mark, exc)
                if state.lease is not None:
                    state.lease.lose()
                return
            except Exception as exc:
                if not is_transient(exc) or state.stopping.is_set():
                    log.warning(
                        "%s: could not mark %s as handled: %s", state, mark, exc
                    )
                    return
                await state.outage.wait(exc)

    async def prune(self) -> None:
        """Drop marks older than ``idempotency_ttl`` (at most once a minute)."""
        now = time.monotonic()
        if now - self._last_prune < PRUNE_EVERY:
            return
        self._last_prune = now
        await self.state.redis.zremrangebyscore(
            self.key, "-inf", time.time() - self.state.options.idempotency_ttl
        )
