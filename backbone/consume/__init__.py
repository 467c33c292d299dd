"""Consuming: a subscription and the stages it is made of.

========================  ====================================================
module                    stage
========================  ====================================================
``subscription``          :class:`Subscription`: composes the stages, start/stop
``state``                 the state they share: the room (:class:`Window`),
                          outages, counters
``reader``                reads for the free room (read.lua), blocks when idle,
                          recovers its own pending entries
``fetcher``               payloads of claimed and recovered entries
``claimer``               lease renewal and claims of dead members' events
``workers``               decide, decode, call, retry
``deadletter``            the dead-letter step
``acker``                 writes acks the reader did not carry
``group``                 creates and recreates the consumer group
``idempotency``           per-group marks of handled events (opt-in)
``signals``               one signal handling per loop for every subscription
``context``               the handler's EventContext from entry metadata
``delivery``              one held event
``partitioned``           :class:`PartitionedSubscription`: a group over every
                          partition of a stream, shared or ordered
``ordered``               ordered mode: takes, keeps and hands over partitions
``leases``                a partition's lease, and the fencing of every write
``membership``            the live members and the assignment of partitions
========================  ====================================================
"""

from __future__ import annotations

from .leases import Lease
from .partitioned import PartitionedSubscription
from .state import SubscriptionStats
from .subscription import Subscription

__all__ = ["Lease", "PartitionedSubscription", "Subscription", "SubscriptionStats"]
