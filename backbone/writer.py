"""One atomic write of a batch of events, retried until it is known to be done,
never written twice.

Each attempt is one ``EVALSHA`` of ``lua/publish.lua`` (through
:class:`~backbone.write_scripts.PublishScript`) carrying the batch's number. A lost
connection is retried until ``publish_timeout``; a retried batch carries the same
number, and the script answers with the entries the first attempt wrote. Numbers
only grow, so an attempt that reaches Redis after a later batch was recorded
writes nothing at all. The batch record belongs to this writer (one producer
instance) alone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from .direct import run_script
from .errors import PublishError, ReplicationTimeout
from .events import (
    F_CONTRACT,
    F_OPERATION,
    F_PRODUCER,
    F_VERSION,
    EventId,
    event_ids,
)
from .retrying import until_answered
from .versions import record_marks, refuse_retired, warn_deprecated
from .write_scripts import PublishStatus

if TYPE_CHECKING:
    from .codec import OperationCodec
    from .connection import Backbone
    from .contract import ContractSpec
    from .keys import StreamKeys
    from .producer_options import ProducerOptions
    from .telemetry.core import Publishing

__all__ = ["BatchRefused", "Item", "Writer"]

log = logging.getLogger("backbone.producer")


@dataclasses.dataclass(slots=True)
class Item:
    """One event ready to send: its operation, producer time, extra metadata
    (correlation, causation, trace context) and encoded parameter values; with
    telemetry on, its record (span) until it is written or has failed."""

    operation: OperationCodec
    millis: int
    extra: tuple[bytes | str, ...]
    values: list[bytes]
    future: asyncio.Future[EventId] | None
    telemetry: Publishing | None = None
    partition: int | None = None
    """The partition of the event's key (None: no key, any partition)."""
    key: Any = None
    """The event's partition key, for a producer of one named partition."""


class BatchRefused(PublishError):
    """Redis refused the batch as a whole (nothing of it was written)."""


class Writer:
    """Writes batches of one producer instance to its stream."""

    def __init__(
        self,
        backbone: Backbone,
        keys: StreamKeys,
        identity: str,
        options: ProducerOptions,
        contract: ContractSpec | None = None,
        marked: set[OperationCodec] | None = None,
    ) -> None:
        self.backbone = backbone
        self.contract = contract
        self.identity = identity
        self.options = options
        self._stream = keys.stream
        self.keys = keys
        # Operations whose version marks this writer has recorded.
        # (shared by the writers of one producer: MARKED)
        self._marked: set[OperationCodec] = set() if marked is None else marked
        self.warned: set[str] = set()
        # The batch record is this instance's alone, even when several producers
        # share an identity: a retry must only ever find its own batches.
        self.record_key = keys.writer(f"{identity}:{secrets.token_hex(6)}")
        self._payload_prefix = keys.payload_prefix
        self._record_ttl_ms = str(int(options.batch_record_ttl * 1000))
        self.sequence = 0
        self._templates: dict[OperationCodec, list[bytes | str | int]] = {}
        # What every attempt needs, made once: the writer has one batch in
        # flight at a time, whose arguments and size are _argv_now and
        # _log_extra["events"].
        self._script_keys = (self._stream, self.record_key, keys.versions)
        self._wait = options.min_replicas
        self._wait_ms = int(options.replica_timeout * 1000)
        self._wait_extra = options.replica_timeout if self._wait else 0.0
        self._argv_now: list[bytes | str | int] = []
        self._log_extra: dict[str, Any] = {"stream": self._stream, "events": 0}

    def _template(self, operation: OperationCodec) -> list[bytes | str | int]:
        """The arguments describing OPERATION once per batch (see publish.lua)."""
        template = self._templates.get(operation)
        if template is None:
            spec = operation.operation
            fields = operation.field_names
            meta: list[bytes | str] = [
                F_OPERATION,
                spec.name,
                F_VERSION,
                str(spec.version),
                F_CONTRACT,
                spec.contract,
                F_PRODUCER,
                self.identity,
            ]
            template = [len(meta), *meta, len(fields), *fields]
            self._templates[operation] = template
        return template

    def _argv(self, items: list[Item], sequence: str) -> list[bytes | str | int]:
        """publish.lua's arguments for ITEMS as batch number SEQUENCE."""
        argv: list[bytes | str | int] = [
            self._payload_prefix,
            sequence,
            self._record_ttl_ms,
            len(items),
            0,  # the number of templates, set below
        ]
        if items:
            # The usual batch, one operation and no extra metadata: -1 template
            # and each event as its time and values.
            operation = items[0].operation
            short: list[bytes | str | int] = []
            for item in items:
                if item.operation is not operation or item.extra:
                    break
                short.append(item.millis)
                short.extend(item.values)
            else:
                argv[4] = -1
                argv.extend(self._template(operation))
                argv.extend(short)
                return argv
        numbers: dict[OperationCodec, int] = {}
        body: list[bytes | str | int] = []
        for item in items:
            number = numbers.get(item.operation)
            if number is None:
                number = numbers[item.operation] = len(numbers) + 1
                argv.extend(self._template(item.operation))
            body.append(number)
            body.append(item.millis)
            body.append(len(item.extra))
            if item.extra:
                body.extend(item.extra)
            body.extend(item.values)
        argv[4] = len(numbers)
        argv.extend(body)
        return argv

    def needs_marks(self, items: list[Item]) -> bool:
        """True when ITEMS hold an operation whose marks are not recorded yet."""
        marked = self._marked
        for item in items:  # noqa: SIM110 - no generator per call
            if item.operation not in marked:
                return True
        return False

    async def record_marks(self, items: list[Item]) -> None:
        """Record the version marks of the batch's operations, each once: an
        older producer on the same stream is then refused its retired versions."""
        new = {item.operation for item in items} - self._marked
        if new:
            # The whole contract's marks, so that a producer writing only some
            # operations still retires the old versions of the others.
            operations = {codec.operation for codec in new}
            if self.contract is not None:
                operations.update(self.contract.operations)
            if await record_marks(self.backbone, self.keys, operations):
                self._marked |= new  # else tried again with the next batch

    def _attempt_direct(self, remaining: float) -> Awaitable[tuple[Any, int]]:
        """One attempt of the batch in flight on the direct connection."""
        direct = self.backbone.direct
        assert direct is not None
        script = self.backbone.scripts.publish
        return run_script(
            direct,
            script.sha,
            script.source,
            self._script_keys,
            self._argv_now,
            replicas=self._wait,
            timeout_ms=self._wait_ms,
            deadline=time.monotonic() + remaining + self._wait_extra,
        )

    async def _attempt(self, remaining: float) -> tuple[Any, int]:
        """One attempt of the batch in flight through redis-py's client."""
        script = self.backbone.scripts.publish
        async with asyncio.timeout(remaining + self._wait_extra):
            return await script.append(
                self.backbone.redis,
                self._script_keys,
                self._argv_now,
                replicas=self._wait,
                timeout_ms=self._wait_ms,
            )

    def _what(self) -> str:
        return f"publish {self._log_extra['events']} event(s) to {self._stream}"

    def _refused(self, exc: Exception) -> BatchRefused:
        return BatchRefused(f"Redis refused to append to {self._stream}: {exc}")

    async def write(self, items: list[Item]) -> list[EventId]:
        """One atomic write of ITEMS, retried on transient errors until the timeout.

        The caller has one batch in flight at a time (the producer's send lock),
        so the batch record describes the batch being retried or an older one.
        Raises :class:`BatchRefused` when Redis refuses the batch,
        :class:`PublishTimeout` when it stays out of reach.
        """
        if self.needs_marks(items):
            await self.record_marks(items)
        self.sequence += 1
        sequence = str(self.sequence)
        self._argv_now = self._argv(items, sequence)
        self._log_extra["events"] = len(items)
        # WAIT holds its connection until the replicas answer: on the shared
        # direct connection it would hold up every read and ack behind it.
        direct = self.backbone.direct if not self._wait else None
        wait = self._wait
        raw, replicas = await until_answered(
            self._attempt if direct is None else self._attempt_direct,
            timeout=self.options.publish_timeout,
            what=self._what,
            where=self.backbone,
            refused=self._refused,
            log_extra=self._log_extra,
        )
        script = self.backbone.scripts.publish
        reply = script.reply(raw)
        stream = self._stream
        status = reply.status
        if status is PublishStatus.REFUSED:  # an earlier attempt's, answer lost
            raise BatchRefused(f"Redis refused to append to {stream}: {reply.detail}")
        if status is PublishStatus.RETIRED:
            raise refuse_retired(stream, reply.detail)
        if status is PublishStatus.STALE:
            # Not met in normal runs: the answer to a stale attempt goes to a
            # connection the producer has given up on.
            raise PublishError(
                f"batch {sequence} of this producer is older than batch "
                f"{reply.detail}, the last one recorded for it on {stream}; "
                "nothing was written (its events were written by an earlier "
                "attempt, or their callers were told it failed)"
            )
        ids = event_ids(stream, reply.ids)
        if status is PublishStatus.DUPLICATE and len(ids) != len(items):
            raise PublishError(
                f"a retried batch of {len(items)} event(s) was already written to "
                f"{self._stream}, but only {len(ids)} of its entries are still there "
                "(trimmed meanwhile); the events are not written twice"
            )
        self.backbone.notify_written(self._stream)
        if reply.deprecated:
            warn_deprecated(stream, reply.deprecated, self.warned)
        if ids and log.isEnabledFor(logging.DEBUG):
            log.debug(
                "wrote %d event(s) to %s: %s..%s",
                *(len(ids), stream, ids[0].id, ids[-1].id),
                extra={"stream": stream, "events": len(ids)},
            )
        if wait and replicas < wait:
            raise ReplicationTimeout(
                f"{len(ids)} event(s) written to {self._stream}, but only {replicas} "
                f"of {wait} replica(s) confirmed within "
                f"{self.options.replica_timeout:g}s; they are on the primary and would "
                "be lost only by a failover before the replicas catch up",
                list(ids),
                replicas,
            )
        return ids
