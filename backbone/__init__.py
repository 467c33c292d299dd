"""backbone: typed event contracts on Redis Streams and hashes.

Declare a contract (a ``typing.Protocol`` marked with :func:`contract`), generate
its producer and consumer code with ``backbone codegen``, then publish and
subscribe through a :class:`Backbone` connection.
"""

from __future__ import annotations

from .connection import Backbone
from .consume import Subscription, SubscriptionStats
from .contract import ContractSpec, OperationSpec, contract, operation
from .deadletters import DeadLetter, DeadLetterReason, DeadLetters
from .describe import describe
from .dispatch import CompiledContract, Dispatcher, Route, bind, route
from .errors import (
    BackboneError,
    ConcurrencyError,
    ConfigurationError,
    ContractError,
    DecodeError,
    PublishError,
    PublishTimeout,
    ReplicationTimeout,
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
from .producer import Batch, Producer, ProducerOptions
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
    "Dispatcher",
    "EventContext",
    "EventId",
    "ExpectedVersion",
    "OperationSpec",
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
    "RetryPolicy",
    "Route",
    "StaleCodeError",
    "StartFrom",
    "Subscription",
    "SubscriptionOptions",
    "SubscriptionStats",
    "UnknownOperation",
    "ValidationError",
    "bind",
    "contract",
    "current_event",
    "describe",
    "operation",
    "replay",
    "route",
]
