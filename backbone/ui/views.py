"""Events and dead letters decoded for the page, as ``backbone tail --json`` and
``backbone dlq show`` decode them: untyped, without the contract, personal values
as ``<personal>`` (or ``<erased>``), never their plaintext.

A browser is not a terminal, but it has limits of its own: values are cut to a
readable size here (a payload of megabytes would freeze the page), and numbers
JSON has no word for (NaN, infinities) are sent as text.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Final

from ..cli.common import json_default
from ..cli.dlq import letter_document
from ..cli.tail import Entry, event_document, read_payloads
from ..deadletters import DeadLetters
from ..events import as_text
from ..inspection import NotAStreamError

if TYPE_CHECKING:
    from ..connection import Backbone

__all__ = ["MAX_ITEMS", "MAX_TEXT", "clip", "dead_letters", "tail"]

MAX_TEXT: Final = 2000
"""Characters of one text value shown; the rest is counted, not sent."""
MAX_ITEMS: Final = 200
"""Items of one list or map shown."""
TAIL_BATCH: Final = 200
RECENT: Final = 20
"""Events a tail shows at first: the last ones the stream holds."""
LETTERS: Final = 100


def clip(value: Any, depth: int = 0) -> Any:
    """VALUE as plain JSON, with long texts and collections cut (saying so)."""
    if isinstance(value, str):
        if len(value) <= MAX_TEXT:
            return value
        return f"{value[:MAX_TEXT]}...({len(value) - MAX_TEXT} more characters)"
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if depth > 20:
        return "...(nested deeper than 20 levels)"
    if isinstance(value, dict):
        items = list(value.items())
        shown = {_key(k): clip(v, depth + 1) for k, v in items[:MAX_ITEMS]}
        if len(items) > MAX_ITEMS:
            shown["..."] = f"{len(items) - MAX_ITEMS} more entries"
        return shown
    if isinstance(value, (list, tuple)):
        shown_list = [clip(v, depth + 1) for v in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            shown_list.append(f"...({len(value) - MAX_ITEMS} more items)")
        return shown_list
    return clip(json_default(value), depth + 1)


def _key(key: Any) -> str:
    text = key if isinstance(key, str) else str(json_default(key))
    return clip(text) if len(text) > MAX_TEXT else text


async def tail(
    backbone: Backbone, uri: str, after: str | None, *, limit: int = TAIL_BATCH
) -> dict[str, Any]:
    """The events of stream URI after the entry id AFTER (at most LIMIT), or,
    without AFTER, the last few it holds; ``cursor`` is where to go on from.
    Reads with ``XRANGE``: it joins no group, so no group sees a difference."""
    keys = backbone.keys(uri)
    redis = backbone.redis
    kind = as_text(await redis.type(keys.stream))
    if kind not in ("stream", "none"):
        raise NotAStreamError(keys.stream, kind)
    raw: Any
    if after is None:
        raw = list(reversed(await redis.xrevrange(keys.stream, count=RECENT) or []))
    else:
        raw = await redis.xrange(keys.stream, min=f"({after}", max="+", count=limit)
    entries: list[Entry] = [
        (as_text(ident), fields or {}) for ident, fields in raw or []
    ]
    payloads = await read_payloads(backbone, keys, [ident for ident, _ in entries])
    events = [
        clip(event_document(keys, entry, payload))
        for entry, payload in zip(entries, payloads, strict=True)
    ]
    cursor = entries[-1][0] if entries else after
    if cursor is None:  # an empty stream: go on from its beginning
        cursor = "0-0"
    return {
        "uri": uri,
        "exists": kind == "stream",
        "cursor": cursor,
        "events": events,
        "more": after is not None and len(entries) == limit,
    }


async def dead_letters(
    backbone: Backbone, uri: str, *, limit: int = LETTERS
) -> dict[str, Any]:
    """The oldest LIMIT dead letters of stream URI, each with its decoded payload
    (as ``backbone dlq show``), and how many there are in all."""
    letters = DeadLetters(backbone, uri)
    total = await letters.count()
    found = await letters.list(limit=limit)
    shown = [
        clip(letter_document(letter, await letters.payload(letter))) for letter in found
    ]
    return {"uri": uri, "total": total, "letters": shown}
