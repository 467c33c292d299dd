"""The repository of one kind of aggregate on one stream: load, save, execute a
command with retries on conflicts, read an aggregate's events."""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import pydantic

from ..errors import ConcurrencyError, ConfigurationError
from ..keyring import Keyring, seal_items
from ..keys import StreamKeys, validate_aggregate_id
from ..partitions import agree, check_count, partition_for
from ..producer import Producer
from ..producer_options import ProducerOptions, default_identity
from ..retrying import until_answered
from ..sealing import collect_key_ids
from ..writer import Item
from .aggregate import Aggregate
from .appender import Appender
from .expected import ExpectedVersion
from .history import RecordedEvent, read_range
from .snapshots import load_snapshot, store_snapshot

log = logging.getLogger("backbone.store")

if TYPE_CHECKING:
    from ..connection import Backbone
    from ..events import EventId

__all__ = ["Repository"]

A = TypeVar("A", bound=Aggregate[Any])

PAGE = 500
"""Events read per round trip when loading an aggregate."""


def _state_adapter(aggregate: Aggregate[Any]) -> pydantic.TypeAdapter[Any]:
    """pydantic's adapter of AGGREGATE's state type, for its snapshots."""
    state_type = type(aggregate.state)
    try:
        return pydantic.TypeAdapter(state_type)
    except pydantic.PydanticUserError as exc:
        raise ConfigurationError(
            f"{type(aggregate).__qualname__} takes snapshots (snapshot_every = "
            f"{type(aggregate).snapshot_every}), but its state, a "
            f"{state_type.__qualname__}, is not a type pydantic can store ({exc}); "
            "make the state a pydantic model or a dataclass, or set "
            "snapshot_every = 0"
        ) from exc


class Repository(Generic[A]):
    """Aggregates made by FACTORY (a class with a no-argument constructor, say),
    their events on stream URI of BACKBONE.

    ``options`` are a producer's: ``identity``, ``publish_timeout`` (retries of
    an append whose answer was lost), ``batch_record_ttl`` and
    ``max_atomic_batch`` (the most events one save writes) apply.

    On a partitioned stream (the contract's ``partitions``, or PARTITIONS) each
    aggregate lives in the partition of its id, with its index and snapshot:
    its append, version check and index stay one atomic step in one slot.
    """

    def __init__(
        self,
        backbone: Backbone,
        uri: str,
        factory: Callable[[], A],
        *,
        options: ProducerOptions | None = None,
        partitions: int | None = None,
    ) -> None:
        self.backbone = backbone
        self.keys = backbone.keys(uri)
        """The keys of the whole stream (see :meth:`keys_of` for an aggregate's)."""
        self.factory = factory
        probe = factory()
        if not isinstance(probe, Aggregate) or getattr(probe, "contract", None) is None:
            raise ConfigurationError(
                f"{factory!r} makes {type(probe).__qualname__}, not an aggregate; "
                "derive the class from the <Contract>Aggregate base that `backbone "
                "codegen` writes into the contract's generated module"
            )
        self.contract = probe.contract
        self._snapshots: pydantic.TypeAdapter[Any] | None = None
        if type(probe).snapshot_every > 0:
            self._snapshots = _state_adapter(probe)
        self.options = options or ProducerOptions()
        identity = self.options.identity or default_identity()
        self.partitions = check_count(
            self.contract.spec.partitions if partitions is None else partitions
        )
        if self.keys.partition is not None and self.partitions > 1:
            raise ConfigurationError(
                f"{uri!r} names one partition; give the repository the whole "
                f"stream ({self.keys.uri!r}): each aggregate's partition follows "
                "from its id"
            )
        self._appenders = [
            Appender(backbone, keys, identity, self.options, self.contract.spec)
            for keys in self._all_keys()
        ]
        self._agreed = self.keys.partition is not None
        self._keyring = Keyring.of(backbone)

    def _all_keys(self) -> list[StreamKeys]:
        if self.partitions == 1:
            return [self.keys]
        return [self.keys.of_partition(p) for p in range(self.partitions)]

    def _partition(self, aggregate_id: str) -> int:
        if self.partitions == 1:
            return 0
        return partition_for(aggregate_id, self.partitions)

    def keys_of(self, aggregate_id: str) -> StreamKeys:
        """The keys of the stream (partition) AGGREGATE_ID's events live in."""
        if self.partitions == 1:
            return self.keys
        return self.keys.of_partition(self._partition(aggregate_id))

    async def _agree(self) -> None:
        if not self._agreed:
            await agree(self.backbone, self.keys, self.partitions)
            self._agreed = True

    @property
    def stream(self) -> str:
        return self.keys.stream

    # --- loading ----------------------------------------------------------------

    async def load(self, aggregate_id: str) -> A:
        """The aggregate AGGREGATE_ID: its latest usable snapshot, then its events
        after it folded in. One without events is new (version 0).

        Reads change nothing, so a lost connection is retried (from the start,
        with a fresh instance) until ``publish_timeout``, like an append."""
        validate_aggregate_id(aggregate_id)
        return await until_answered(
            lambda _remaining: self._load(aggregate_id),
            timeout=self.options.publish_timeout,
            what=lambda: f"load aggregate {aggregate_id!r} of {self.keys.stream}",
            where=self.backbone,
            refused=None,
            log_extra={"stream": self.keys.stream, "aggregate": aggregate_id},
        )

    async def _load(self, aggregate_id: str) -> A:
        await self._agree()
        keys = self.keys_of(aggregate_id)
        aggregate = self.factory()
        aggregate.id = aggregate_id
        if self._snapshots is not None:
            found = await load_snapshot(
                self.backbone,
                keys.snapshot(aggregate_id),
                self._snapshots,
                type(aggregate).snapshot_schema,
            )
            if found is not None:
                state, version, key_ids = found
                length = await self.version(aggregate_id)
                if version <= length:
                    aggregate.state, aggregate.version = state, version
                    aggregate._key_ids |= key_ids
                else:
                    # A cache that claims more events than the aggregate has is
                    # wrong (written by hand, or its index was replaced): replay.
                    log.warning(
                        "aggregate %s of %s: its snapshot is at version %d but it "
                        "has %d event(s); ignoring the snapshot",
                        aggregate_id,
                        keys.stream,
                        version,
                        length,
                    )
        while True:
            first = aggregate.version + 1
            events = await read_range(
                self.backbone.redis,
                keys,
                self.contract,
                aggregate_id,
                first,
                first + PAGE - 1,
            )
            for event in events:
                aggregate.apply(
                    self.contract.spec.operation(event.operation), event.args
                )
                aggregate.version = event.version
                aggregate._key_ids |= event.key_ids
            if len(events) < PAGE:
                return aggregate

    async def version(self, aggregate_id: str) -> int:
        """AGGREGATE_ID's version: the number of its events (0: none)."""
        length: int = await self.backbone.redis.llen(
            self.keys_of(aggregate_id).aggregate(aggregate_id)
        )
        return length

    # --- saving -----------------------------------------------------------------

    async def save(
        self, aggregate: A, *, expected: int | ExpectedVersion | None = None
    ) -> list[EventId]:
        """Append the events AGGREGATE recorded since it was loaded, if its version
        in Redis is still the one it was loaded at (or meets EXPECTED), in one
        atomic step; then store a snapshot when one is due.

        Raises :class:`~backbone.ConcurrencyError` (nothing written; load again
        and retry, or use :meth:`execute`) when the version does not match.
        """
        if not aggregate.id:
            raise ConfigurationError(
                f"this {type(aggregate).__qualname__} has no id: get aggregates from "
                "Repository.load(id), which also gives a new one its id"
            )
        pending = aggregate.pending_events()
        if not pending:
            return []
        before = aggregate.version
        rule = before if expected is None else expected
        extra = Producer._extra_meta()
        millis = time.time_ns() // 1_000_000
        items = [Item(op, millis, extra, values, None) for op, values in pending]
        await seal_items(
            self._keyring,
            items,
            aggregate_id=aggregate.id,
            timeout=self.options.publish_timeout,
        )
        for item in items:
            collect_key_ids(item.values, aggregate._key_ids)
        await self._agree()
        appender = self._appenders[self._partition(aggregate.id)]
        appended = await appender.append(aggregate.id, items, rule)
        aggregate.mark_saved(len(pending), appended.version)
        every = type(aggregate).snapshot_every
        # Only a state known to be that of the new version is stored: after an
        # append that skipped the check (ANY, EXISTS) others' events may be
        # in between, which this instance has not seen.
        consistent = appended.version == before + len(pending)
        due = every > 0 and appended.version // every > before // every
        if self._snapshots is not None and consistent and due:
            await store_snapshot(
                self.backbone,
                self.keys_of(aggregate.id).snapshot(aggregate.id),
                self._snapshots,
                aggregate.state,
                appended.version,
                type(aggregate).snapshot_schema,
                frozenset(aggregate._key_ids),
            )
        return appended.ids

    async def execute(
        self,
        aggregate_id: str,
        command: Callable[[A], object],
        *,
        attempts: int = 10,
    ) -> A:
        """Load AGGREGATE_ID, run COMMAND on it (a function, sync or async, that
        records events), save it; on a :class:`~backbone.ConcurrencyError` do it
        all again, up to ATTEMPTS times in all, after a short random pause.

        Returns the saved aggregate. When every attempt conflicts, raises a
        ConcurrencyError naming the attempts. An exception of COMMAND propagates
        (nothing is saved).
        """
        if attempts < 1:
            raise ConfigurationError(f"attempts must be >= 1, not {attempts!r}")
        pause = 0.002
        for attempt in range(1, attempts + 1):
            aggregate = await self.load(aggregate_id)
            outcome = command(aggregate)
            if inspect.isawaitable(outcome):
                await outcome
            try:
                await self.save(aggregate)
                return aggregate
            except ConcurrencyError as exc:
                if attempt == attempts:
                    raise ConcurrencyError(
                        exc.aggregate_id,
                        exc.stream,
                        exc.expected,
                        exc.actual,
                        attempts=attempts,
                    ) from exc
            await asyncio.sleep(random.uniform(0, pause))
            pause = min(pause * 2, 0.1)
        raise AssertionError("unreachable")  # pragma: no cover

    # --- reading ----------------------------------------------------------------

    async def events(
        self,
        aggregate_id: str,
        *,
        start: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
    ) -> list[RecordedEvent]:
        """AGGREGATE_ID's events from version START (inclusive), in version order,
        or with BACKWARDS from START down to version 1 (START defaults to the
        first, backwards to the last); at most LIMIT of them. Reads only this
        aggregate's entries, through its index."""
        if start is not None and start < 1:
            raise ConfigurationError(f"start is a version >= 1, not {start!r}")
        if limit is not None and limit < 0:
            raise ConfigurationError(f"limit must be >= 0, not {limit!r}")
        if limit == 0:
            return []
        redis = self.backbone.redis
        if backwards:
            last = start if start is not None else await self.version(aggregate_id)
            first = 1 if limit is None else max(1, last - limit + 1)
            found = await read_range(
                redis,
                self.keys_of(aggregate_id),
                self.contract,
                aggregate_id,
                first,
                last,
            )
            return found[::-1]
        first = start or 1
        if limit is None:
            last = max(await self.version(aggregate_id), first)
        else:
            last = first + limit - 1
        return await read_range(
            redis, self.keys_of(aggregate_id), self.contract, aggregate_id, first, last
        )
