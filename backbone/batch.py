"""An atomic batch: events collected in an ``async with`` block, validated as
they are added, written all-or-nothing by the producer when the block ends."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from .errors import PublishError

if TYPE_CHECKING:
    from .codec import OperationCodec
    from .events import EventId
    from .producer import Producer
    from .writer import Item

__all__ = ["Batch"]


class Batch:
    """Events collected in an ``async with`` block and written all-or-nothing when
    it ends without an exception (an exception discards them).

    Each event is validated when added. After the block, :attr:`event_ids` holds
    the ids in the order the events were added.
    """

    def __init__(self, producer: Producer) -> None:
        self.producer = producer
        self.event_ids: list[EventId] = []
        self._items: list[Item] = []
        self._written = False

    def add(self, operation: OperationCodec, args: Sequence[Any]) -> None:
        """Validate and queue one event (generated batch methods call this)."""
        if self._written:
            raise PublishError("this batch was already written; start a new one")
        producer = self.producer
        items = self._items
        if len(items) >= producer.options.max_atomic_batch:
            producer._check_atomic_size(len(items) + 1)
        items.append(producer._prepare(operation, args))

    def __len__(self) -> int:
        return len(self._items)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        items, self._items = self._items, []
        if exc_type is not None:
            self.producer._settle(items, None, exc or PublishError("discarded"))
            return
        self._written = True
        self.event_ids = await self.producer._write_atomic(items)
