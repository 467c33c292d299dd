"""How a producer writes: :class:`ProducerOptions`, checked when built."""

from __future__ import annotations

import dataclasses
import os
import secrets
import socket

from .errors import ConfigurationError

__all__ = ["ProducerOptions", "default_identity"]


def default_identity() -> str:
    """host:pid:random, unique per producer instance."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclasses.dataclass(frozen=True, slots=True)
class ProducerOptions:
    """How a producer writes.

    publish_timeout: seconds a call may spend retrying a lost connection before it
        raises :class:`PublishTimeout`.
    max_batch: most events in one round trip.
    linger: seconds to wait for more calls before a round trip (0: never wait;
        calls that arrive during a round trip still share the next one).
    max_atomic_batch: most events in one ``publish_many`` (all-or-nothing) call.
    identity: the producer's identity in each event (default host:pid:random).
    min_replicas: after each write, ``WAIT`` until this many replicas confirmed it;
        fewer within ``replica_timeout`` seconds raises :class:`ReplicationTimeout`.
    batch_record_ttl: seconds the record of the producer's last batch is kept
        after each batch: the window in which a retried or late attempt of a
        batch is recognised and writes nothing twice. A stalled connection can
        deliver a request's bytes up to ~15 minutes late (TCP retransmissions),
        so keep it well above that; the record is one short string per
        producer instance.
    pipeline: batches in flight at once on a plain ``redis://`` or ``unix://``
        connection (pipelined: the next batch is sent while the earlier ones run;
        each has its own batch record). Elsewhere, and with ``min_replicas``
        (whose ``WAIT`` holds its connection), one batch is in flight.
    """

    publish_timeout: float = 30.0
    max_batch: int = 1000
    linger: float = 0.0
    max_atomic_batch: int = 10_000
    identity: str | None = None
    min_replicas: int = 0
    replica_timeout: float = 1.0
    batch_record_ttl: float = 3600.0
    pipeline: int = 4

    def __post_init__(self) -> None:
        if self.publish_timeout <= 0:
            raise ConfigurationError(
                f"publish_timeout must be > 0 seconds, not {self.publish_timeout!r}"
            )
        if self.max_batch < 1:
            raise ConfigurationError(f"max_batch must be >= 1, not {self.max_batch!r}")
        if self.linger < 0:
            raise ConfigurationError(
                f"linger must be >= 0 seconds, not {self.linger!r}"
            )
        if self.min_replicas < 0 or self.replica_timeout <= 0:
            raise ConfigurationError(
                "min_replicas must be >= 0 and replica_timeout > 0 seconds, not "
                f"{self.min_replicas!r} and {self.replica_timeout!r}"
            )
        if not 1 <= self.pipeline <= 64:
            raise ConfigurationError(
                f"pipeline must be from 1 to 64 batches, not {self.pipeline!r}"
            )
        if self.max_atomic_batch < 1:
            raise ConfigurationError(
                f"max_atomic_batch must be >= 1, not {self.max_atomic_batch!r}"
            )
        if not self.batch_record_ttl >= max(60.0, 2 * self.publish_timeout):
            raise ConfigurationError(
                f"batch_record_ttl must be at least 60 seconds and at least twice "
                f"publish_timeout ({self.publish_timeout:g}s), not "
                f"{self.batch_record_ttl!r}: it is how long retried and late attempts "
                "of a batch are recognised; keep it well above the ~15 minutes a "
                "stalled connection can deliver bytes late (default 3600)"
            )
