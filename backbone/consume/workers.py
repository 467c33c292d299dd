"""The workers: take deliveries from the window, decide, decode, call, retry.

``concurrency`` workers run; with one, events are handled in stream order. For
each delivery a worker decides, before any handler runs:

* entry deleted while pending (trimmed): ack, nothing to handle;
* re-driven for another group: ack, skip;
* no operation field: dead-letter ``malformed-entry``;
* operation unknown to the contract: dead-letter, or skip when asked to;
* operation the (partial) handler does not implement: ack, count;
* delivered more than ``max_deliveries`` times (its consumers died handling it):
  dead-letter ``too-many-deliveries`` without calling the handler;
* already handled (idempotency mark): ack;
* payload key unreadable, missing, undecodable or invalid: dead-letter.

Then it calls the handler. A failure is retried after a backoff, each retry
counted as a delivery in Redis (``XCLAIM RETRYCOUNT``), until ``max_deliveries``
deliveries have failed; then the event is dead-lettered ``handler-error``.

Each failed call is one log line with its traceback (WARNING while it will be
retried; the dead letter's ERROR line for the last one), each handled event a
DEBUG line. With telemetry on (:mod:`backbone.telemetry`) each call runs in a
CONSUMER span that continues the producer's trace, and is counted and timed;
off, that costs one check of ``hooks.active`` per event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any, Final

from ..deadletters import DeadLetterReason
from ..errors import DecodeError
from ..events import reset_current_event, set_current_event
from ..faults import is_transient
from ..options import AckPolicy, UnknownOperation
from ..telemetry import hooks
from .context import LazyContext, log_fields
from .delivery import pairs

if TYPE_CHECKING:
    from ..dispatch import Route
    from .deadletter import DeadLetterStep
    from .delivery import Delivery
    from .fetcher import Fetcher
    from .idempotency import Marks
    from .state import SubscriptionState

__all__ = ["Workers"]

log = logging.getLogger("backbone.consumer")

_YIELD_EVERY: Final = 64


class Workers:
    def __init__(
        self,
        state: SubscriptionState,
        fetcher: Fetcher,
        dead_letter: DeadLetterStep,
        marks: Marks | None,
    ) -> None:
        self.state = state
        self.fetcher = fetcher
        self.dead_letter = dead_letter
        self.marks = marks
        self.closing = False
        dispatcher = state.dispatcher
        self._routes = {
            name.encode(): (name, dispatcher.get(name))
            for name in dispatcher.contract.codecs
        }
        self._ack_after_success = state.options.ack is AckPolicy.AFTER_SUCCESS

    def close(self) -> None:
        """Let the workers end once the queue is empty."""
        self.closing = True
        self.state.window.ready_signal.set()

    async def run(self) -> None:
        """One worker: handle deliveries until closed."""
        hooks.watch(self.state)  # for the consumer lag gauges
        try:
            await self._loop()
        finally:
            hooks.unwatch(self.state)

    async def _loop(self) -> None:
        window = self.state.window
        ready = window.ready
        handled = 0
        while True:
            if not ready:
                if self.closing:
                    return
                window.ready_signal.clear()
                await window.ready_signal.wait()
                continue
            delivery = ready.popleft()
            try:
                await self.process(delivery)
            except (asyncio.CancelledError, SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                # Never let one event kill the loop; it stays pending and comes back.
                log.exception(
                    "%s: unexpected error handling %s",
                    self.state,
                    delivery.entry_id,
                    extra=log_fields(self.state, delivery),
                )
            finally:
                window.finish(delivery)
            handled += 1
            if handled % _YIELD_EVERY == 0:
                # Handlers that never suspend would starve the reader and acker.
                await asyncio.sleep(0)

    def _ack(self, d: Delivery) -> None:
        self.state.window.queue_ack(d, noack=self.state.noack)

    async def process(self, d: Delivery) -> None:
        state = self.state
        op_name = d.op
        if op_name is None and not d.fields:
            # Deleted from the stream (trimmed) while pending: nothing to handle.
            log.info(
                "%s: pending entry %s no longer exists; acking it",
                state,
                d.entry_id,
                extra=log_fields(state, d),
            )
            self._ack(d)
            return
        if not self.fetcher.mine(d):
            state.stats.skipped += 1
            self._ack(d)
            return
        if op_name is None:
            await self.dead_letter(
                d,
                DeadLetterReason.MALFORMED_ENTRY,
                "the stream entry has no operation field 'o'",
            )
            return
        known = self._routes.get(op_name)
        if known is None:
            operation, route = op_name.decode(errors="replace"), None
        else:
            operation, route = known
            if route is None:
                # The contract has it; this (partial) handler does not handle it.
                state.stats.unimplemented += 1
                self._ack(d)
                return
        if route is None:
            if state.options.unknown_operation is UnknownOperation.SKIP:
                state.stats.skipped += 1
                self._ack(d)
                return
            await self.dead_letter(
                d,
                DeadLetterReason.UNKNOWN_OPERATION,
                f"contract {state.dispatcher.contract_name} of this consumer has no "
                f"operation {operation!r} (a newer producer?); update the contract "
                "and regenerate, or subscribe with unknown_operation=SKIP",
            )
            return
        retry = state.options.retry
        if d.delivery_count > retry.max_deliveries:
            await self.dead_letter(
                d,
                DeadLetterReason.TOO_MANY_DELIVERIES,
                f"delivered {d.delivery_count} times (max_deliveries is "
                f"{retry.max_deliveries}); the consumers handling it may have crashed",
                handler=route.handler_name,
            )
            return
        if d.done_mark:
            state.stats.duplicates_skipped += 1
            self._ack(d)
            return
        try:
            args = self._decode(route, d)
        except DecodeError as exc:
            await self.dead_letter(d, exc.reason, str(exc), handler=route.handler_name)
            return
        await self._call(route, d, operation, args)

    def _decode(self, route: Route, d: Delivery) -> list[Any]:
        key = self.state.keys.payload(d.entry_id)
        if d.fault is not None:
            raise DecodeError(
                DeadLetterReason.UNREADABLE_PAYLOAD,
                f"the payload key {key} cannot be read as a hash ({d.fault}); "
                "something other than backbone wrote it",
            )
        if d.damaged is not None:
            raise DecodeError(
                DeadLetterReason.UNDECODABLE,
                f"a personal value of {key} cannot be opened: {d.damaged}",
            )
        values = d.values if d.values is not None else []
        codec = route.codec
        version = d.version
        if version is not None and version != codec.version:
            # Another version: VALUES is the whole hash (an older one's goes
            # through the upcasters; a newer one's is read when it fits).
            return codec.decode(pairs(values), version, key=f"the payload hash {key}")
        if values.count(None) == len(values) and codec.parameter_names:
            raise DecodeError(
                DeadLetterReason.MISSING_PAYLOAD,
                f"the payload hash {key} does not exist (deleted, expired or never "
                "written)",
            )
        return codec.decode_values(values)

    async def _call(
        self, route: Route, d: Delivery, operation: str, args: list[Any]
    ) -> None:
        state = self.state
        retry = state.options.retry
        method = route.method
        timeout = state.options.handler_timeout
        observer = hooks.active  # None: telemetry off
        debug = log.isEnabledFor(logging.DEBUG)
        while True:
            context = LazyContext(state, d, operation)
            token = set_current_event(context)
            # The handler's span, current while it runs (telemetry on only).
            handling = (
                None if observer is None else observer.handling(state, d, operation)
            )
            started = time.perf_counter() if debug else 0.0
            try:
                if route.takes_context:
                    call = method(*args, context=context())
                else:
                    call = method(*args)
                if timeout is None:
                    await call
                else:
                    async with asyncio.timeout(timeout):
                        await call
            except (SystemExit, KeyboardInterrupt):
                raise  # the process is ending: the event stays pending
            except BaseException as exc:
                # A handler's failure is any exception it raises, BaseException
                # subclasses (GeneratorExit, ...) and a cancel of its own task
                # included; only a stop's cancel ends the worker.
                if isinstance(exc, asyncio.CancelledError) and _being_cancelled():
                    if state.stopping.is_set():
                        raise  # the subscription is stopping: the event stays pending
                    _uncancel()
                state.stats.failed += 1
                if handling is not None:
                    handling.failed(exc)
                if d.delivery_count >= retry.max_deliveries:
                    await self.dead_letter(
                        d,
                        DeadLetterReason.HANDLER_ERROR,
                        exc,
                        handler=route.handler_name,
                    )
                    return
                delay = retry.backoff(d.delivery_count)
                log.warning(
                    "%s: %s failed on %s (%s, delivery %d of %d: %s: %s); "
                    "retry in %.2fs",
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
                    return  # stays pending
                if not await self._redeliver(d):
                    return
                state.stats.retried += 1
                if observer is not None:
                    observer.retried(state.stream, state.group, operation)
                continue
            finally:
                reset_current_event(token)
                if handling is not None:
                    handling.end()
            state.stats.handled += 1
            if handling is not None:
                handling.handled()
            if debug:
                self._log_handled(d, operation, route, time.perf_counter() - started)
            if self.marks is not None:
                await self.marks.mark_done(d)
            if self._ack_after_success and not d.acked:
                self._ack(d)
            return

    def _log_handled(
        self, d: Delivery, operation: str, route: Route, seconds: float
    ) -> None:
        extra = log_fields(self.state, d, operation, route.handler_name)
        extra["duration_ms"] = round(seconds * 1000, 3)
        log.debug(
            "%s: %s handled %s (%s) in %.3f ms",
            self.state,
            route.handler_name,
            d.entry_id,
            operation,
            seconds * 1000,
            extra=extra,
        )

    async def _redeliver(self, d: Delivery) -> bool:
        """Count a retry as a delivery in Redis (XCLAIM RETRYCOUNT), so the count
        survives a crash. False when the entry is gone from the pending list."""
        state = self.state
        if state.noack:
            d.delivery_count += 1
            return True
        next_count = d.delivery_count + 1
        while not state.stopping.is_set():
            try:
                claimed = await state.redis.xclaim(
                    state.stream,
                    state.group,
                    state.consumer,
                    0,
                    [d.entry_id],
                    retrycount=next_count,
                    justid=True,
                )
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
