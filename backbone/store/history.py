"""Reading an aggregate's events through its index, never scanning the stream.

The index (``<stream>:agg:<id>``) lists the aggregate's entry ids in version
order: the event of version V is at position V - 1. A read takes a range of it
(``LRANGE``), then each entry (``XRANGE id id``, a lookup by id) and its payload
hash (``HGETALL``) in one pipeline: its cost grows with the events read, not
with the stream. Sealed personal values are opened with one read of the
keyring for the range (``ERASED`` where the subject was erased).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import DecodeError
from ..events import (
    F_AGGREGATE,
    F_CONTRACT,
    F_OPERATION,
    F_VERSION,
    EventId,
    as_text,
    entry_version,
)
from ..keyring import Keyring, open_payloads
from ..sealing import SealError

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from ..dispatch import CompiledContract
    from ..keys import StreamKeys

__all__ = ["RecordedEvent", "read_range"]


@dataclasses.dataclass(frozen=True, slots=True)
class RecordedEvent:
    """One stored event of an aggregate, decoded with its contract's codecs."""

    aggregate_id: str
    version: int
    """Its position in the aggregate: 1 for the first event."""
    id: EventId
    """Its entry id: its position in the contract's stream."""
    operation: str
    """The operation's wire name."""
    method: str
    """The operation's method name (``apply_<method>`` folds it)."""
    args: tuple[Any, ...]
    """The arguments, in parameter order, typed as the contract declares."""
    parameters: tuple[str, ...]
    metadata: Mapping[str, str]
    """The stream entry's fields (``o``, ``v``, ``c``, ``p``, ``a``, ``t``, ...;
    see docs/redis-layout.md)."""
    key_ids: frozenset[bytes] = frozenset()
    """The key ids of the subjects whose personal values it holds, opened (not
    erased): a snapshot of a state built from it is sealed with their keys."""

    @property
    def named(self) -> dict[str, Any]:
        """The arguments by parameter name."""
        return dict(zip(self.parameters, self.args, strict=True))

    @property
    def produced_at(self) -> dt.datetime | None:
        """The producer's clock when it was recorded (None when unreadable)."""
        try:
            return dt.datetime.fromtimestamp(int(self.metadata["t"]) / 1000, dt.UTC)
        except (KeyError, ValueError, OverflowError, OSError):
            return None


async def read_range(
    client: aioredis.Redis,
    keys: StreamKeys,
    contract: CompiledContract,
    aggregate_id: str,
    first: int,
    last: int,
) -> list[RecordedEvent]:
    """The events of versions FIRST..LAST (inclusive, 1-based) that exist, in
    version order. Raises :class:`DecodeError` for an event that cannot be read
    (its entry trimmed, its payload undecodable), naming it."""
    if last < first or last < 1:
        return []
    first = max(first, 1)
    index = keys.aggregate(aggregate_id)
    raw_ids = await client.lrange(index, first - 1, last - 1)
    if not raw_ids:
        return []
    ids = [as_text(raw) for raw in raw_ids]
    async with client.pipeline(transaction=False) as pipe:
        for entry_id in ids:
            pipe.xrange(keys.stream, entry_id, entry_id)
            pipe.hgetall(keys.payload(entry_id))
        replies = await pipe.execute()
    payloads = replies[1::2]
    opened = await open_payloads(Keyring(client, keys.environment), payloads)
    return [
        _decode(
            keys,
            contract,
            aggregate_id,
            first + n,
            entry_id,
            replies[2 * n],
            payloads[n],
            opened[n],
        )
        for n, entry_id in enumerate(ids)
    ]


def _decode(
    keys: StreamKeys,
    contract: CompiledContract,
    aggregate_id: str,
    version: int,
    entry_id: str,
    entries: list[tuple[bytes, dict[bytes, bytes]]],
    payload: dict[bytes, bytes],
    opened: SealError | frozenset[bytes],
) -> RecordedEvent:
    where = f"event {version} of aggregate {aggregate_id!r} ({keys.stream} {entry_id})"
    if not entries:
        raise DecodeError(
            "missing-payload",
            f"{where} is no longer in the stream (trimmed or deleted); an event "
            "store's stream must not be trimmed",
        )
    fields = entries[0][1]
    contract_name = as_text(fields.get(F_CONTRACT))
    operation = as_text(fields.get(F_OPERATION))
    if contract_name != contract.name or as_text(fields.get(F_AGGREGATE)) != (
        aggregate_id
    ):
        raise DecodeError(
            "malformed-entry",
            f"{where} is an event of contract {contract_name!r} for aggregate "
            f"{as_text(fields.get(F_AGGREGATE))!r}, not of {contract.name} for "
            f"{aggregate_id!r}: its index is damaged",
        )
    codec = contract.codecs.get(operation)
    if codec is None:
        known = ", ".join(contract.codecs)
        raise DecodeError(
            "unknown-operation",
            f"{where} is a {operation!r} event, which contract {contract.name} does "
            f"not have (known: {known}); load it with the contract's current code",
        )
    if isinstance(opened, SealError):
        raise DecodeError("undecodable", f"{where}: {opened}")
    try:
        args = codec.decode(payload, entry_version(fields.get(F_VERSION)))
    except DecodeError as exc:
        raise DecodeError(exc.reason, f"{where}: {exc}") from exc
    spec = codec.operation
    return RecordedEvent(
        aggregate_id=aggregate_id,
        version=version,
        id=EventId(keys.stream, entry_id),
        operation=spec.name,
        method=spec.method,
        args=tuple(args),
        parameters=codec.parameter_names,
        metadata={as_text(k): as_text(v) for k, v in fields.items()},
        key_ids=opened,
    )
