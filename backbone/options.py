"""Options of a subscription. They are checked when built and refuse contradictions."""

from __future__ import annotations

import dataclasses
import enum
import random

from .errors import ConfigurationError
from .retention_policy import RetentionPolicy

__all__ = [
    "AckPolicy",
    "RetryPolicy",
    "StartFrom",
    "SubscriptionOptions",
    "UnknownOperation",
]


class StartFrom(enum.Enum):
    """Where a *new* consumer group starts reading (an existing group keeps its place).

    Pass an entry id (``"1700000000000-0"``) or an :class:`~backbone.EventId`
    instead to start at that event, inclusive.
    """

    BEGINNING = "0"
    NEW = "$"


class AckPolicy(enum.Enum):
    """When an event is acknowledged in its consumer group."""

    AFTER_SUCCESS = "after-success"
    """After the handler returns (at-least-once; failures are retried)."""
    ON_RECEIPT = "on-receipt"
    """When read (``XREADGROUP NOACK``): at-most-once, nothing is ever pending; a
    failing handler is still retried in-process and dead-lettered."""
    MANUAL = "manual"
    """When the handler calls ``context.ack()``; an event the handler returns from
    without acking stays pending and is delivered again after ``claim_idle``."""


class UnknownOperation(enum.Enum):
    """What to do with an operation this consumer's contract does not have."""

    DEAD_LETTER = "dead-letter"
    SKIP = "skip"


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries of a failing handler, with exponential backoff and jitter.

    Each retry is a new delivery in Redis' pending list (``XCLAIM`` with the next
    delivery count), so the count survives crashes: an event is dead-lettered once
    it has been delivered ``max_deliveries`` times, by any member of the group.
    """

    max_deliveries: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 10.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.max_deliveries < 1:
            raise ConfigurationError(
                f"max_deliveries must be >= 1, not {self.max_deliveries!r}"
            )
        if self.initial_backoff < 0 or self.max_backoff < self.initial_backoff:
            raise ConfigurationError(
                "backoff must satisfy 0 <= initial_backoff <= max_backoff, not "
                f"{self.initial_backoff!r} and {self.max_backoff!r}"
            )
        if self.multiplier < 1:
            raise ConfigurationError(
                f"multiplier must be >= 1, not {self.multiplier!r}"
            )
        if not 0 <= self.jitter <= 1:
            raise ConfigurationError(
                f"jitter must be within [0, 1], not {self.jitter!r}"
            )

    def backoff(self, delivery: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed delivery number DELIVERY (1-based)."""
        base = min(
            self.max_backoff, self.initial_backoff * self.multiplier ** (delivery - 1)
        )
        spread = (rng or random).random() * self.jitter
        return base * (1 - spread)


@dataclasses.dataclass(frozen=True, slots=True)
class SubscriptionOptions:
    """How a subscription consumes.

    ack: when events are acknowledged (:class:`AckPolicy`).
    max_in_flight: most events held at once (read but not finished); XREADGROUP
        asks only for the free room.
    concurrency: handler calls running at once; 1 keeps the stream's order.
    block: seconds one XREADGROUP waits for new entries.
    claim_idle: seconds an entry may stay pending with a member before another
        member claims it (set it above your slowest handler; in-flight entries are
        renewed, so a slow but live consumer keeps them).
    claim_interval: seconds between claim scans (default ``claim_idle / 4``).
    retry: the :class:`RetryPolicy` of failing handlers.
    unknown_operation: dead-letter (default) or skip operations the contract lacks.
    handler_timeout: seconds a handler call may take before it counts as failed.
    shutdown_timeout: seconds ``stop()`` lets running handlers finish.
    idempotent: keep a per-group mark of each handled event id and skip events
        already marked (see docs/guarantees.md for the window that remains).
    idempotency_ttl: seconds marks are kept.
    retention: a :class:`~backbone.RetentionPolicy` the subscription applies to
        its stream and dead letters while it runs (trimming; see
        docs/event-lifecycle.md).
    ordered: each partition of the stream (an unpartitioned stream is one) is
        held by exactly one member of the group at a time, through a lease, and
        its events are handled one at a time in entry order; the partitions a
        member holds run in parallel. Members joining, leaving or dying move
        partitions between them, the pending events first, so the events of
        one key stay in order (see backbone.consume.partitioned). Handlers see
        the lease as ``context.lease`` (partition, fencing token) to fence
        their own writes. Needs ``concurrency=1``, and an ack policy that
        leaves events pending until handled (not ``ON_RECEIPT``). A group it
        creates with ``StartFrom.NEW`` starts at the beginning of each
        partition (see backbone.consume.partitioned); pass an entry id to skip
        older events.
    lease_ttl: seconds a member's lease on a partition lasts without renewal
        (renewed every third of it): how long a dead member's partitions wait
        before another member takes them.
    """

    ack: AckPolicy = AckPolicy.AFTER_SUCCESS
    max_in_flight: int = 256
    concurrency: int = 1
    block: float = 2.0
    claim_idle: float = 60.0
    claim_interval: float | None = None
    retry: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)
    unknown_operation: UnknownOperation = UnknownOperation.DEAD_LETTER
    handler_timeout: float | None = None
    shutdown_timeout: float = 10.0
    idempotent: bool = False
    idempotency_ttl: float = 7 * 24 * 3600.0
    retention: RetentionPolicy | None = None
    ordered: bool = False
    lease_ttl: float = 10.0

    def __post_init__(self) -> None:
        if self.max_in_flight < 1:
            raise ConfigurationError(
                f"max_in_flight must be >= 1, not {self.max_in_flight!r}"
            )
        if self.concurrency < 1:
            raise ConfigurationError(
                f"concurrency must be >= 1, not {self.concurrency!r}"
            )
        if self.concurrency > self.max_in_flight:
            raise ConfigurationError(
                f"concurrency ({self.concurrency}) cannot exceed max_in_flight "
                f"({self.max_in_flight}): handlers would wait for events that are "
                "never read; raise max_in_flight or lower concurrency"
            )
        if self.block <= 0:
            raise ConfigurationError(f"block must be > 0 seconds, not {self.block!r}")
        if self.claim_idle <= 0:
            raise ConfigurationError(
                f"claim_idle must be > 0 seconds, not {self.claim_idle!r}"
            )
        if self.claim_interval is not None and self.claim_interval <= 0:
            raise ConfigurationError(
                f"claim_interval must be > 0 seconds, not {self.claim_interval!r}"
            )
        if self.handler_timeout is not None and self.handler_timeout <= 0:
            raise ConfigurationError(
                f"handler_timeout must be > 0 seconds, not {self.handler_timeout!r}"
            )
        if self.shutdown_timeout < 0:
            raise ConfigurationError(
                f"shutdown_timeout must be >= 0 seconds, not {self.shutdown_timeout!r}"
            )
        if self.idempotency_ttl <= 0:
            raise ConfigurationError(
                f"idempotency_ttl must be > 0 seconds, not {self.idempotency_ttl!r}"
            )
        if self.retention is not None and not isinstance(
            self.retention, RetentionPolicy
        ):
            raise ConfigurationError(
                f"retention must be a RetentionPolicy, not {self.retention!r}"
            )
        if not isinstance(self.ordered, bool):
            raise ConfigurationError(
                f"ordered must be True or False, not {self.ordered!r}"
            )
        if not isinstance(self.lease_ttl, (int, float)) or not (
            0 < self.lease_ttl <= 3600
        ):
            raise ConfigurationError(
                f"lease_ttl must be > 0 and at most 3600 seconds, not "
                f"{self.lease_ttl!r}"
            )
        if self.ordered and self.concurrency != 1:
            raise ConfigurationError(
                f"ordered=True handles one event at a time per partition (the "
                f"partitions a member holds run in parallel); concurrency="
                f"{self.concurrency} would reorder them: drop concurrency, or "
                "drop ordered=True for a shared subscription"
            )
        if self.ordered and self.ack is AckPolicy.ON_RECEIPT:
            raise ConfigurationError(
                "ordered=True cannot use ack=AckPolicy.ON_RECEIPT: a partition "
                "moving to another member hands over its pending events, and "
                "under ON_RECEIPT (XREADGROUP NOACK) the events read ahead are "
                "never pending, so every handover would lose them; use the "
                "default AckPolicy.AFTER_SUCCESS (or MANUAL)"
            )
        if self.idempotent and self.ack is AckPolicy.ON_RECEIPT:
            raise ConfigurationError(
                "idempotent=True has nothing to guard with ack=AckPolicy.ON_RECEIPT "
                "(events are never delivered twice); drop one of the two"
            )

    @property
    def effective_claim_interval(self) -> float:
        if self.claim_interval is not None:
            return self.claim_interval
        return max(0.05, self.claim_idle / 4)
