"""Inspecting and re-driving dead letters.

A dead letter is an entry of ``<stream>:dlq`` naming the event (its entry id),
the group that gave up on it, the reason, the error and the number of
deliveries; a copy of the event's payload hash sits beside it, so the payload
stays readable even after the stream is trimmed.

Re-driving appends the event to the stream again, marked for its group only
(other groups skip it), with a copy of its payload; the handler's context names
the original event id.
"""

from __future__ import annotations

import builtins
import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from .codec import unpack_value
from .events import EventId

if TYPE_CHECKING:
    from .connection import Backbone
    from .keys import StreamKeys

__all__ = ["DeadLetter", "DeadLetters"]


def _s(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead letter, as stored."""

    id: str
    event_id: EventId
    group: str
    consumer: str
    handler: str
    reason: str
    error_type: str
    error_message: str
    traceback: str
    deliveries: int
    at: dt.datetime | None
    metadata: dict[str, str]

    @property
    def operation(self) -> str:
        return self.metadata.get("o", "")

    @classmethod
    def from_entry(
        cls,
        stream: str,
        entry_id: bytes | str | None,
        fields: Mapping[bytes | str, bytes | str] | None,
    ) -> DeadLetter:
        f = {_s(k): v for k, v in (fields or {}).items()}
        at_text = _s(f.get("at"))
        deliveries = _s(f.get("n"))
        return cls(
            id=_s(entry_id),
            event_id=EventId(stream, _s(f.get("id"))),
            group=_s(f.get("g")),
            consumer=_s(f.get("cn")),
            handler=_s(f.get("h")),
            reason=_s(f.get("r")),
            error_type=_s(f.get("et")),
            error_message=_s(f.get("em")),
            traceback=_s(f.get("tb")),
            deliveries=int(deliveries) if deliveries.isdigit() else 0,
            at=(
                dt.datetime.fromtimestamp(int(at_text) / 1000, tz=dt.UTC)
                if at_text.isdigit()
                else None
            ),
            metadata={k[2:]: _s(v) for k, v in f.items() if k.startswith("m:")},
        )


class DeadLetters:
    """The dead letters of one stream."""

    def __init__(self, backbone: Backbone, uri: str) -> None:
        self.backbone = backbone
        self.keys: StreamKeys = backbone.keys(uri)

    async def count(self) -> int:
        return int(await self.backbone.redis.xlen(self.keys.dead_letters))

    async def list(
        self, *, group: str | None = None, limit: int = 100, after: str = "-"
    ) -> builtins.list[DeadLetter]:
        """Dead letters oldest first (of GROUP only, when given), at most LIMIT."""
        found: builtins.list[DeadLetter] = []
        start = after
        while len(found) < limit:
            page = await self.backbone.redis.xrange(
                self.keys.dead_letters, min=start, max="+", count=max(limit, 100)
            )
            if not page:
                break
            for entry_id, fields in page:
                letter = DeadLetter.from_entry(self.keys.stream, entry_id, fields)
                if group is None or letter.group == group:
                    found.append(letter)
                    if len(found) >= limit:
                        break
            start = "(" + _s(page[-1][0])
        return found

    async def get(self, dlq_id: str) -> DeadLetter | None:
        page = await self.backbone.redis.xrange(
            self.keys.dead_letters, min=dlq_id, max=dlq_id
        )
        if not page:
            return None
        entry_id, fields = page[0]
        return DeadLetter.from_entry(self.keys.stream, entry_id, fields)

    async def payload(self, letter: DeadLetter) -> dict[str, Any]:
        """The dead letter's payload, each field decoded from msgpack (untyped)."""
        key = self.keys.dead_letter_payload(letter.group, letter.event_id.id)
        raw = cast(dict[bytes, bytes], await self.backbone.redis.hgetall(key))
        decoded: dict[str, Any] = {}
        for name, value in raw.items():
            try:
                decoded[_s(name)] = unpack_value(value)
            except Exception as exc:
                decoded[_s(name)] = f"<undecodable: {type(exc).__name__}: {exc}>"
        return decoded

    async def retry(self, dlq_ids: Sequence[str]) -> builtins.list[EventId]:
        """Re-drive the dead letters DLQ_IDS to their groups; returns the new ids.

        Ids that are no longer dead letters are skipped.
        """
        new_ids: builtins.list[EventId] = []
        for dlq_id in dlq_ids:
            letter = await self.get(dlq_id)
            if letter is None:
                continue
            result = await self.backbone.scripts.redrive.run(
                self.backbone.redis,
                (
                    self.keys.stream,
                    self.keys.dead_letters,
                    self.keys.dead_letter_payload(letter.group, letter.event_id.id),
                ),
                (dlq_id, self.keys.payload_prefix),
            )
            if result:
                new_ids.append(EventId(self.keys.stream, _s(result)))
        if new_ids:
            self.backbone.notify_written(self.keys.stream)
        return new_ids

    async def purge(self, dlq_ids: Sequence[str]) -> int:
        """Delete dead letters DLQ_IDS and their payload copies; returns how many."""
        removed = 0
        for dlq_id in dlq_ids:
            letter = await self.get(dlq_id)
            if letter is None:
                continue
            async with self.backbone.redis.pipeline(transaction=True) as pipe:
                pipe.xdel(self.keys.dead_letters, dlq_id)
                pipe.delete(
                    self.keys.dead_letter_payload(letter.group, letter.event_id.id)
                )
                deleted, _ = await pipe.execute()
            removed += int(deleted)
        return removed

    async def all_ids(self, *, group: str | None = None) -> builtins.list[str]:
        """Every dead letter's id (of GROUP only, when given)."""
        ids: builtins.list[str] = []
        start = "-"
        while True:
            page = await self.backbone.redis.xrange(
                self.keys.dead_letters, min=start, max="+", count=1000
            )
            if not page:
                return ids
            for entry_id, fields in page:
                if group is None or _s((fields or {}).get(b"g")) == group:
                    ids.append(_s(entry_id))
            start = "(" + _s(page[-1][0])
