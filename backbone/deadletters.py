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
import enum
import traceback as tb
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, cast

import redis.exceptions as rex

from .codec import unpack_value
from .events import EventId, as_text
from .keyring import Keyring, open_for_display
from .slot_node import transaction

if TYPE_CHECKING:
    from .connection import Backbone
    from .keys import StreamKeys

__all__ = ["DeadLetter", "DeadLetterReason", "DeadLetters"]

_MAX_ERROR_TEXT: Final = 2000


class DeadLetterReason(enum.StrEnum):
    """Why an event was dead-lettered (compares equal to its text)."""

    MALFORMED_ENTRY = "malformed-entry"
    """The stream entry has no operation field."""
    UNKNOWN_OPERATION = "unknown-operation"
    """The consumer's contract has no such operation (a newer producer?)."""
    MISSING_PAYLOAD = "missing-payload"
    """The payload hash does not exist."""
    UNREADABLE_PAYLOAD = "unreadable-payload"
    """The payload key exists but Redis cannot read it as a hash (WRONGTYPE)."""
    UNDECODABLE = "undecodable"
    """A payload field is not valid msgpack."""
    INVALID_PAYLOAD = "invalid-payload"
    """A payload value does not fit its parameter's annotation, or is missing."""
    NEWER_VERSION = "newer-version"
    """Written by a newer version of the operation whose payload this consumer's
    version cannot read (regenerate the consumer from the newer contract)."""
    UPCAST_FAILED = "upcast-failed"
    """An upcaster raised, or returned something other than a mapping."""
    HANDLER_ERROR = "handler-error"
    """The handler failed on every one of ``max_deliveries`` deliveries."""
    TOO_MANY_DELIVERIES = "too-many-deliveries"
    """Delivered more than ``max_deliveries`` times (consumers died handling it)."""


# The schema of a dead-letter entry: field names, written by to_fields() and read
# by from_entry(); "m:<name>" fields copy the event's stream entry.
_ID, _GROUP, _CONSUMER, _HANDLER = "id", "g", "cn", "h"
_REASON, _ERROR_TYPE, _ERROR_MESSAGE, _TRACEBACK = "r", "et", "em", "tb"
_DELIVERIES, _AT, _META, _NOT_COPIED = "n", "at", "m:", "mx"
# Most fields of the event's entry a dead letter copies ("mx": how many more).
MAX_COPIED_FIELDS: Final = 1000
GROUP_FIELD: Final = _GROUP


@dataclasses.dataclass(frozen=True, slots=True)
class DeadLetter:
    """One dead letter: an event a consumer group gave up on, and why."""

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
    def of(
        cls,
        event_id: EventId,
        *,
        group: str,
        consumer: str,
        handler: str,
        reason: DeadLetterReason | str,
        error: BaseException | str,
        deliveries: int,
        metadata: Mapping[bytes, bytes],
    ) -> DeadLetter:
        """A new dead letter (not yet written) for an error or a message."""
        if isinstance(error, BaseException):
            error_type = type(error).__qualname__
            module = type(error).__module__
            if module not in ("builtins", "__main__"):
                error_type = f"{module}.{error_type}"
            message = str(error) or repr(error)
            trace = "".join(tb.format_exception(error)[-12:])
        else:
            error_type, message, trace = str(reason), error, ""
        return cls(
            id="",
            event_id=event_id,
            group=group,
            consumer=consumer,
            handler=handler,
            reason=str(reason),
            error_type=error_type,
            error_message=message[:_MAX_ERROR_TEXT],
            traceback=trace[-_MAX_ERROR_TEXT * 2 :],
            deliveries=deliveries,
            at=dt.datetime.now(dt.UTC),
            metadata={as_text(k): as_text(v) for k, v in metadata.items()},
        )

    def to_fields(self, entry_fields: Mapping[bytes, bytes]) -> list[bytes | str]:
        """The dead-letter stream entry's field/value list. ENTRY_FIELDS are the
        event's stream entry fields, copied byte for byte (re-driving rebuilds
        the entry from them)."""
        at = self.at or dt.datetime.now(dt.UTC)
        fields: list[bytes | str] = [
            _ID,
            self.event_id.id,
            _GROUP,
            self.group,
            _CONSUMER,
            self.consumer,
            _HANDLER,
            self.handler,
            _REASON,
            self.reason,
            _ERROR_TYPE,
            self.error_type,
            _ERROR_MESSAGE,
            self.error_message,
            _DELIVERIES,
            str(self.deliveries),
            _AT,
            str(int(at.timestamp() * 1000)),
        ]
        if self.traceback:
            fields += [_TRACEBACK, self.traceback]
        for copied, (name, value) in enumerate(entry_fields.items()):
            if copied == MAX_COPIED_FIELDS:
                # An entry of thousands of fields is garbage, not an event; Lua
                # could not even pass them all to XADD.
                fields += [_NOT_COPIED, str(len(entry_fields) - copied)]
                break
            fields += [_META.encode() + name, value]
        return fields

    @classmethod
    def from_entry(
        cls,
        stream: str,
        entry_id: bytes | str | None,
        fields: Mapping[bytes | str, bytes | str] | None,
    ) -> DeadLetter:
        """Read a dead-letter stream entry (whatever it holds: missing or odd
        fields read as empty)."""
        f = {as_text(k): v for k, v in (fields or {}).items()}
        at_text = as_text(f.get(_AT))
        deliveries = as_text(f.get(_DELIVERIES))
        at = None
        if at_text.isdigit():
            try:
                at = dt.datetime.fromtimestamp(int(at_text) / 1000, tz=dt.UTC)
            except (OverflowError, OSError, ValueError):
                at = None
        return cls(
            id=as_text(entry_id),
            event_id=EventId(stream, as_text(f.get(_ID))),
            group=as_text(f.get(_GROUP)),
            consumer=as_text(f.get(_CONSUMER)),
            handler=as_text(f.get(_HANDLER)),
            reason=as_text(f.get(_REASON)),
            error_type=as_text(f.get(_ERROR_TYPE)),
            error_message=as_text(f.get(_ERROR_MESSAGE)),
            traceback=as_text(f.get(_TRACEBACK)),
            deliveries=int(deliveries) if deliveries.isdigit() else 0,
            at=at,
            metadata={
                k[len(_META) :]: as_text(v) for k, v in f.items() if k.startswith(_META)
            },
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
            start = "(" + as_text(page[-1][0])
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
        """The dead letter's payload, each field decoded from msgpack (untyped);
        a personal value reads as ``<personal>`` (never its plaintext), or as
        ``backbone.ERASED`` once its subject was erased."""
        key = self.keys.dead_letter_payload(letter.group, letter.event_id.id)
        try:
            raw = cast(dict[bytes, bytes], await self.backbone.redis.hgetall(key))
        except rex.ResponseError as exc:
            # The event's payload key held something else than a hash (the reason
            # it was dead-lettered, most likely); its copy is the same.
            kind = as_text(await self.backbone.redis.type(key))
            return {"<unreadable>": f"the payload copy {key} is a {kind}: {exc}"}
        await open_for_display(Keyring.of(self.backbone), [raw])
        decoded: dict[str, Any] = {}
        for name, value in raw.items():
            try:
                decoded[as_text(name)] = unpack_value(value)
            except Exception as exc:
                decoded[as_text(name)] = f"<undecodable: {type(exc).__name__}: {exc}>"
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
            new_id = await self.backbone.scripts.redrive.redrive(
                self.backbone.redis,
                stream=self.keys.stream,
                dead_letters=self.keys.dead_letters,
                payload_copy=self.keys.dead_letter_payload(
                    letter.group, letter.event_id.id
                ),
                dead_letter_id=dlq_id,
                payload_prefix=self.keys.payload_prefix,
            )
            if new_id is not None:
                new_ids.append(EventId(self.keys.stream, new_id))
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
            async with transaction(self.backbone.redis, self.keys.dead_letters) as pipe:
                pipe.xdel(self.keys.dead_letters, dlq_id)
                pipe.delete(
                    self.keys.dead_letter_payload(letter.group, letter.event_id.id)
                )
                deleted, _ = await pipe.execute()
            removed += int(deleted)
        return removed

    async def of_event(self, event_id: str) -> builtins.list[DeadLetter]:
        """The dead letters of the event EVENT_ID (one per group that gave up on
        it), oldest first: logs name events by their own id."""
        found: builtins.list[DeadLetter] = []
        start = "-"
        while True:
            page = await self.backbone.redis.xrange(
                self.keys.dead_letters, min=start, max="+", count=1000
            )
            if not page:
                return found
            for entry_id, fields in page:
                letter = DeadLetter.from_entry(self.keys.stream, entry_id, fields)
                if letter.event_id.id == event_id:
                    found.append(letter)
            start = "(" + as_text(page[-1][0])

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
                if (
                    group is None
                    or as_text((fields or {}).get(GROUP_FIELD.encode())) == group
                ):
                    ids.append(as_text(entry_id))
            start = "(" + as_text(page[-1][0])
