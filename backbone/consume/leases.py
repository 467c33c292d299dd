"""Leases: one member of a consumer group holds a partition at a time.

An ordered subscription (``SubscriptionOptions(ordered=True)``) gives each
partition of a stream to exactly one member of the group at a time, so the
partition's events are handled one after another, in entry order, even while
members come, go and die. The member holds the partition through a **lease**,
one Redis string per (partition, group) in the partition's own hash tag::

    bb:{env:orders#3}:lease:<group>    "<token> <owner>", with a time to live
    bb:{env:orders#3}:fence:<group>    the fencing counter (never expires)

``lua/lease.lua`` acquires (when free, expired, or held by the same owner),
renews and releases it. Every acquisition takes the next value of the counter,
so a lease's **token** only grows: the pair "<token> <owner>", the *fence*,
names one holding and no other, ever. A missing counter (the first holding, or
Redis lost its data: a restart without persistence) starts at the server's time
in microseconds, so tokens keep growing across such a loss too; what remains is
a server clock set back (further than the tokens taken since) together with a
loss.

**Fencing.** A member can lose its lease without knowing it (paused past the
time to live, cut off from Redis): another member holds the partition then.
Whatever the stale member writes to backbone's bookkeeping would be wrong, so
every write an ordered subscription makes checks the fence in the same atomic
step (the same script) as the write itself, and changes nothing when the lease
is no longer exactly its fence: the read and its carried acks (``read.lua``),
the idle acks, retries' delivery counts, idempotency marks and takeover claims
(``lease.lua``), dead letters (``dead_letter.lua``). A refused write fails with
an error starting ``FENCED``; the stage that met it calls :meth:`Lease.lose`,
which stops the partition's subscription, and the events it held stay pending
for the new owner.

Handlers reach the same token through ``context.lease``, to fence their own
writes elsewhere: a store that remembers the highest token it saw per partition
and refuses writes that carry a lower one is safe from a stale member too.

What this rests on: Redis keeps its writes. A failover that loses the last
writes of a master (replication is asynchronous) can lose a lease, so two
members may briefly hold one partition, and can lose the counter's last
increment, so a token may be given twice; the fence still tells the two
holdings apart inside Redis (its owner part differs), a token alone may not.
Leases expire by the server's clock and are renewed well before (every third
of the time to live); a member stops starting events once the time to live has
passed on its own clock since its last successful renewal, which is never later
than Redis' expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import redis.exceptions as rex

from ..errors import BackboneError
from ..events import as_text
from .delivery import pairs

if TYPE_CHECKING:
    from ..connection import Backbone
    from ..keys import StreamKeys
    from .state import SubscriptionState

__all__ = [
    "Lease",
    "LeaseLost",
    "Leases",
    "is_fenced",
    "raise_if_fenced",
]

FENCED: Final = "FENCED"


class LeaseLost(BackboneError):
    """A fenced write was refused: the lease is not this holding's any more."""


def is_fenced(exc: BaseException) -> bool:
    """True when EXC is a script's refusal of a write for a lease not held."""
    return isinstance(exc, rex.ResponseError) and str(exc).startswith(FENCED)


def raise_if_fenced(exc: BaseException) -> None:
    """Raise :class:`LeaseLost` when EXC is a fencing refusal."""
    if is_fenced(exc):
        raise LeaseLost(str(exc)[len(FENCED) :].strip()) from None


class Lease:
    """One holding of one partition by one member (``context.lease``).

    ``partition`` is the partition's number (None for an unpartitioned stream),
    ``token`` the fencing token: it grows with every new holding of the
    partition by any member, so a write carrying a lower token than one already
    seen comes from a holder that lost the partition since. ``held`` says
    whether this member still believes it holds the partition (not lost, and
    renewed within the time to live): a handler doing a long job may check it
    between steps.
    """

    __slots__ = ("_lost", "_valid_until", "key", "owner", "partition", "token")

    def __init__(
        self,
        *,
        partition: int | None,
        token: int,
        owner: str,
        key: str,
        valid_until: float,
    ) -> None:
        self.partition = partition
        self.token = token
        self.owner = owner
        self.key = key
        self._valid_until = valid_until
        self._lost = asyncio.Event()

    @property
    def fence(self) -> str:
        """The lease's value while this holding lasts: ``"<token> <owner>"``."""
        return f"{self.token} {self.owner}"

    @property
    def held(self) -> bool:
        """Not lost, and renewed less than the time to live ago (this member's
        clock; Redis' expiry of the lease is never earlier than that)."""
        if self._lost.is_set():
            return False
        if time.monotonic() >= self._valid_until:
            self._lost.set()
            return False
        return True

    def renewed(self, sent_at: float, ttl: float) -> None:
        """A renewal sent at SENT_AT (monotonic) went through."""
        self._valid_until = max(self._valid_until, sent_at + ttl)

    def lose(self) -> None:
        """This holding is over (a fenced write was refused, a renewal found
        another owner, or the time to live ran out): its subscription stops."""
        self._lost.set()

    async def wait_lost(self) -> None:
        """Until this holding is lost: :meth:`lose`, or the time to live runs
        out on this member's clock without a renewal (noticed at that moment,
        not at the next renewal: Redis may hand the partition to another member
        as soon as it expires the lease)."""
        while self.held:
            remaining = self._valid_until - time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), max(remaining, 0.0))

    def __repr__(self) -> str:
        return (
            f"Lease(partition={self.partition}, token={self.token}, "
            f"owner={self.owner!r}, held={self.held})"
        )


class Leases:
    """The lease of one group on one partition (or unpartitioned stream):
    acquire, renew, release (``lua/lease.lua``)."""

    def __init__(self, backbone: Backbone, keys: StreamKeys, group: str) -> None:
        self.backbone = backbone
        self.keys = keys
        self.group = group
        self.key = lease_key(keys, group)
        self.counter = f"{keys.stream}:fence:{group}"

    async def acquire(self, owner: str, ttl: float) -> Lease | tuple[str, int]:
        """A new holding for OWNER, or (the fence of the holder, its ms left)."""
        sent_at = time.monotonic()
        reply: list[Any] = await self.backbone.scripts.lease.run(
            self.backbone.redis,
            (self.key, self.counter),
            ("acquire", owner, _ms(ttl)),
        )
        token = int(reply[0])
        if token == 0:
            return as_text(reply[1]), int(reply[2])
        return Lease(
            partition=self.keys.partition,
            token=token,
            owner=owner,
            key=self.key,
            valid_until=sent_at + ttl,
        )

    async def renew(self, lease: Lease, ttl: float) -> bool:
        """True when LEASE is still held (and renewed for TTL)."""
        sent_at = time.monotonic()
        renewed = await self.backbone.scripts.lease.run(
            self.backbone.redis, (self.key,), ("renew", lease.fence, _ms(ttl))
        )
        if int(renewed):
            lease.renewed(sent_at, ttl)
            return True
        return False

    async def release(self, lease: Lease) -> bool:
        """Free the partition at once for the next member (True when LEASE was
        still held)."""
        released = await self.backbone.scripts.lease.run(
            self.backbone.redis, (self.key,), ("release", lease.fence)
        )
        return bool(int(released))

    async def holder(self) -> str | None:
        """The fence of the current holding, or None when free."""
        value = await self.backbone.redis.get(self.key)
        return None if value is None else as_text(value)


def lease_key(keys: StreamKeys, group: str) -> str:
    """The lease of GROUP on the stream (or partition) KEYS, in its hash tag."""
    return f"{keys.stream}:lease:{group}"


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


# --- the fenced writes of a subscription that holds a lease ---------------------


async def _fenced(state: SubscriptionState, key: str, *args: Any) -> Any:
    lease = state.lease
    assert lease is not None
    try:
        return await state.backbone.scripts.lease.run(
            state.redis, (lease.key, key), (args[0], lease.fence, *args[1:])
        )
    except rex.ResponseError as exc:
        raise_if_fenced(exc)
        raise


async def ack(state: SubscriptionState, ids: Sequence[str]) -> int:
    """XACK IDS while the lease holds; :class:`LeaseLost` otherwise."""
    return int(await _fenced(state, state.stream, "ack", state.group, *ids))


async def claim(
    state: SubscriptionState, ids: Sequence[str]
) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """XCLAIM IDS (of any consumer of the group) to this consumer while the
    lease holds; the entries, fields as a dict ({} for a deleted entry)."""
    reply: list[Any] = await _fenced(
        state, state.stream, "claim", state.group, state.consumer, *ids
    )
    return [(entry[0], pairs(entry[1])) for entry in reply if entry]


async def retry(state: SubscriptionState, entry_id: str, count: int) -> list[Any]:
    """Count a retry as delivery COUNT while the lease holds: the ids claimed
    (as ``XCLAIM ... JUSTID``; empty when the entry is no longer pending)."""
    reply: list[Any] = await _fenced(
        state, state.stream, "retry", state.group, state.consumer, entry_id, count
    )
    return reply


async def mark(state: SubscriptionState, key: str, event_id: str, score: float) -> None:
    """Write an idempotency mark while the lease holds."""
    await _fenced(state, key, "mark", repr(score), event_id)
