"""The aggregate: state folded from its events, and the events a command records.

A user's aggregate subclasses the base ``backbone codegen`` generates for its
contract (``ShipmentTrackingAggregate[State]``), which derives from
:class:`Aggregate` and adds, per operation, a typed ``record_<method>(...)``
and an ``apply_<method>(...)`` to override (by default it changes nothing), so
mypy checks each ``apply_`` method's signature against its operation::

    class Shipment(ShipmentTrackingAggregate[ShipmentState]):
        snapshot_every = 100

        def __init__(self) -> None:
            super().__init__(ShipmentState())

        def apply_packing(self, email: str, product_id: int, time: datetime) -> None:
            self.state.stage = "packing"

        def pack(self, now: datetime) -> None:          # a command
            if self.state.stage != "placed":
                raise ValueError("only a placed order can be packed")
            self.record_packing(self.state.email, self.state.product_id, now)

The state is any type pydantic can dump and validate (a pydantic model, a
dataclass): snapshots store it as msgpack of pydantic's ``dump_python()`` and
read it back with ``validate_python()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from ..errors import ContractError

if TYPE_CHECKING:
    from ..codec import OperationCodec
    from ..contract import OperationSpec
    from ..dispatch import CompiledContract

__all__ = ["Aggregate", "Pending"]

S = TypeVar("S")

Pending = tuple["OperationCodec", list[bytes]]
"""A recorded event not saved yet: its operation and encoded values."""


class Aggregate(Generic[S]):
    """Base of aggregates (through the generated per-contract base).

    ``id`` and ``version`` (the number of its events saved so far) are set by the
    :class:`~backbone.Repository` that loads it; ``state`` is the pydantic model
    its ``apply_`` methods change (any type pydantic can dump and validate
    when the aggregate takes snapshots).
    """

    contract: ClassVar[CompiledContract]
    """The contract of its events (set by the generated base)."""
    snapshot_every: ClassVar[int] = 0
    """Store a snapshot of the state every this many events (0: never)."""
    snapshot_schema: ClassVar[int] = 1
    """The version of the state's layout: raise it when a change to the state
    model makes stored snapshots unreadable or wrong; snapshots of another
    schema are then ignored (the aggregate is loaded from all its events)."""

    def __init__(self, state: S) -> None:
        self.state = state
        self.id = ""
        self.version = 0
        self._pending: list[Pending] = []
        # The key ids of the subjects whose personal values the state was built
        # from: a snapshot of it is sealed with all their keys.
        self._key_ids: set[bytes] = set()

    @property
    def pending(self) -> int:
        """How many events were recorded since the last save (or load)."""
        return len(self._pending)

    def record(self, operation: OperationCodec, args: Sequence[Any]) -> None:
        """Validate one event (the generated ``record_<method>`` calls this),
        apply it to the state, and keep it for the next save.

        The state sees the arguments as a reload would: encoded, then decoded.
        Raises :class:`~backbone.ValidationError` for an invalid argument (then
        nothing is applied or kept).
        """
        spec = operation.operation
        if spec.contract != self.contract.name:
            raise ContractError(
                f"{type(self).__qualname__} records events of contract "
                f"{self.contract.name}, not {spec.qualified_name}"
            )
        values = operation.encode(args)
        self.apply(spec, operation.decode_values(values))
        self._pending.append((operation, values))

    def apply(self, operation: OperationSpec, args: Sequence[Any]) -> None:
        """Fold one event into the state: calls ``apply_<method>(*args)``."""
        method = getattr(self, f"apply_{operation.method}", None)
        if method is None:
            raise ContractError(
                f"{type(self).__qualname__} has no apply_{operation.method}: derive "
                f"it from the aggregate base generated for contract "
                f"{self.contract.name} (`backbone codegen`)"
            )
        method(*args)

    def pending_events(self) -> list[Pending]:
        """The events recorded since the last save, in order."""
        return list(self._pending)

    def mark_saved(self, count: int, version: int) -> None:
        """The first COUNT pending events were saved; the aggregate is now at
        VERSION (the repository calls this)."""
        del self._pending[:count]
        self.version = version

    def __repr__(self) -> str:
        return (
            f"{type(self).__qualname__}(id={self.id!r}, version={self.version}, "
            f"pending={self.pending}, state={self.state!r})"
        )
