"""The archive sink: streams into PostgreSQL, every event once, demand-driven.

It composes the stages (see ``docs/archive.md``)::

    Redis --archive_read.lua--> StreamReader --map--> Batcher --> Writer --COPY,
      ^        (one per stream,       |  (rows)        (size      (one txn per   INSERT,
      |         room = demand)        |                or time)    batch)        COMMIT
      |                               +--> dead letters (dead_letter.lua)         |
      +-------------------------------------- XACK <------------------------------+
           Claimer (per stream): leases of held entries, XAUTOCLAIM of a dead sink's

A stop (``stop()``, SIGTERM, SIGINT, or ``until_idle`` once caught up) stops
reading, flushes the open batch, commits and acknowledges it, then returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from ..errors import ConfigurationError
from .batcher import Batcher
from .claimer import Claimer
from .driver import psycopg_module, redact
from .options import ArchiveOptions, parameterless
from .reader import StreamReader
from .state import ArchiveStats, Demand, Outage
from .writer import Writer, connect

if TYPE_CHECKING:
    from ..connection import Backbone
    from ..keys import StreamKeys

__all__ = ["ArchiveSink", "check_postgres_url"]

log = logging.getLogger("backbone.archive")

_IDLE_POLL = 0.25


def check_postgres_url(url: str) -> str:
    """URL when it looks like a PostgreSQL URL (or a ``key=value`` connection
    string); else a :class:`ConfigurationError` saying what to write."""
    if url.startswith(("postgresql://", "postgres://")) or "=" in url:
        return url
    raise ConfigurationError(
        f"PostgreSQL URL {redact(url)!r} is not valid; use "
        "postgresql://user:password@host:port/database"
    )


class ArchiveSink:
    """Archives every event of the streams URIS into PostgreSQL at POSTGRES_URL,
    as the consumer group ``options.group``.

    ``await sink.run()`` runs until :meth:`stop` (or a signal, after
    :meth:`stop_on_signals`); ``await sink.run(until_idle=True)`` stops by itself
    once the group has archived everything the streams hold. ``async with`` starts
    it and stops it at the end of the block.
    """

    def __init__(
        self,
        backbone: Backbone,
        postgres_url: str,
        uris: Sequence[str],
        options: ArchiveOptions | None = None,
    ) -> None:
        if isinstance(uris, str):
            uris = [uris]
        if not uris:
            raise ConfigurationError("the archive needs at least one stream URI")
        check_postgres_url(postgres_url)
        self.backbone = backbone
        self.postgres_url = postgres_url
        self.options = options = options or ArchiveOptions()
        self.stats = ArchiveStats()
        self.demand = Demand(options.room, min(options.max_batch, options.room // 4))
        self.batcher = Batcher(options.max_batch, options.max_latency)
        self.redis_outage = Outage("Redis", options.max_backoff)
        self.postgres_outage = Outage("PostgreSQL", options.max_backoff)
        self.stopping = asyncio.Event()
        known = parameterless(options.contracts)
        self.readers: dict[StreamKeys, StreamReader] = {}
        for uri in dict.fromkeys(uris):
            keys = backbone.keys(uri)
            self.readers[keys] = StreamReader(
                backbone,
                keys,
                options,
                demand=self.demand,
                batcher=self.batcher,
                stats=self.stats,
                outage=self.redis_outage,
                parameterless=known,
                stopping=self.stopping,
            )
        self.writers = [
            Writer(
                backbone,
                postgres_url,
                options,
                batcher=self.batcher,
                stats=self.stats,
                postgres=self.postgres_outage,
                redis=self.redis_outage,
                finished=self._finished,
            )
            for _ in range(options.writers)
        ]
        self.started_at: float | None = None
        self._reading: list[asyncio.Task[None]] = []
        self._writing: list[asyncio.Task[None]] = []
        self._done: asyncio.Future[None] | None = None
        self._signals: list[int] = []
        self._abandon = asyncio.Event()
        self._shutting: asyncio.Future[None] | None = None
        self._stopper: asyncio.Future[None] | None = None

    # --- state ----------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Entries read and not yet committed and acknowledged (or dead-lettered)."""
        return self.demand.in_flight

    @property
    def postgres_down(self) -> bool:
        return self.postgres_outage.down

    @property
    def running(self) -> bool:
        return self._done is not None and not self._done.done()

    # --- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Check PostgreSQL (migrating the schema) and the groups, then start the
        stages. A wrong URL, a refused login or a schema newer than this code
        fails here."""
        if self._done is not None:
            return
        psycopg_module()
        # Redis first, which this changes nothing in, then PostgreSQL (schema
        # migrated), then the groups: a wrong URL leaves nothing behind.
        await self.backbone.redis.ping()
        first = await connect(
            self.postgres_url,
            self.options.schema,
            timeout=min(self.options.write_timeout, 10.0),
        )
        self.writers[0].conn = first
        try:
            for reader in self.readers.values():
                await reader.ensure_group()
        except BaseException:
            await first.close()
            self.writers[0].conn = None
            raise
        self.started_at = time.monotonic()
        self._done = asyncio.get_running_loop().create_future()
        for reader in self.readers.values():
            self._reading.append(self._task(reader.run(), f"read {reader.keys.uri}"))
            self._reading.append(
                self._task(Claimer(reader).run(), f"claim {reader.keys.uri}")
            )
        for n, writer in enumerate(self.writers):
            self._writing.append(self._task(writer.run(), f"write {n}"))
        log.info(
            "archiving %s into schema %s as group %s (consumer %s)",
            ", ".join(k.uri for k in self.readers),
            self.options.schema,
            self.options.group,
            self.options.consumer,
        )

    async def run(self, *, until_idle: bool = False) -> ArchiveStats:
        """Start (unless started) and run until stopped; with UNTIL_IDLE, until
        every stream is archived up to its last entry. Returns the stats."""
        await self.start()
        assert self._done is not None
        if until_idle:
            watcher = asyncio.ensure_future(self._stop_when_idle())
            try:
                await asyncio.shield(self._done)
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
        else:
            await asyncio.shield(self._done)
        return self.stats

    async def stop(self) -> None:
        """Stop reading, flush the open batch, commit and acknowledge what is
        read. After ``options.shutdown_timeout`` without PostgreSQL what is left
        stays pending in Redis (nothing is lost: it is archived at the next
        start)."""
        if self._done is None:
            return
        if not self.stopping.is_set():
            self.stopping.set()
            self._shutting = asyncio.ensure_future(self._shutdown())
        with contextlib.suppress(Exception):
            await asyncio.shield(self._done)

    def abandon(self) -> None:
        """Stop at once: batches not committed stay pending in Redis."""
        self._abandon.set()
        if self._done is not None and not self.stopping.is_set():
            self.stopping.set()
            self._shutting = asyncio.ensure_future(self._shutdown())

    def stop_on_signals(
        self, signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT)
    ) -> None:
        """SIGTERM or SIGINT stop the sink gracefully; a second one abandons
        what is not committed yet (it stays pending)."""
        loop = asyncio.get_running_loop()
        for number in signals:
            loop.add_signal_handler(number, self._on_signal, number)
            self._signals.append(number)

    def _on_signal(self, number: int) -> None:
        if self.stopping.is_set():
            log.warning("second signal %d: stopping without waiting", number)
            self.abandon()
            return
        log.warning("signal %d: flushing the open batch, then stopping", number)
        self._stopper = asyncio.ensure_future(self.stop())

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # --- internals ------------------------------------------------------------

    def _task(self, work: Any, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        task.set_name(f"archive {name}")
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        log.error("archive stage %s failed", task.get_name(), exc_info=exc)
        if self._done is not None and not self._done.done():
            self._done.set_exception(exc)  # type: ignore[arg-type]
        self.abandon()

    def _finished(self, keys: StreamKeys, entry_ids: list[str]) -> None:
        self.readers[keys].finished(entry_ids)

    async def _shutdown(self) -> None:
        try:
            await self._wait_all(self._reading, 5.0)
            self.batcher.end()
            abandon = asyncio.ensure_future(self._abandon.wait())
            writing = asyncio.gather(*self._writing, return_exceptions=True)
            finished, _ = await asyncio.wait(
                (writing, abandon),
                timeout=self.options.shutdown_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
            abandon.cancel()
            if writing not in finished:
                for task in self._writing:
                    task.cancel()
                await asyncio.gather(writing, return_exceptions=True)
                log.warning(
                    "stopped with %d entries not archived; they stay pending in "
                    "Redis and are archived at the next start",
                    self.demand.in_flight,
                )
        finally:
            for writer in self.writers:
                if writer.conn is not None:
                    with contextlib.suppress(Exception):
                        await writer.conn.close()
                    writer.conn = None
            loop = asyncio.get_running_loop()
            for number in self._signals:
                loop.remove_signal_handler(number)
            self._signals.clear()
            if self._done is not None and not self._done.done():
                self._done.set_result(None)

    @staticmethod
    async def _wait_all(tasks: list[asyncio.Task[None]], timeout: float) -> None:
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=timeout)
        for task in late:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _stop_when_idle(self) -> None:
        """Stop once nothing is left to archive: every reader found nothing new,
        nothing is in flight, and no entry is pending in the group (a dead
        sink's entries are claimed after ``claim_idle`` first)."""
        redis = self.backbone.redis
        while not self.stopping.is_set():
            waits = [r.changed.wait() for r in self.readers.values()]
            waits.append(self.stopping.wait())
            tasks = [asyncio.ensure_future(w) for w in waits]
            await asyncio.wait(
                tasks, timeout=_IDLE_POLL, return_when=asyncio.FIRST_COMPLETED
            )
            for task in tasks:
                task.cancel()
            for reader in self.readers.values():
                reader.changed.clear()
            if not all(r.caught_up for r in self.readers.values()):
                continue
            if self.demand.in_flight or self.batcher.waiting:
                continue
            try:
                pending = 0
                for keys in self.readers:
                    summary = await redis.xpending(keys.stream, self.options.group)
                    pending += int(summary["pending"])
            except Exception as exc:
                log.debug("idle check failed: %s", exc)
                continue
            if pending == 0 and self.demand.in_flight == 0:
                log.info("caught up: every stream is archived; stopping")
                await self.stop()
                return
