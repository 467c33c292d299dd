"""What a failed Redis command means, decided in one place.

Every loop of backbone meets the same few kinds of failure, and each kind has one
right answer:

* :attr:`Fault.TRANSIENT`: the connection or the server is briefly unable (lost
  connection, timeout, loading, failover, a long-running script): wait and retry.
* :attr:`Fault.NO_GROUP`: the consumer group is gone (a restart without
  persistence, ``XGROUP DESTROY``): create it again.
* :attr:`Fault.REFUSED`: Redis answered the whole command with an error about the
  data (``WRONGTYPE`` on the stream itself, say): retrying the same command gives
  the same answer until someone fixes the data.
* :attr:`Fault.BUG`: anything else is a programming error and propagates.

Errors about *one entry* (its payload key is not a hash, say) never reach this
classification: the scripts and pipelines that touch per-entry keys capture them
per entry (``redis.pcall``, ``raise_on_error=False``), so they dead-letter that
entry instead of failing the command.
"""

from __future__ import annotations

import enum

import redis.exceptions as rex

__all__ = ["Fault", "classify", "is_transient"]


class Fault(enum.Enum):
    TRANSIENT = "transient"
    NO_GROUP = "no-group"
    REFUSED = "refused"
    BUG = "bug"


_TRANSIENT_TYPES = (
    # A Redis Cluster failing over or moving slots: the client refreshes its map
    # of the slots at the next command.
    rex.ClusterDownError,
    rex.TryAgainError,
    rex.MasterDownError,
    rex.SlotNotCoveredError,
    rex.ClusterError,
    rex.ConnectionError,
    rex.TimeoutError,
    rex.BusyLoadingError,
    rex.ReadOnlyError,
    ConnectionError,
    TimeoutError,
    OSError,
)
# Error replies that go away by themselves. BUSY: another client's script is
# running long; it ends or is killed.
_TRANSIENT_PREFIXES = ("MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "LOADING", "BUSY ")


def classify(exc: BaseException) -> Fault:
    """The kind of failure EXC is (see the module documentation)."""
    if isinstance(exc, _TRANSIENT_TYPES):
        return Fault.TRANSIENT
    if isinstance(exc, rex.RedisClusterException):
        # The cluster client found no node to ask (all known nodes down during a
        # failover): transient. Anything else it refuses (keys of several slots
        # in one command) is a programming error.
        text = str(exc)
        if "Cluster mode is not enabled" in text:
            return Fault.BUG  # redis+cluster:// names a single server: say so now
        if "cannot be connected" in text or "reachable" in text:
            return Fault.TRANSIENT
        return Fault.BUG
    if isinstance(exc, rex.ResponseError):
        text = str(exc)
        if text.startswith(_TRANSIENT_PREFIXES):
            return Fault.TRANSIENT
        if text.startswith("NOGROUP") or "NOGROUP" in text[:200]:
            return Fault.NO_GROUP
        return Fault.REFUSED
    if isinstance(exc, rex.RedisError):
        return Fault.REFUSED
    return Fault.BUG


def is_transient(exc: BaseException) -> bool:
    """True for errors that go away by themselves: lost connections, a server that
    is loading its data or failing over, a replica that is read-only for now."""
    return classify(exc) is Fault.TRANSIENT
