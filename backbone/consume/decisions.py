"""The decisions about a delivery before any handler runs.

For each delivery, in this order:

* entry deleted while pending (trimmed): ack, nothing to handle;
* re-driven for another group: ack, skip;
* no operation field: dead-letter ``malformed-entry``;
* operation unknown to the contract: dead-letter, or skip when asked to;
* operation the (partial) handler does not implement: ack, count;
* delivered more than ``max_deliveries`` times (its consumers died handling it):
  dead-letter ``too-many-deliveries`` without calling the handler;
* already handled (idempotency mark): ack;
* payload key unreadable, missing, undecodable or invalid: dead-letter.

What is left is a call to make (a :data:`Plan`). :meth:`Decisions.plan` finds
the common case at once (an operation the handler implements, for this group,
within its deliveries, not handled yet, whose payload decodes) without
awaiting anything; :meth:`Decisions.settle` takes every step for the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..deadletters import DeadLetterReason
from ..errors import DecodeError
from ..options import UnknownOperation
from .context import log_fields
from .delivery import pairs

if TYPE_CHECKING:
    from ..dispatch import Route
    from .deadletter import DeadLetterStep
    from .delivery import Delivery
    from .fetcher import Fetcher
    from .state import SubscriptionState

__all__ = ["Decisions", "Plan"]

log = logging.getLogger("backbone.consumer")

Plan = tuple["Route", "Delivery", str, list[Any]]
"""The call to make: the route, the delivery, the operation's name, the arguments."""

_Known = tuple[
    str,
    "Route",
    int,
    int,
    "Callable[[Sequence[bytes | None]], list[Any] | None] | None",
]
"""An implemented operation: name, route, version, parameters, one-call decoder."""


class Decisions:
    """What to do with each delivery of one subscription."""

    def __init__(
        self, state: SubscriptionState, fetcher: Fetcher, dead_letter: DeadLetterStep
    ) -> None:
        self.state = state
        self.fetcher = fetcher
        self.dead_letter = dead_letter
        dispatcher = state.dispatcher
        self._routes = {
            name.encode(): (name, dispatcher.get(name))
            for name in dispatcher.contract.codecs
        }
        # The operations the handler implements, with what the common case of
        # an event needs of each (see plan): the operation's name, route,
        # version, number of parameters and one-call decoder.
        self._implemented: dict[bytes, _Known] = {
            op: (
                name,
                route,
                route.codec.version,
                len(route.codec.field_names),
                route.codec.fast_decoder,
            )
            for op, (name, route) in self._routes.items()
            if route is not None
        }
        self._max_deliveries = state.options.retry.max_deliveries
        self._group = state.group.encode()

    def _ack(self, d: Delivery) -> None:
        self.state.window.queue_ack(d, noack=self.state.noack)

    def plan(self, d: Delivery) -> Plan | None:
        """The call of D in the common case: an operation the handler
        implements, for this group, within its deliveries, not handled yet,
        whose payload decodes. None for any other event: :meth:`settle`
        decides about it, taking the same steps in the same order."""
        known = self._implemented.get(d.op) if d.op is not None else None
        if (
            known is None
            or d.done_mark
            or self._exhausted(d)
            or (d.only and d.only != self._group)
        ):
            return None
        lease = self.state.lease
        if lease is not None and not lease.held:
            return None
        operation, route, version, width, fast = known
        values = d.values
        if (
            fast is not None
            and d.version == version
            and d.fault is None
            and d.damaged is None
            and values is not None
            and len(values) == width
        ):
            args = fast(values)
            if args is not None:
                return route, d, operation, args
        try:
            args = self._decode(route, d)
        except DecodeError:
            return None  # dead-lettered by settle, which says why
        return route, d, operation, args

    def _exhausted(self, d: Delivery) -> bool:
        """True when D was delivered more often than max_deliveries: its
        consumers died handling it, and it is dead-lettered without a call."""
        return d.delivery_count > self._max_deliveries

    async def settle(self, d: Delivery) -> Plan | None:
        """Decide about D before its handler runs (see the module
        documentation): ack it, skip it or dead-letter it (None), or the call to
        make."""
        state = self.state
        if state.lease is not None and not state.lease.held:
            return None  # lost: the event stays pending for the partition's new owner
        op_name = d.op
        if op_name is None and not d.fields:
            # Deleted from the stream (trimmed) while pending: nothing to handle.
            log.info(
                "%s: pending entry %s no longer exists; acking it",
                state,
                d.entry_id,
                extra=log_fields(state, d),
            )
            self._ack(d)
            return None
        if not self.fetcher.mine(d):
            state.stats.skipped += 1
            self._ack(d)
            return None
        if op_name is None:
            await self.dead_letter(
                d,
                DeadLetterReason.MALFORMED_ENTRY,
                "the stream entry has no operation field 'o'",
            )
            return None
        known = self._routes.get(op_name)
        if known is None:
            operation, route = op_name.decode(errors="replace"), None
        else:
            operation, route = known
            if route is None:
                # The contract has it; this (partial) handler does not handle it.
                state.stats.unimplemented += 1
                self._ack(d)
                return None
        if route is None:
            if state.options.unknown_operation is UnknownOperation.SKIP:
                state.stats.skipped += 1
                self._ack(d)
                return None
            await self.dead_letter(
                d,
                DeadLetterReason.UNKNOWN_OPERATION,
                f"contract {state.dispatcher.contract_name} of this consumer has no "
                f"operation {operation!r} (a newer producer?); update the contract "
                "and regenerate, or subscribe with unknown_operation=SKIP",
            )
            return None
        if self._exhausted(d):
            await self.dead_letter(
                d,
                DeadLetterReason.TOO_MANY_DELIVERIES,
                f"delivered {d.delivery_count} times (max_deliveries is "
                f"{self._max_deliveries}); the consumers handling it may have crashed",
                handler=route.handler_name,
            )
            return None
        if d.done_mark:
            state.stats.duplicates_skipped += 1
            self._ack(d)
            return None
        try:
            args = self._decode(route, d)
        except DecodeError as exc:
            await self.dead_letter(d, exc.reason, str(exc), handler=route.handler_name)
            return None
        return route, d, operation, args

    def _decode(self, route: Route, d: Delivery) -> list[Any]:
        """D's arguments, or DecodeError saying why it cannot have any."""
        if d.fault is not None:
            raise DecodeError(
                DeadLetterReason.UNREADABLE_PAYLOAD,
                f"the payload key {self._key(d)} cannot be read as a hash "
                f"({d.fault}); something other than backbone wrote it",
            )
        if d.damaged is not None:
            raise DecodeError(
                DeadLetterReason.UNDECODABLE,
                f"a personal value of {self._key(d)} cannot be opened: {d.damaged}",
            )
        values = d.values if d.values is not None else []
        codec = route.codec
        version = d.version
        if version is not None and version != codec.version:
            # Another version: VALUES is the whole hash (an older one's goes
            # through the upcasters; a newer one's is read when it fits).
            return codec.decode(
                pairs(values), version, key=f"the payload hash {self._key(d)}"
            )
        if values.count(None) == len(values) and codec.parameter_names:
            raise DecodeError(
                DeadLetterReason.MISSING_PAYLOAD,
                f"the payload hash {self._key(d)} does not exist (deleted, expired "
                "or never written)",
            )
        return codec.decode_values(values)

    def _key(self, d: Delivery) -> str:
        """D's payload key (named in errors only: formatting it costs)."""
        return self.state.keys.payload(d.entry_id)
