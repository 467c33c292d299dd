"""The acknowledger: writes the acks the reader did not carry.

Under load, finished events' acks ride on the reader's next read.lua call. When
the reader is idle (blocked, waiting for entries), the acker writes them itself
after a short delay, batched, retried through outages: it must not die, or an
idle reader's acks would never be written.

Holding a partition's lease (an ordered subscription), it acks through the
fenced ``ack`` of lease.lua: when the lease is no longer this holding's, nothing
is acked, the acks are dropped (their events stay pending for the new owner)
and the lease is lost, which stops the subscription.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Final

from ..faults import Fault, classify
from . import leases
from .leases import LeaseLost

if TYPE_CHECKING:
    from .state import SubscriptionState

__all__ = ["Acker"]

log = logging.getLogger("backbone.consumer")

ACK_DELAY: Final = 0.002
_BATCH: Final = 1000
_FINAL_ATTEMPTS: Final = 5


class Acker:
    def __init__(self, state: SubscriptionState) -> None:
        self.state = state
        self.closing = False

    def close(self) -> None:
        """Write what is queued, then end :meth:`run`."""
        self.closing = True
        self.state.window.ack_signal.set()

    async def run(self) -> None:
        signal = self.state.window.ack_signal
        while True:
            await signal.wait()
            signal.clear()
            closing = self.closing
            if not closing:
                # Give the reader the chance to carry the acks with its next read
                # before spending a round trip on them.
                await asyncio.sleep(ACK_DELAY)
            await self.flush(final=closing)
            if closing:
                return

    async def flush(self, *, final: bool) -> None:
        state = self.state
        window = state.window
        # The pipelined connection where there is one (cheaper for the client
        # than redis-py's: under load this runs every few milliseconds).
        direct = state.backbone.direct
        failures = 0
        while window.acks:
            batch = window.take_acks(_BATCH)
            try:
                if state.lease is None and direct is not None:
                    await direct.call("XACK", state.stream, state.group, *batch)
                elif state.lease is None:
                    await state.redis.xack(state.stream, state.group, *batch)
                else:
                    await leases.ack(state, batch)
            except LeaseLost as exc:
                dropped = batch + window.take_acks()
                window.acks_dropped(dropped)
                log.warning(
                    "%s: %d ack(s) refused, %s; those events stay pending for the "
                    "partition's new owner",
                    state,
                    len(dropped),
                    exc,
                )
                if state.lease is not None:
                    state.lease.lose()
                return
            except Exception as exc:
                window.acks_failed(batch)
                failures += 1
                if final and failures > _FINAL_ATTEMPTS:
                    log.warning(
                        "%s: %d ack(s) not written (%s); those events stay pending",
                        state,
                        len(window.acks),
                        exc,
                    )
                    return
                if classify(exc) is not Fault.TRANSIENT and failures == 1:
                    log.error("%s: acks refused (%s); retrying", state, exc)
                await state.outage.wait(exc)
                continue
            window.acks_written(batch)
