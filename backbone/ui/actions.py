"""The dashboard's only writes: re-drive and purge dead letters.

They go through :class:`backbone.DeadLetters` as ``backbone dlq retry`` and
``backbone dlq purge`` do, after the same checks: the stream URI as
``StreamKeys`` takes it, every id as ``backbone.cli.common`` checks entry ids,
and every named id must be a dead letter of the stream, or nothing is done.
What the page sends is a JSON object ``{"uri": ..., "ids": [...]}``; anything
else is refused before Redis is asked.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import TYPE_CHECKING, Any, Final

from ..cli.common import is_entry_id
from ..deadletters import DeadLetters
from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..connection import Backbone

__all__ = ["MAX_IDS", "Action", "ActionError", "ActionRequest", "perform"]

MAX_IDS: Final = 1000
"""Dead letters one action may name (a page sends one, or those it shows)."""


class Action(enum.StrEnum):
    REDRIVE = "redrive"
    PURGE = "purge"


class ActionError(Exception):
    """An action refused, with the HTTP status that says why."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


@dataclasses.dataclass(frozen=True, slots=True)
class ActionRequest:
    uri: str
    ids: tuple[str, ...]

    @classmethod
    def parse(cls, backbone: Backbone, body: Any) -> ActionRequest:
        """The request BODY names, checked; :class:`ActionError` (400) otherwise."""
        if not isinstance(body, dict) or set(body) - {"uri", "ids"}:
            raise ActionError(
                400, 'send a JSON object {"uri": "<stream>", "ids": ["<id>", ...]}'
            )
        uri, ids = body.get("uri"), body.get("ids")
        if not isinstance(uri, str) or not uri or len(uri) > 200:
            raise ActionError(400, "uri: name the stream, e.g. orders")
        try:
            backbone.keys(uri)
        except ConfigurationError as exc:
            raise ActionError(400, str(exc)) from None
        if not isinstance(ids, list) or not 1 <= len(ids) <= MAX_IDS:
            raise ActionError(400, f"ids: a list of 1 to {MAX_IDS} dead letter ids")
        bad = [text for text in ids if not is_entry_id(text)]
        if bad:
            raise ActionError(
                400,
                f"dead letter id {str(bad[0])[:100]!r} is not an entry id: expected "
                "<ms>-<seq>, two numbers below 2^64, e.g. 1764000000000-0",
            )
        return cls(uri, tuple(dict.fromkeys(ids)))


async def perform(
    backbone: Backbone, action: Action, request: ActionRequest
) -> dict[str, Any]:
    """Re-drive or purge the dead letters REQUEST names: all of them, or none
    when one is not a dead letter of the stream (404)."""
    letters = DeadLetters(backbone, request.uri)
    unknown = [ident for ident in request.ids if await letters.get(ident) is None]
    if unknown:
        what = "no dead letter" if len(unknown) == 1 else "no dead letters"
        verb = "re-driven" if action is Action.REDRIVE else "purged"
        raise ActionError(
            404,
            f"{what} {', '.join(unknown[:10])} in stream {request.uri!r}; nothing "
            f"was {verb} (another re-drive or purge at the same time?)",
        )
    wanted = len(request.ids)
    if action is Action.REDRIVE:
        new_ids = await letters.retry(request.ids)
        done = len(new_ids)
        result: dict[str, Any] = {"new_ids": [event.id for event in new_ids]}
    else:
        done = await letters.purge(request.ids)
        result = {}
    result.update({"action": str(action), "uri": request.uri, "done": done})
    result["wanted"] = wanted
    if done < wanted:
        result["warning"] = (
            f"{wanted - done} of the {wanted} dead letters were gone before they "
            "could be handled (another re-drive or purge at the same time?)"
        )
    return result
