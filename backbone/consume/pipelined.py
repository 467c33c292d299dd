"""The read of a plain subscription in plain commands, pipelined on the direct
connection.

read.lua (:class:`~.reader.ReadScript`) makes a read one round trip, but the
server pays for it: running the script, copying each reply into Lua values and
back cost it about three times what ``XREADGROUP`` and ``HMGET`` cost by
themselves, and on a machine whose cores the client shares with the server that
is throughput lost. Where nothing needs the script's atomicity, the read is two
pipelined round trips on :class:`~backbone.direct.DirectConnection` instead:

1. ``XACK`` of the finished events, ``XREVRANGE + - COUNT 1`` and ``XREADGROUP
   COUNT n ... >`` in one write (the last id is taken *before* the read, so a
   read that finds nothing can wait in ``XREAD`` from it without missing an entry
   added in between);
2. one ``HMGET`` per entry of the payload's fields in parameter order (or
   ``HGETALL`` for an entry of another version than the consumer's, as read.lua
   does), in one write.

The reply is the same as the script's, built the same way: the same deliveries
with the same values, faults and versions. A failure after the first step leaves
the entries read pending with this consumer, like a lost script reply: the
reader takes them back through its recovery.

The script stays where it is needed: for an idempotent subscription (it reads
the marks with the entries), an ordered one (the fence is checked in the same
atomic step as the acks and the read), and wherever there is no direct
connection (TLS, a Redis Cluster, the embedded server).
"""

from __future__ import annotations

import time
from itertools import chain
from typing import TYPE_CHECKING, Any, Final

from ..events import as_text, entry_version
from ..faults import is_transient
from .delivery import Delivery

if TYPE_CHECKING:
    from ..direct import DirectConnection
    from .state import SubscriptionState, Window

__all__ = ["PipelinedRead", "usable"]

_O: Final = b"o"
_V: Final = b"v"
_RG: Final = b"rg"


def usable(state: SubscriptionState) -> bool:
    """True when STATE's reads may go through :class:`PipelinedRead`."""
    return (
        state.backbone.direct is not None
        and state.lease is None
        and not state.options.idempotent
    )


def meta(flat: list[bytes]) -> tuple[bytes | None, bytes | None, bytes | None]:
    """An entry's operation, re-drive group and version fields (None: absent).

    Producers write ``o`` then ``v`` first, and only re-drives write ``rg``:
    that layout is read without a scan."""
    if len(flat) > 3 and flat[0] == _O and flat[2] == _V and _RG not in flat:
        return flat[1], None, flat[3]
    op = only = version = None
    for j in range(0, len(flat) - 1, 2):
        name = flat[j]
        if name == _O:
            op = flat[j + 1]
        elif name == _RG:
            only = flat[j + 1]
        elif name == _V:
            version = flat[j + 1]
    return op, only, version


class Versions:
    """``entry_version`` of the few distinct ``v`` values a stream holds, kept."""

    __slots__ = ("known",)

    def __init__(self) -> None:
        self.known: dict[bytes | None, int | None] = {None: 1}
        """The values read so far (a reader may look here before calling)."""

    def __call__(self, raw: bytes | None) -> int | None:
        known = self.known
        try:
            return known[raw]
        except KeyError:
            version = entry_version(raw)
            if len(known) < 64:  # anyone may write odd values: keep a few
                known[raw] = version
            return version


class PipelinedRead:
    """Acks and a read of up to COUNT new entries with their payload values."""

    def __init__(self, state: SubscriptionState) -> None:
        direct = state.backbone.direct
        assert direct is not None
        self.direct: DirectConnection = direct
        self.state = state
        dispatcher = state.dispatcher
        # Payloads only of the operations the handler implements: the field
        # names in parameter order, and the version they are of.
        self._known: dict[bytes, tuple[int, tuple[bytes, ...], bool]] = {
            name.encode(): (codec.version, codec.field_names, bool(codec.personal))
            for name, codec in dispatcher.contract.codecs.items()
            if dispatcher.implements(name)
        }
        self.sealable: list[Delivery] = []
        """The deliveries of the last read that may hold sealed personal values:
        of an operation with personal parameters, or of another version."""
        stream = state.stream
        self._group = state.group.encode()
        self._prefix = state.keys.payload_prefix.encode()
        self._ack = ("XACK", stream, state.group)
        self._last = ("XREVRANGE", stream, "+", "-", "COUNT", 1)
        noack = ("NOACK",) if state.noack else ()
        self._read_head = ("XREADGROUP", "GROUP", state.group, state.consumer)
        self._read_tail = (*noack, "STREAMS", stream, ">")
        self.version = Versions()
        self.hint: tuple[bytes, list[bytes]] | None = None
        """An entry (id, flat fields) that waiting for the stream to grow saw
        appear: the next read fetches its payload with the read itself."""

    async def run(
        self, count: int, acks: list[str], window: Window
    ) -> str | list[Delivery]:
        """Write ACKS and read up to COUNT new entries (ACKS' bookkeeping in
        WINDOW done here). The deliveries, or, when nothing is new, the last id
        of the stream.

        After a wait saw an entry appear (:attr:`hint`), its payload is read in
        the same round trip as the group's read: an event arriving on an idle
        stream reaches its handler one round trip sooner. It is used only if
        the read delivers that entry and wants that very command for it."""
        commands: list[tuple[Any, ...]] = []
        if acks:
            commands.append((*self._ack, *acks))
        commands.append(self._last)
        commands.append((*self._read_head, "COUNT", count, *self._read_tail))
        hint, self.hint = self.hint, None
        early = self._fetch(*hint) if hint is not None else None
        if early is not None:
            commands.append(early)
        try:
            replies = await self.direct.call_many(commands)
        except BaseException:
            window.acks_failed(acks)
            raise
        if acks:
            acked = replies[0]
            if isinstance(acked, Exception):
                window.acks_failed(acks)
                raise acked
            window.acks_written(acks)
        at = 1 if acks else 0
        last, read = replies[at], replies[at + 1]
        if isinstance(read, Exception):
            raise read
        if isinstance(last, Exception):
            raise last
        entries = _entries(read)
        if not entries:
            return as_text(last[0][0]) if last else "0-0"
        if early is None:
            return await self._payloads(entries)
        return await self._payloads(entries, (early, replies[at + 2]))

    def _fetch(self, raw_id: bytes, flat: list[bytes]) -> tuple[Any, ...] | None:
        """The payload read :meth:`_payloads` makes for the entry RAW_ID with
        fields FLAT (None: it reads none)."""
        op, only, v = meta(flat)
        wanted = self._known.get(op) if op is not None else None
        if wanted is None or (only and only != self._group):
            return None
        current, names, _ = wanted
        version = self.version(v)
        if version != current and version is not None:
            return ("HGETALL", self._prefix + raw_id)
        return ("HMGET", self._prefix + raw_id, *names) if names else None

    async def _payloads(
        self, entries: list[Any], early: tuple[tuple[Any, ...], Any] | None = None
    ) -> list[Delivery]:
        """The deliveries of ENTRIES with their payloads, read in one round trip
        (none when EARLY, a payload read and its reply, answers the only one)."""
        now = time.monotonic()
        known = self._known
        group = self._group
        prefix = self._prefix
        version_of = self.version
        versions = version_of.known
        deliveries: list[Delivery] = []
        fetched: list[Delivery] = []
        sealable: list[Delivery] = []
        self.sealable = sealable
        commands: list[tuple[Any, ...]] = []
        for raw_id, flat in entries:
            # meta(), inlined for the producers' layout: o, v, ... and no rg.
            if len(flat) > 3 and flat[0] == _O and flat[2] == _V and _RG not in flat:
                op, only, v = flat[1], None, flat[3]
            else:
                op, only, v = meta(flat)
            version = versions[v] if v in versions else version_of(v)
            # Positionally: keywords cost a third more per event.
            d = Delivery(
                raw_id.decode(),
                flat,
                1,
                now,
                op,
                only,
                None,
                False,
                False,
                None,
                None,
                version,
            )
            deliveries.append(d)
            wanted = known.get(op)
            # An empty re-drive group restricts nothing (no group is named '').
            if wanted is None or (only and only != group):
                continue
            current, names, personal = wanted
            if version != current and version is not None:
                commands.append(("HGETALL", prefix + raw_id))
                sealable.append(d)  # any field may be sealed
            elif names:
                commands.append(("HMGET", prefix + raw_id, *names))
                if personal:
                    sealable.append(d)
            else:
                d.values = []
                continue
            fetched.append(d)
        answered: list[tuple[Delivery, Any]] = []
        if early is not None:
            command, reply = early
            # The read's own command for that entry, if it made one: its
            # payload was read already.
            for n, d in enumerate(fetched):
                if commands[n] == command:
                    answered.append((d, reply))
                    del fetched[n], commands[n]
                    break
        if commands or answered:
            replies = await self.direct.call_many(commands) if commands else []
            for d, reply in chain(zip(fetched, replies, strict=True), answered):
                if type(reply) is list:
                    d.values = reply
                elif isinstance(reply, Exception):
                    if is_transient(reply):
                        raise reply  # the server, not the entry (LOADING, say)
                    d.fault = str(reply)
                else:  # pragma: no cover - HMGET and HGETALL answer lists
                    d.values = reply
        return deliveries


def _entries(reply: Any) -> list[Any]:
    """The entries of an XREADGROUP reply of one stream (none: empty)."""
    if not reply:
        return []
    first = reply[0]
    return first[1] if first else []
