"""One atomic, version-checked append of an aggregate's events, retried until
it is known to be done, never written twice.

Each attempt is one ``EVALSHA`` of ``lua/append.lua`` with publish.lua's
arguments (built by :class:`~backbone.writer.Writer`, so entries and payloads
are laid out exactly as a producer's) behind the expected version and the
aggregate id. Retries reuse the producer's batch record: an attempt carries a
batch number, a retry the same one, and the script answers a retry of a batch
that was written with its entries instead of checking the version again (which
would now fail). A batch record holds one batch in flight, so the appender keeps
a small pool of records ("slots"): concurrent appends each take one, and a slot's
batch numbers only grow, so a late attempt of an old batch writes nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
from typing import TYPE_CHECKING

from ..errors import (
    ConcurrencyError,
    ConfigurationError,
    PublishError,
)
from ..events import EventId, event_ids
from ..retrying import until_answered
from ..versions import refuse_retired, warn_deprecated
from ..write_scripts import AppendReply, AppendStatus
from ..writer import Item, Writer
from .expected import ExpectedVersion, wire

if TYPE_CHECKING:
    from ..connection import Backbone
    from ..contract import ContractSpec
    from ..keys import StreamKeys
    from ..producer_options import ProducerOptions

__all__ = ["Appended", "Appender"]

log = logging.getLogger("backbone.store")


@dataclasses.dataclass(frozen=True, slots=True)
class Appended:
    """What an append wrote: the events' ids and the aggregate's new version."""

    ids: list[EventId]
    version: int


@dataclasses.dataclass(slots=True)
class _Slot:
    record: str
    sequence: int = 0


class Appender:
    """Appends events of the aggregates of one stream."""

    def __init__(
        self,
        backbone: Backbone,
        keys: StreamKeys,
        identity: str,
        options: ProducerOptions,
        contract: ContractSpec | None = None,
    ) -> None:
        self.backbone = backbone
        self.keys = keys
        self.options = options
        self._writer = Writer(backbone, keys, identity, options, contract)
        self._records = keys.writer(f"{identity}:{secrets.token_hex(6)}")
        self._idle: list[_Slot] = []
        self._slots = 0

    def _take(self) -> _Slot:
        if self._idle:
            return self._idle.pop()
        self._slots += 1
        return _Slot(f"{self._records}:{self._slots}")

    async def append(
        self,
        aggregate_id: str,
        items: list[Item],
        expected: int | ExpectedVersion,
    ) -> Appended:
        """Write ITEMS as the next events of AGGREGATE_ID if its version meets
        EXPECTED. Raises :class:`ConcurrencyError` (nothing written) when it does
        not, :class:`PublishError` when Redis refuses the write,
        :class:`PublishTimeout` when Redis stays out of reach."""
        rule = wire(expected)
        index = self.keys.aggregate(aggregate_id)
        if len(items) > self.options.max_atomic_batch:
            raise ConfigurationError(
                f"{len(items)} events for aggregate {aggregate_id!r} exceed "
                f"ProducerOptions.max_atomic_batch ({self.options.max_atomic_batch}); "
                "save more often, or raise it"
            )
        await self._writer.record_marks(items)
        slot = self._take()
        try:
            slot.sequence += 1
            argv = self._writer._argv(items, str(slot.sequence))
            reply = await self._attempts(slot, index, rule, aggregate_id, argv)
        finally:
            self._idle.append(slot)
        stream = self.keys.stream
        if reply.status is AppendStatus.CONFLICT:
            raise ConcurrencyError(aggregate_id, stream, expected, reply.version)
        if reply.status is AppendStatus.RETIRED:
            raise refuse_retired(stream, reply.detail)
        if reply.status is AppendStatus.REFUSED:
            raise PublishError(
                f"Redis refused to append to aggregate {aggregate_id!r} of "
                f"{stream}: {reply.detail}"
            )
        if reply.status is AppendStatus.STALE:  # pragma: no cover - see Writer
            raise PublishError(
                f"an append to {stream} is older than batch {reply.detail} of its "
                "appender; nothing was written"
            )
        if len(reply.ids) != len(items):
            raise PublishError(
                f"a retried append of {len(items)} event(s) was already written to "
                f"{stream}, but only {len(reply.ids)} of its entries are still there "
                "(trimmed meanwhile); the events are not written twice"
            )
        self.backbone.notify_written(stream)
        if reply.deprecated:
            warn_deprecated(stream, reply.deprecated, self._writer.warned)
        return Appended(event_ids(stream, reply.ids), reply.version)

    async def _attempts(
        self,
        slot: _Slot,
        index: str,
        rule: str,
        aggregate_id: str,
        argv: list[bytes | str | int],
    ) -> AppendReply:
        """Run the script until an attempt is answered (transient failures are
        retried with the same batch number until ``publish_timeout``)."""
        stream = self.keys.stream

        async def attempt(remaining: float) -> AppendReply:
            async with asyncio.timeout(remaining):
                return await self.backbone.scripts.append.append(
                    self.backbone.redis,
                    stream=stream,
                    index=index,
                    record=slot.record,
                    marks=self.keys.versions,
                    expected=rule,
                    aggregate_id=aggregate_id,
                    argv=argv,
                )

        return await until_answered(
            attempt,
            timeout=self.options.publish_timeout,
            what=lambda: f"append to aggregate {aggregate_id!r} of {stream}",
            where=self.backbone,
            refused=lambda exc: PublishError(
                f"Redis refused to append to aggregate {aggregate_id!r} of "
                f"{stream}: {exc}"
            ),
            log_extra={"stream": stream, "aggregate": aggregate_id},
        )
