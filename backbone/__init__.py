"""backbone: typed event contracts on Redis Streams and hashes.

Declare a contract (a ``typing.Protocol`` marked with :func:`contract`), generate
its producer and consumer code with ``backbone codegen``, then publish and
subscribe through a :class:`Backbone` connection.
"""

from __future__ import annotations

from .batch import Batch
from .connection import Backbone
from .consume import Lease, PartitionedSubscription, Subscription, SubscriptionStats
from .contract import ContractSpec, OperationSpec, contract, operation
from .deadletters import DeadLetter, DeadLetterReason, DeadLetters
from .describe import describe
from .dispatch import CompiledContract, Dispatcher, Route, bind, route
from .erasure import ErasureReport, erase
from .errors import (
    BackboneError,
    ConcurrencyError,
    ConfigurationError,
    ContractError,
    DecodeError,
    DeprecatedVersionWarning,
    PublishError,
    PublishTimeout,
    ReplicationTimeout,
    RetiredVersionError,
    StaleCodeError,
    ValidationError,
)
from .events import NO_CONTEXT, EventContext, EventId, current_event
from .options import (
    AckPolicy,
    RetryPolicy,
    StartFrom,
    SubscriptionOptions,
    UnknownOperation,
)
from .partitions import PartitionKey
from .personal import ERASED, Erased, Personal
from .producer import Producer, ProducerOptions
from .retention import (
    RetentionHold,
    RetentionPolicy,
    TrimReport,
    trim,
    trim_dead_letters,
)
from .store import (
    Aggregate,
    ExpectedVersion,
    Projection,
    ProjectionContext,
    RecordedEvent,
    ReplayError,
    ReplaySummary,
    Repository,
    replay,
)

__version__ = "0.1.0"

__all__ = [
    "ERASED",
    "NO_CONTEXT",
    "AckPolicy",
    "Aggregate",
    "Backbone",
    "BackboneError",
    "Batch",
    "CompiledContract",
    "ConcurrencyError",
    "ConfigurationError",
    "ContractError",
    "ContractSpec",
    "DeadLetter",
    "DeadLetterReason",
    "DeadLetters",
    "DecodeError",
    "DeprecatedVersionWarning",
    "Dispatcher",
    "Erased",
    "ErasureReport",
    "EventContext",
    "EventId",
    "ExpectedVersion",
    "Lease",
    "OperationSpec",
    "PartitionKey",
    "PartitionedSubscription",
    "Personal",
    "Producer",
    "ProducerOptions",
    "Projection",
    "ProjectionContext",
    "PublishError",
    "PublishTimeout",
    "RecordedEvent",
    "ReplayError",
    "ReplaySummary",
    "ReplicationTimeout",
    "Repository",
    "RetentionHold",
    "RetentionPolicy",
    "RetiredVersionError",
    "RetryPolicy",
    "Route",
    "StaleCodeError",
    "StartFrom",
    "Subscription",
    "SubscriptionOptions",
    "SubscriptionStats",
    "TrimReport",
    "UnknownOperation",
    "ValidationError",
    "bind",
    "contract",
    "current_event",
    "describe",
    "erase",
    "operation",
    "replay",
    "route",
    "trim",
    "trim_dead_letters",
]
