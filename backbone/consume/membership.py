"""Who is in an ordered subscription's group, and which partitions each takes.

Members announce themselves in one hash per (stream, group), in the whole
stream's hash tag::

    bb:{env:orders}:members:<group>    member -> expiry (the server's Unix ms)

Each member writes its own expiry on every heartbeat (``lua/members.lua``, which
also drops the expired ones and answers the live list). There is no leader:
every member computes the same assignment from the same list
(:func:`assign`). Members may see the list at slightly different moments, so
two may briefly want one partition; the lease decides (a member only takes a
partition whose lease is free), and the disagreement ends at the next
heartbeat.

A member's id is its consumer name and a random suffix: two processes that
share a consumer name, or a process restarted under the same name while its
previous run is paused rather than dead, are never taken for one member.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..events import as_text

if TYPE_CHECKING:
    from ..connection import Backbone
    from ..keys import StreamKeys

__all__ = ["Membership", "assign", "member_id"]


def member_id(consumer: str) -> str:
    """A member id unique to this run of CONSUMER (no spaces: it is part of a
    lease's fence)."""
    return f"{consumer}~{secrets.token_hex(4)}"


class Membership:
    """This member's entry in the group's members hash."""

    def __init__(
        self,
        backbone: Backbone,
        keys: StreamKeys,
        group: str,
        member: str,
        ttl: float,
    ) -> None:
        self.backbone = backbone
        self.key = f"{keys.stream}:members:{group}"
        self.member = member
        self.ttl_ms = max(1, int(ttl * 1000))

    async def heartbeat(self) -> list[str]:
        """Join, or stay: the live members (this one included)."""
        return await self._call("join")

    async def leave(self) -> list[str]:
        """Leave at once (a clean stop): the others rebalance at their next
        heartbeat instead of waiting for this entry to expire."""
        return await self._call("leave")

    async def _call(self, what: str) -> list[str]:
        live: list[Any] = await self.backbone.scripts.members.run(
            self.backbone.redis, (self.key,), (self.member, self.ttl_ms, what)
        )
        return sorted(as_text(m) for m in live)


def _weight(member: str, partition: int) -> int:
    digest = hashlib.blake2b(f"{partition}\0{member}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big")


def assign(members: Iterable[str], partitions: int) -> dict[str, list[int]]:
    """Which partitions each of MEMBERS takes: the same answer on every member.

    Rendezvous hashing with bounded loads: each partition goes to the member
    that ranks highest for it (a hash of member and partition) among those not
    yet full, and every member takes ``partitions // len(members)`` or one more.
    So the load is balanced, and when a member joins or leaves most partitions
    stay where they are (a plain ``p % len(members)`` would move most of them,
    and each move is a handover).
    """
    ordered = sorted(set(members))
    assignment: dict[str, list[int]] = {m: [] for m in ordered}
    if not ordered:
        return assignment
    floor, extra = divmod(partitions, len(ordered))
    at_ceiling = 0
    for partition in range(partitions):
        ranked = sorted(ordered, key=lambda m: (-_weight(m, partition), m))
        for member in ranked:
            load = len(assignment[member])
            if load < floor:
                break
            if load == floor and at_ceiling < extra:
                at_ceiling += 1
                break
        else:  # pragma: no cover - the capacities add up to PARTITIONS
            raise AssertionError("no member has room")
        assignment[member].append(partition)
    return assignment
