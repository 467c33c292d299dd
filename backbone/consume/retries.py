"""A failed handler call: dead-letter the event, or back off and count a retry.

A failure is retried after a backoff, each retry counted as a delivery in Redis
(``XCLAIM RETRYCOUNT``, so the count survives a crash), until
``max_deliveries`` deliveries have failed; then the event is dead-lettered
``handler-error``. Holding a partition's lease, a retry is counted only through
the fenced claim of lease.lua: a member that lost the partition leaves its
events pending for the new owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from ..deadletters import DeadLetterReason
from ..faults import is_transient
from ..telemetry import hooks
from . import leases
from .context import log_fields
from .leases import LeaseLost

if TYPE_CHECKING:
    from ..dispatch import Route
    from .deadletter import DeadLetterStep
    from .delivery import Delivery
    from .state import SubscriptionState

__all__ = ["Retries"]

log = logging.getLogger("backbone.consumer")


class Retries:
    """What follows a failed call, for the workers of one subscription."""

    def __init__(self, state: SubscriptionState, dead_letter: DeadLetterStep) -> None:
        self.state = state
        self.dead_letter = dead_letter

    def own_failure(self, exc: BaseException) -> None:
        """Re-raise EXC, which a handler's call raised, when it is a stop's
        cancel (the event stays pending); forget a cancel the handler made of
        its own task."""
        if isinstance(exc, asyncio.CancelledError) and _being_cancelled():
            if self.state.stopping.is_set():
                raise exc
            _uncancel()

    async def failed(
        self, route: Route, d: Delivery, operation: str, exc: BaseException
    ) -> bool:
        """After the handler failed on D with EXC: dead-letter it when it has
        had its deliveries, else wait out the backoff and count the retry. True
        when the handler is to be called again."""
        state = self.state
        state.stats.failed += 1
        retry = state.options.retry
        if d.delivery_count >= retry.max_deliveries:
            await self.dead_letter(
                d,
                DeadLetterReason.HANDLER_ERROR,
                exc,
                handler=route.handler_name,
            )
            return False
        delay = retry.backoff(d.delivery_count)
        log.warning(
            "%s: %s failed on %s (%s, delivery %d of %d: %s: %s); retry in %.2fs",
            state,
            route.handler_name,
            d.entry_id,
            operation,
            d.delivery_count,
            retry.max_deliveries,
            type(exc).__name__,
            exc,
            delay,
            exc_info=exc,
            extra=log_fields(state, d, operation, route.handler_name),
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.stopping.wait(), delay)
        if state.stopping.is_set():
            return False  # stays pending
        if not await self.redeliver(d):
            return False
        state.stats.retried += 1
        observer = hooks.active
        if observer is not None:
            observer.retried(state.stream, state.group, operation)
        return True

    async def redeliver(self, d: Delivery) -> bool:
        """Count a retry as a delivery in Redis (XCLAIM RETRYCOUNT), so the count
        survives a crash. False when the entry is gone from the pending list."""
        state = self.state
        if state.noack:
            d.delivery_count += 1
            return True
        next_count = d.delivery_count + 1
        while not state.stopping.is_set():
            try:
                if state.lease is None:
                    claimed = await state.redis.xclaim(
                        state.stream,
                        state.group,
                        state.consumer,
                        0,
                        [d.entry_id],
                        retrycount=next_count,
                        justid=True,
                    )
                else:
                    claimed = await leases.retry(state, d.entry_id, next_count)
            except LeaseLost as exc:
                log.warning("%s: not retrying %s: %s", state, d.entry_id, exc)
                if state.lease is not None:
                    state.lease.lose()
                return False
            except Exception as exc:
                if not is_transient(exc):
                    raise
                await state.outage.wait(exc)
                continue
            if not claimed:
                log.info(
                    "%s: %s is no longer pending (acked elsewhere or trimmed); "
                    "not retrying it",
                    state,
                    d.entry_id,
                    extra=log_fields(state, d),
                )
                return False
            d.delivery_count = next_count
            d.touched = time.monotonic()
            return True
        return False


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _uncancel() -> None:
    """Forget a cancel the handler made of its own task (not a stop's)."""
    task = asyncio.current_task()
    if task is not None:
        while task.cancelling():
            task.uncancel()
