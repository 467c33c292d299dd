"""One event held by a subscription, as it moves from the reader to a worker."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..events import F_REDRIVE_ORIGIN, as_text, id_key

__all__ = ["Delivery", "before", "id_key", "logical_id", "pairs"]


@dataclasses.dataclass(slots=True)
class Delivery:
    """One event held by the subscription.

    From read.lua it comes with its operation, re-drive group, flat fields and
    payload VALUES in parameter order; from a claim or a recovery, with its
    fields already parsed and the same VALUES fetched separately. VERSION is the
    operation version the entry records (None: not a whole number); for a version
    older than the consumer's, VALUES is the whole payload hash as a flat
    field/value list instead, for the upcasters. FAULT is the text of a Redis
    error about this entry alone (its payload key is not a hash): the entry is
    dead-lettered with it.
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
