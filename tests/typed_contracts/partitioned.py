"""A partitioned contract for the partition tests: orders keyed by their id."""

from __future__ import annotations

from typing import Annotated, Protocol

from backbone import PartitionKey, contract


@contract(name="Orders", partitions=4)
class Orders(Protocol):
    """An order's steps; every event of one order lands in one partition."""

    async def placed(self, order_id: Annotated[str, PartitionKey()], seq: int) -> None:
        """Step SEQ of order ORDER_ID."""

    async def noted(self, text: str) -> None:
        """A note without a key (any partition)."""
