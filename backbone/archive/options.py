"""Options of the archive sink, checked when built."""

from __future__ import annotations

import dataclasses
import os
import re
import socket
from collections.abc import Sequence
from typing import Any, Final

from ..contract import ContractSpec, contract_mark
from ..describe import describe
from ..dispatch import CompiledContract
from ..errors import ConfigurationError
from ..keys import validate_name

__all__ = ["ArchiveOptions", "default_consumer", "parameterless"]

_SCHEMA_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclasses.dataclass(frozen=True, slots=True)
class ArchiveOptions:
    """How the archive sink reads, batches and writes.

    ``max_in_flight`` bounds memory and the group's pending list: at most that many
    events are read and not yet committed and acknowledged (default: four
    batches). ``contracts`` (contract classes, ``ContractSpec`` or bound contracts)
    tell the sink which operations take no parameters: their events have no
    payload hash, which for other operations is a missing payload.
    """

    group: str = "archive"
    consumer: str = dataclasses.field(default_factory=default_consumer)
    schema: str = "public"
    max_batch: int = 1000
    max_latency: float = 0.5
    max_in_flight: int | None = None
    writers: int = 1
    claim_idle: float = 60.0
    block: float = 2.0
    shutdown_timeout: float = 30.0
    write_timeout: float = 60.0
    max_backoff: float = 5.0
    contracts: Sequence[Any] = ()

    def __post_init__(self) -> None:
        validate_name("group", self.group)
        validate_name("consumer", self.consumer)
        if not _SCHEMA_RE.fullmatch(self.schema):
            raise ConfigurationError(
                f"schema {self.schema!r} is not valid; use a PostgreSQL name of 1 to "
                "63 letters, digits and _ that does not start with a digit"
            )
        if self.max_batch < 1:
            raise ConfigurationError(f"max_batch must be >= 1, not {self.max_batch!r}")
        if self.max_in_flight is not None and self.max_in_flight < self.max_batch:
            raise ConfigurationError(
                f"max_in_flight ({self.max_in_flight}) must be at least max_batch "
                f"({self.max_batch}), or no batch could ever fill"
            )
        for name in ("max_latency", "claim_idle", "block", "write_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigurationError(
                    f"{name} must be > 0, not {getattr(self, name)!r}"
                )
        if self.shutdown_timeout < 0 or self.max_backoff <= 0:
            raise ConfigurationError(
                "shutdown_timeout must be >= 0 and max_backoff > 0"
            )
        if not 1 <= self.writers <= 16:
            raise ConfigurationError(f"writers must be 1 to 16, not {self.writers!r}")
        parameterless(self.contracts)  # refuse what is not a contract now

    @property
    def room(self) -> int:
        """The effective ``max_in_flight``."""
        return self.max_in_flight or 4 * self.max_batch

    @property
    def claim_interval(self) -> float:
        """How often the claimer renews leases and claims idle entries."""
        return min(max(self.claim_idle / 3, 0.05), 10.0)


def parameterless(contracts: Sequence[Any]) -> frozenset[tuple[str, str]]:
    """(contract name, operation name) of the operations of CONTRACTS that take
    no parameters."""
    found: set[tuple[str, str]] = set()
    for item in contracts:
        spec = _spec(item)
        for operation in spec.operations:
            if not operation.params:
                found.add((spec.name, operation.name))
    return frozenset(found)


def _spec(item: Any) -> ContractSpec:
    if isinstance(item, ContractSpec):
        return item
    if isinstance(item, CompiledContract):
        return item.spec
    if isinstance(item, type) and contract_mark(item) is not None:
        return describe(item)
    raise ConfigurationError(
        f"{item!r} is not a contract; pass contract classes (decorated with "
        "@backbone.contract), ContractSpec or bound contracts"
    )
