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
deliveries have failed; then the event is dead-lettered ``handler-error``
(:mod:`.retries`).

Holding a partition's lease (an ordered subscription), a worker starts an
event only while the lease is held, and counts a retry only through the fenced
claim of lease.lua: a member that lost the partition leaves its events pending
for the new owner.

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
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from ..deadletters import DeadLetterReason
from ..errors import DecodeError
from ..events import reset_current_event, set_current_event
from ..options import AckPolicy, UnknownOperation
from ..telemetry import hooks
from .context import LazyContext, log_fields
from .delivery import pairs
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
DEBUG: Final = logging.DEBUG

_Known = tuple[
    str,
    "Route",
    int,
    int,
    "Callable[[Sequence[bytes | None]], list[Any] | None] | None",
]
"""An implemented operation: name, route, version, parameters, one-call decoder."""


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
        dispatcher = state.dispatcher
        self._routes = {
            name.encode(): (name, dispatcher.get(name))
            for name in dispatcher.contract.codecs
        }
        # The operations the handler implements, with what the common case of
        # an event needs of each (see _plan): the operation's name, route,
        # version, number of parameters and one-call decoder.
        self._implemented: dict[bytes, _Known] = {
            op: (
                name,
                route,
                route.codec.version,
                len(route.codec.field_names),
                route.codec.fast_decoder,
            )
            for op, (name, route) in self._routes.items()
            if route is not None
        }
        options = state.options
        self._ack_after_success = options.ack is AckPolicy.AFTER_SUCCESS
        self._max_deliveries = options.retry.max_deliveries
        self._timeout = options.handler_timeout
        self._group = state.group.encode()

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
        # Without a handler timeout or idempotency marks, an event whose call
        # needs no span and no debug line is called right here: no coroutine of
        # its own, no per-call set-up (the same steps as _call's first turn).
        plain = self._timeout is None and self.marks is None
        ack_after_success = self._ack_after_success
        noack = state.noack
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
                plan = self._plan(delivery)
                if plan is None:
                    await self.process(delivery)
                elif plain and hooks.active is None and not log.isEnabledFor(DEBUG):
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

    def _ack(self, d: Delivery) -> None:
        self.state.window.queue_ack(d, noack=self.state.noack)

    def _plan(self, d: Delivery) -> tuple[Route, Delivery, str, list[Any]] | None:
        """The call of D in the common case: an operation the handler
        implements, for this group, within its deliveries, not handled yet,
        whose payload decodes. None for any other event: :meth:`process`
        decides about it, taking the same steps in the same order."""
        known = self._implemented.get(d.op) if d.op is not None else None
        if (
            known is None
            or d.done_mark
            or self._exhausted(d)
            or (d.only and d.only != self._group)
        ):
            return None
        lease = self.state.lease
        if lease is not None and not lease.held:
            return None
        operation, route, version, width, fast = known
        values = d.values
        if (
            fast is not None
            and d.version == version
            and d.fault is None
            and d.damaged is None
            and values is not None
            and len(values) == width
        ):
            args = fast(values)
            if args is not None:
                return route, d, operation, args
        try:
            args = self._decode(route, d)
        except DecodeError:
            return None  # dead-lettered by process, which says why
        return route, d, operation, args

    def _exhausted(self, d: Delivery) -> bool:
        """True when D was delivered more often than max_deliveries: its
        consumers died handling it, and it is dead-lettered without a call."""
        return d.delivery_count > self._max_deliveries

    async def process(self, d: Delivery) -> None:
        """Decide about D before its handler runs (see the module
        documentation), then call it."""
        state = self.state
        if state.lease is not None and not state.lease.held:
            return  # lost: the event stays pending for the partition's new owner
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
        if self._exhausted(d):
            await self.dead_letter(
                d,
                DeadLetterReason.TOO_MANY_DELIVERIES,
                f"delivered {d.delivery_count} times (max_deliveries is "
                f"{self._max_deliveries}); the consumers handling it may have crashed",
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
        """D's arguments, or DecodeError saying why it cannot have any."""
        if d.fault is not None:
            raise DecodeError(
                DeadLetterReason.UNREADABLE_PAYLOAD,
                f"the payload key {self._key(d)} cannot be read as a hash "
                f"({d.fault}); something other than backbone wrote it",
            )
        if d.damaged is not None:
            raise DecodeError(
                DeadLetterReason.UNDECODABLE,
                f"a personal value of {self._key(d)} cannot be opened: {d.damaged}",
            )
        values = d.values if d.values is not None else []
        codec = route.codec
        version = d.version
        if version is not None and version != codec.version:
            # Another version: VALUES is the whole hash (an older one's goes
            # through the upcasters; a newer one's is read when it fits).
            return codec.decode(
                pairs(values), version, key=f"the payload hash {self._key(d)}"
            )
        if values.count(None) == len(values) and codec.parameter_names:
            raise DecodeError(
                DeadLetterReason.MISSING_PAYLOAD,
                f"the payload hash {self._key(d)} does not exist (deleted, expired "
                "or never written)",
            )
        return codec.decode_values(values)

    def _key(self, d: Delivery) -> str:
        """D's payload key (named in errors only: formatting it costs)."""
        return self.state.keys.payload(d.entry_id)

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
