"""A subscription: one consumer of a consumer group, composed of its stages.

::

    Reader ──► Window (held, ready) ──► Workers ──► acks ──► Acker
      ▲  read.lua: acks + XREADGROUP       decode, call,         (or the next
      │  + payloads, for the free room     retry, dead-letter     read.lua call)
      └── Fetcher ◄── Claimer (leases, XAUTOCLAIM), own-pending recovery

The stages share one :class:`~backbone.consume.state.SubscriptionState`. At most
``max_in_flight`` events are held (queued, running, or finished with the ack not
yet written). An event leaves the pending list only by an ack or by the
dead-letter script, which acks it in the same atomic step; everything else (a
crash, a stop, a lost connection) leaves it pending, to be handled again by this
consumer on restart or by another member once idle for ``claim_idle``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Generator, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from ..errors import ConfigurationError
from ..events import EventId
from ..faults import is_transient
from ..keys import validate_name
from ..options import StartFrom, SubscriptionOptions
from ..retainer import Retainer
from ..versions import record_marks
from .acker import Acker
from .claimer import Claimer
from .deadletter import DeadLetterStep
from .delivery import before
from .fetcher import Fetcher
from .group import Group
from .idempotency import Marks
from .reader import Reader, discard_outcome
from .signals import SignalStops
from .state import SubscriptionState, SubscriptionStats
from .workers import Workers

if TYPE_CHECKING:
    from ..connection import Backbone
    from ..dispatch import Dispatcher
    from ..keys import StreamKeys
    from .leases import Lease

__all__ = ["Subscription", "default_consumer_name"]

log = logging.getLogger("backbone.consumer")


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def start_id(start: StartFrom | EventId | str) -> str:
    """The id a new group starts after, for START."""
    if isinstance(start, StartFrom):
        return start.value
    entry = start.id if isinstance(start, EventId) else start
    parts = entry.split("-") if isinstance(entry, str) else []
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ConfigurationError(
            f"start {start!r} is not StartFrom.BEGINNING, StartFrom.NEW, an "
            "EventId or an entry id like '1700000000000-0'"
        )
    return before(entry)


class Subscription:
    """A running consumer: returned by ``subscribe``; await ``completion``, call
    :meth:`stop`, or use it as an async context manager (leaving stops it)."""

    def __init__(
        self,
        backbone: Backbone,
        keys: StreamKeys,
        dispatcher: Dispatcher[Any],
        *,
        group: str,
        consumer: str | None = None,
        start: StartFrom | EventId | str = StartFrom.NEW,
        options: SubscriptionOptions | None = None,
        lease: Lease | None = None,
    ) -> None:
        self.backbone = backbone
        self.keys = keys
        self.dispatcher = dispatcher
        self.group = validate_name("group", group)
        self.consumer = validate_name("consumer", consumer or default_consumer_name())
        self.options = options or SubscriptionOptions()
        if self.options.block + 1 > backbone.command_timeout:
            raise ConfigurationError(
                f"block ({self.options.block:g}s) must be at least 1s shorter than the "
                f"connection's command_timeout ({backbone.command_timeout:g}s); lower "
                "block or raise Backbone(command_timeout=...)"
            )
        if self.options.ordered and lease is None:
            raise ConfigurationError(
                "ordered=True needs the partitions' leases: subscribe through "
                "Backbone.subscribe (or the generated subscribe_<contract>), which "
                "makes an ordered PartitionedSubscription"
            )
        self.start_id = start_id(start)
        state = SubscriptionState(
            backbone,
            keys,
            dispatcher,
            group=self.group,
            consumer=self.consumer,
            options=self.options,
            name=repr(self),
            lease=lease,
        )
        self._state = state
        self.stats: SubscriptionStats = state.stats
        marks = Marks(state) if self.options.idempotent else None
        self._group = Group(state, self.start_id)
        fetcher = Fetcher(state, self._group)
        self._reader = Reader(state, self._group, fetcher)
        self._workers = Workers(state, fetcher, DeadLetterStep(state), marks)
        self._acker = Acker(state)
        self._claimer = None if state.noack else Claimer(state, fetcher, marks)
        self._task: asyncio.Task[None] | None = None
        self._start_lock = asyncio.Lock()
        self._worker_tasks: set[asyncio.Task[None]] = set()
        self._reading: asyncio.Task[None] | None = None
        self._completion: asyncio.Future[None] | None = None

    # --- lifetime -----------------------------------------------------------------

    async def start(self) -> Self:
        """Create the group if needed and start consuming in the background.

        Starting a running subscription does nothing more; a subscription that
        was stopped cannot be started again (subscribe again).
        """
        async with self._start_lock:  # one start at a time
            if self._task is not None:
                if self._task.done():
                    raise RuntimeError(
                        f"{self} has stopped and cannot be started again; "
                        "subscribe again for a new subscription"
                    )
                return self
            if self._state.stopping.is_set():
                raise RuntimeError(
                    f"{self} was stopped before it started; subscribe again for a "
                    "new subscription"
                )
            try:
                await self._group.ensure()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning(
                    "%s: Redis is not reachable yet (%s); the subscription keeps "
                    "trying",
                    self,
                    exc,
                )
            else:
                # A consumer usually runs the newest contract: its retirements
                # reach older producers before they write again.
                state = self._state
                await record_marks(
                    state.backbone,
                    state.keys,
                    state.dispatcher.contract.spec.operations,
                )
            loop = asyncio.get_running_loop()
            self._completion = loop.create_future()
            self._task = loop.create_task(self._run(), name=f"backbone:{self}")
        return self

    @property
    def completion(self) -> asyncio.Future[None]:
        """Done when the subscription has stopped (raises if it failed).

        Cancelling a wait on it (``asyncio.wait_for(sub.completion, 1)``, Ctrl-C)
        cancels that wait only, never the subscription's own outcome.
        """
        if self._completion is None:
            raise RuntimeError(f"{self} was not started; await its start() first")
        return asyncio.shield(self._completion)

    @property
    def started(self) -> bool:
        """True once :meth:`start` ran (the subscription may have stopped since)."""
        return self._task is not None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def in_flight(self) -> int:
        """Events read and not yet finished and acknowledged."""
        return self._state.window.in_flight

    @property
    def stopping(self) -> bool:
        """True once a stop was asked for (by :meth:`stop` or a signal)."""
        return self._state.stopping.is_set()

    async def stop(self) -> None:
        """Stop reading, let running handlers finish (``shutdown_timeout``), ack them
        and return. Events not finished stay pending for the group."""
        self._request_stop()
        if self._task is None:
            return
        if asyncio.current_task() in self._worker_tasks:
            # Called by a handler: waiting here would wait for this handler.
            # The stop goes on once it returns.
            return
        await asyncio.shield(self._task)

    def stop_on_signals(
        self, signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
    ) -> None:
        """Stop gracefully when the process receives one of SIGNALS. Every
        subscription of the event loop that asked for a signal stops on it."""
        SignalStops.of(asyncio.get_running_loop()).add(self, signals)

    def on_signal(self, sig: signal.Signals) -> None:
        log.info("%s: %s received, stopping", self, sig.name)
        self._request_stop()

    def _request_stop(self) -> None:
        self._state.stopping.set()
        self._state.window.wake()
        if self._reading is not None and not self._reading.done():
            self._reading.cancel()

    def __await__(self) -> Generator[Any, None, Self]:
        return self.start().__await__()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def __repr__(self) -> str:
        return (
            f"Subscription({self.keys.stream} group={self.group} "
            f"consumer={self.consumer})"
        )

    # --- the stages -----------------------------------------------------------------

    async def _run(self) -> None:
        assert self._completion is not None
        loop = asyncio.get_running_loop()
        workers = [
            loop.create_task(self._workers.run(), name=f"backbone-worker:{self}:{i}")
            for i in range(self.options.concurrency)
        ]
        self._worker_tasks = set(workers)
        acker = loop.create_task(self._acker.run(), name=f"backbone-acker:{self}")
        claimer = (
            None
            if self._claimer is None
            else loop.create_task(self._claimer.run(), name=f"backbone-claimer:{self}")
        )
        retainer = Retainer.start(
            self.backbone, self.keys, self.options.retention, repr(self)
        )
        failure: BaseException | None = None
        try:
            self._reading = loop.create_task(
                self._reader.run(), name=f"backbone-reader:{self}"
            )
            # Until the reader ends (a stop), or a worker does: a worker only
            # ends by itself through a bug or the end of the process, and a
            # subscription without its workers would hold its events for ever.
            done, _ = await asyncio.wait(
                [self._reading, *workers], return_when=asyncio.FIRST_COMPLETED
            )
            ended = [w for w in workers if w in done]
            if ended:
                self._request_stop()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._reading
                worker = ended[0]
                failure = (
                    None if worker.cancelled() else worker.exception()
                ) or RuntimeError(f"a worker of {self} ended unexpectedly")
        except BaseException as exc:  # pragma: no cover - bug guard
            failure = exc
        reading = self._reading
        if reading is not None and reading.done() and not reading.cancelled():
            failure = failure or reading.exception()
        await retainer.stop()
        try:
            await self._shutdown(workers, acker, claimer)
        except BaseException as exc:  # pragma: no cover - bug guard
            failure = failure or exc
        if failure is not None:
            log.error("%s failed", self, exc_info=failure)
            self._completion.set_exception(failure)
        else:
            self._completion.set_result(None)
        SignalStops.forget(self)

    async def _shutdown(
        self,
        workers: list[asyncio.Task[None]],
        acker: asyncio.Task[None],
        claimer: asyncio.Task[None] | None,
    ) -> None:
        state = self._state
        state.stopping.set()
        if claimer is not None:
            claimer.cancel()
            _, stuck_claimer = await asyncio.wait({claimer}, timeout=1.0)
            for task in stuck_claimer:
                task.add_done_callback(discard_outcome)
        # Events read but not started stay pending (this consumer's PEL).
        state.window.drop_unstarted()
        self._workers.close()
        timeout = self.options.shutdown_timeout
        _, late = await asyncio.wait(workers, timeout=timeout)
        for task in late:
            task.cancel()
        if late:
            log.warning(
                "%s: %d handler(s) did not finish within %.1fs; their events stay "
                "pending",
                self,
                len(late),
                timeout,
            )
            # A cancel can be lost inside a Redis command a handler makes; do not
            # wait for such a handler for ever.
            _, stuck = await asyncio.wait(late, timeout=1.0)
            for task in stuck:
                task.add_done_callback(discard_outcome)
        self._acker.close()
        try:
            await asyncio.wait_for(acker, timeout=max(timeout, 1.0))
        except TimeoutError:
            log.warning("%s: final acks not written; those events stay pending", self)
            return
        await self._forget_consumer()

    async def _forget_consumer(self) -> None:
        """A clean stop leaves no trace: this consumer leaves its group when it
        holds no pending entry (processes named ``<host>-<pid>`` would otherwise
        pile up in the group, one per restart)."""
        state = self._state
        try:
            async with asyncio.timeout(2.0):
                removed = await state.backbone.scripts.forget_consumer.forget(
                    state.redis,
                    stream=state.stream,
                    group=state.group,
                    consumer=state.consumer,
                )
        except Exception as exc:  # a stop never fails on this tidying
            log.debug("%s: consumer not removed from its group: %s", self, exc)
            return
        if removed:
            log.debug("%s: removed from its group (nothing pending)", self)
