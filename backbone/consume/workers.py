"""The workers: take deliveries from the window, call their handlers, retry.

``concurrency`` workers run; with one, events are handled in stream order. What
to do with each delivery before a handler runs is :mod:`.decisions`' to say; a
worker then makes the call. Without a handler timeout or idempotency marks, an
event whose call needs no span and no debug line is called right in the
worker's loop: no coroutine and no set-up of its own.

A failure is retried after a backoff, each retry counted as a delivery in Redis
(``XCLAIM RETRYCOUNT``), until ``max_deliveries`` deliveries have failed; then
the event is dead-lettered ``handler-error`` (:mod:`.retries`). Holding a
partition's lease (an ordered subscription), a worker starts an event only
while the lease is held, and counts a retry only through the fenced claim of
lease.lua: a member that lost the partition leaves its events pending for the
new owner.

Each failed call is one log line with its traceback (WARNING while it will be
retried; the dead letter's ERROR line for the last one), each handled event a
DEBUG line. With telemetry on (:mod:`backbone.telemetry`) each call runs in a
CONSUMER span that continues the producer's trace, and is counted and timed;
off, that costs one check of ``hooks.active`` per event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Final

from ..events import reset_current_event, set_current_event
from ..options import AckPolicy
from ..telemetry import hooks
from .context import LazyContext, log_fields
from .decisions import Decisions
from .retries import Retries

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
        self.retries = Retries(state, dead_letter)
        self.closing = False
        self.decide = Decisions(state, fetcher, dead_letter)
        options = state.options
        self._ack_after_success = options.ack is AckPolicy.AFTER_SUCCESS
        self._timeout = options.handler_timeout

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
        state = self.state
        window = state.window
        ready = window.ready
        stats = state.stats
        # The common call right here (the same steps as _call's first turn).
        plain = self._timeout is None and self.marks is None
        ack_after_success = self._ack_after_success
        noack = state.noack
        decide = self.decide
        handled = 0
        while True:
            if not ready:
                if self.closing:
                    return
                window.ready_signal.clear()
                await window.ready_signal.wait()
                continue
            delivery = ready.popleft()
            finished = False
            try:
                plan = decide.plan(delivery)
                if plan is None:
                    plan = await decide.settle(delivery)
                    if plan is not None:
                        await self._call(*plan)
                elif (
                    plain
                    and hooks.active is None
                    and not log.isEnabledFor(logging.DEBUG)
                ):
                    route, d, operation, args = plan
                    context = LazyContext(state, d, operation)
                    token = set_current_event(context)
                    failure: BaseException | None = None
                    try:
                        if route.takes_context:
                            await route.method(*args, context=context())
                        else:
                            await route.method(*args)
                    except (SystemExit, KeyboardInterrupt):
                        raise
                    except BaseException as exc:  # see _call
                        failure = exc
                    finally:
                        reset_current_event(token)
                    if failure is None:
                        stats.handled += 1
                        window.finish_handled(d, ack=ack_after_success, noack=noack)
                        finished = True
                    else:
                        await self._after_failure(route, d, operation, args, failure)
                else:
                    await self._call(*plan)
            except (asyncio.CancelledError, SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                # Never let one event kill the loop; it stays pending and comes back.
                log.exception(
                    "%s: unexpected error handling %s",
                    state,
                    delivery.entry_id,
                    extra=log_fields(state, delivery),
                )
            finally:
                if not finished:
                    window.finish(delivery)
            handled += 1
            if handled % _YIELD_EVERY == 0:
                # Handlers that never suspend would starve the reader and acker.
                await asyncio.sleep(0)

    async def _call(
        self, route: Route, d: Delivery, operation: str, args: list[Any]
    ) -> None:
        state = self.state
        method = route.method
        timeout = self._timeout
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
                self.retries.own_failure(exc)
                if handling is not None:
                    handling.failed(exc)
                if await self.retries.failed(route, d, operation, exc):
                    continue
                return
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
                state.window.queue_ack(d, noack=state.noack)
            return

    async def _after_failure(
        self,
        route: Route,
        d: Delivery,
        operation: str,
        args: list[Any],
        exc: BaseException,
    ) -> None:
        """The handler failed on D's first call in the loop: what :meth:`_call`
        does after a failure, then its calls again while it is retried."""
        self.retries.own_failure(exc)
        if await self.retries.failed(route, d, operation, exc):
            await self._call(route, d, operation, args)

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
