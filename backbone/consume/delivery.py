"""One event held by a subscription, as it moves from the reader to a worker."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..events import F_REDRIVE_ORIGIN, as_text, id_key
from ..keyring import open_payloads
from ..sealing import SealError

if TYPE_CHECKING:
    from ..codec import OperationCodec
    from ..keyring import Keyring

__all__ = ["Delivery", "before", "id_key", "logical_id", "open_sealed", "pairs"]


@dataclasses.dataclass(slots=True)
class Delivery:
    """One event held by the subscription.

    From read.lua it comes with its operation, re-drive group, flat fields and
    payload VALUES in parameter order; from a claim or a recovery, with its
    fields already parsed and the same VALUES fetched separately. VERSION is the
    operation version the entry records (None: not a whole number); for another
    version than the consumer's, VALUES is the whole payload hash as a flat
    field/value list instead (for the upcasters of an older one). FAULT is the
    text of a Redis error about this entry alone (its payload key is not a
    hash): the entry is dead-lettered with it. Sealed personal values among
    VALUES are opened (:func:`open_sealed`) before a worker sees them; DAMAGED
    says why one could not be (the entry is dead-lettered ``undecodable``).
    """

    entry_id: str
    flat: list[bytes] | None
    delivery_count: int
    touched: float
    op: bytes | None = None
    only: bytes | None = None
    values: list[bytes | None] | None = None
    done_mark: bool = False
    acked: bool = False
    parsed: dict[bytes, bytes] | None = None
    fault: str | None = None
    version: int | None = 1
    damaged: str | None = None

    @property
    def fields(self) -> dict[bytes, bytes]:
        """The stream entry's fields (empty when the entry was deleted)."""
        if self.parsed is None:
            self.parsed = pairs(self.flat)
        return self.parsed


def pairs(flat: list[Any] | None) -> dict[bytes, bytes]:
    """A flat [field, value, ...] reply as a dict."""
    if not flat:
        return {}
    it = iter(flat)
    return dict(zip(it, it))  # noqa: B905 - pairs by construction


def logical_id(d: Delivery) -> str:
    """The event's own id: the original one for a re-driven entry."""
    origin = d.fields.get(F_REDRIVE_ORIGIN)
    return as_text(origin) if origin else d.entry_id


def before(entry_id: str) -> str:
    """The id just before ENTRY_ID (to start a group at an entry, inclusive)."""
    ms_text, _, seq_text = entry_id.partition("-")
    ms, seq = int(ms_text), int(seq_text or "0")
    if seq > 0:
        return f"{ms}-{seq - 1}"
    if ms > 0:
        return f"{ms - 1}-18446744073709551615"
    return "0-0"


async def open_sealed(
    keyring: Keyring,
    deliveries: Sequence[Delivery],
    codecs: Mapping[bytes, OperationCodec],
) -> None:
    """Open the sealed personal values of DELIVERIES (CODECS: the handled
    operations, by name) with one read of the keyring. Only payloads that may
    hold some are looked at: of an operation with personal parameters, or of
    another version than the consumer's (any field may be sealed there)."""
    chosen: list[Delivery] = []
    for d in deliveries:
        codec = codecs.get(d.op) if d.op is not None else None
        if (
            d.values
            and codec is not None
            and (codec.personal or d.version != codec.version)
        ):
            chosen.append(d)
    if not chosen:
        return
    outcomes = await open_payloads(keyring, [d.values for d in chosen])
    for d, outcome in zip(chosen, outcomes, strict=True):
        if isinstance(outcome, SealError):
            d.damaged = f"field {_name(d, codecs, outcome.field)!r}: {outcome}"


def _name(
    d: Delivery, codecs: Mapping[bytes, OperationCodec], at: bytes | int | None
) -> str:
    """The name of the payload field at position AT of D's values."""
    codec = codecs.get(d.op) if d.op is not None else None
    if not isinstance(at, int) or codec is None or d.values is None:
        return "?"
    if d.version is not None and d.version != codec.version:  # field, value, ...
        return as_text(d.values[at - 1]) if at % 2 else "?"
    names = codec.parameter_names
    return names[at] if at < len(names) else "?"
