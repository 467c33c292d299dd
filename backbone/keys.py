"""Where things live in Redis.

Every key of one event stream shares the hash tag ``{<environment>:<uri>}``, so on a
Redis Cluster the stream, its payload hashes, its dead letters and its bookkeeping
live in one slot and can be written together atomically::

    bb:{dev:hello.event-sourcing}                    the stream (metadata entries)
    bb:{dev:hello.event-sourcing}:p:<entry id>       payload hash of one event
    bb:{dev:hello.event-sourcing}:dlq                dead-letter stream
    bb:{dev:hello.event-sourcing}:dlq:p:<group>:<id> payload copy of a dead letter
    bb:{dev:hello.event-sourcing}:w:<producer>:<n>   a producer's last batch (dedupe)
    bb:{dev:hello.event-sourcing}:versions           retired/deprecated op versions
    bb:{dev:hello.event-sourcing}:done:<group>       a group's idempotency marks
    bb:{dev:hello.event-sourcing}:agg:<aggregate>    an aggregate's entry ids (list)
    bb:{dev:hello.event-sourcing}:snap:<aggregate>   an aggregate's snapshot
    bb:{dev:hello.event-sourcing}:proj:<name>        a projection's checkpoint
    bb:{dev:hello.event-sourcing}:proj:<name>:<part> a projection's read model

A stream split into partitions (docs/scaling.md) is one such stream per
partition, ``#<n>`` ending the hash tag so that partitions spread over the
slots of a Redis Cluster; the partition count is recorded beside them::

    bb:{dev:orders}:partitions                       how many partitions (a string)
    bb:{dev:orders#0} ... bb:{dev:orders#3}          partition 0..3, each laid out
                                                     as a stream above

Keys of a whole environment have their own hash tag, ``{<environment>}``::

    bb:{dev}:subjects                                the keyring: key id -> key
    bb:{dev}:erased                                  erased key ids -> when
"""

from __future__ import annotations

import dataclasses
import re
from typing import Final

from .errors import ConfigurationError

__all__ = [
    "EnvironmentKeys",
    "StreamKeys",
    "validate_aggregate_id",
    "validate_part",
]

_PART_RE: Final = re.compile(r"^[A-Za-z0-9_.\-/]{1,200}$")
_GROUP_RE: Final = re.compile(r"^[A-Za-z0-9_.\-/:@]{1,200}$")
# No ":" (it separates the parts of a key), no braces (they would move the key
# out of the stream's hash tag), no whitespace or glob characters.
_AGGREGATE_RE: Final = re.compile(r"^[A-Za-z0-9_.\-@+~]{1,200}$")

PREFIX: Final = "bb"


def validate_part(what: str, value: str, *, pattern: re.Pattern[str] = _PART_RE) -> str:
    """Check an environment, URI, group or consumer name; return it unchanged."""
    if not isinstance(value, str) or not pattern.fullmatch(value):
        allowed = "letters, digits and _ . - /"
        if pattern is _GROUP_RE:
            allowed += " : @"
        raise ConfigurationError(
            f"{what} {value!r} is not valid; use 1 to 200 of: {allowed}"
        )
    return value


def validate_name(what: str, value: str) -> str:
    """Check a group or consumer name."""
    return validate_part(what, value, pattern=_GROUP_RE)


def validate_aggregate_id(value: str, what: str = "aggregate id") -> str:
    """Check an aggregate id (or a projection name: WHAT); return it unchanged."""
    if not isinstance(value, str) or not _AGGREGATE_RE.fullmatch(value):
        example = "a UUID or an order number" if what == "aggregate id" else "counts"
        raise ConfigurationError(
            f"{what} {value!r} is not valid; use 1 to 200 of: letters, "
            f"digits and _ . - @ + ~ ({example}, say)"
        )
    return value


MAX_PARTITIONS: Final = 1024


def split_uri(uri: str) -> tuple[str, int | None]:
    """``orders#3`` -> (``orders``, 3); ``orders`` -> (``orders``, None)."""
    if isinstance(uri, str) and "#" in uri:
        name, _, number = uri.rpartition("#")
        if not number.isdigit() or not 0 <= int(number) < MAX_PARTITIONS:
            raise ConfigurationError(
                f"uri {uri!r} names partition {number!r}; a partition is a number "
                f"from 0 to {MAX_PARTITIONS - 1} after '#' (orders#0, say)"
            )
        return name, int(number)
    return uri, None


@dataclasses.dataclass(frozen=True, slots=True)
class StreamKeys:
    """The Redis keys of one event stream (an environment and a URI), or of one
    PARTITION of a partitioned stream."""

    environment: str
    uri: str
    partition: int | None = None

    def __post_init__(self) -> None:
        validate_part("environment", self.environment)
        validate_part("uri", self.uri)
        if self.partition is not None and not (
            isinstance(self.partition, int) and 0 <= self.partition < MAX_PARTITIONS
        ):
            raise ConfigurationError(
                f"partition {self.partition!r} is not valid; use 0 to "
                f"{MAX_PARTITIONS - 1}"
            )

    @classmethod
    def parse(cls, environment: str, uri: str) -> StreamKeys:
        """The keys of URI, which may name a partition (``orders#3``)."""
        name, partition = split_uri(uri)
        return cls(environment, name, partition)

    @property
    def name(self) -> str:
        """The URI, with ``#<partition>`` for a partition."""
        return self.uri if self.partition is None else f"{self.uri}#{self.partition}"

    @property
    def base(self) -> StreamKeys:
        """The keys of the whole stream (self when not a partition)."""
        if self.partition is None:
            return self
        return StreamKeys(self.environment, self.uri)

    def of_partition(self, partition: int) -> StreamKeys:
        """The keys of PARTITION of this stream."""
        return StreamKeys(self.environment, self.uri, partition)

    @property
    def partitions(self) -> str:
        """How many partitions the stream has (a string), in the whole stream's
        hash tag."""
        return f"{self.base.stream}:partitions"

    @property
    def tag(self) -> str:
        return f"{{{self.environment}:{self.name}}}"

    @property
    def stream(self) -> str:
        return f"{PREFIX}:{self.tag}"

    @property
    def payload_prefix(self) -> str:
        return f"{self.stream}:p:"

    def payload(self, entry_id: str) -> str:
        return f"{self.payload_prefix}{entry_id}"

    @property
    def dead_letters(self) -> str:
        return f"{self.stream}:dlq"

    @property
    def dead_letter_payload_prefix(self) -> str:
        return f"{self.dead_letters}:p:"

    def dead_letter_payload(self, group: str, entry_id: str) -> str:
        return f"{self.dead_letter_payload_prefix}{group}:{entry_id}"

    @property
    def versions(self) -> str:
        """Marks of retired and deprecated operation versions (a hash)."""
        return f"{self.stream}:versions"

    def writer(self, producer: str) -> str:
        return f"{self.stream}:w:{producer}"

    def done(self, group: str) -> str:
        return f"{self.stream}:done:{group}"

    def aggregate(self, aggregate_id: str) -> str:
        """The index of an aggregate: a list of its entry ids, in version order."""
        return f"{self.stream}:agg:{validate_aggregate_id(aggregate_id)}"

    def snapshot(self, aggregate_id: str) -> str:
        """The latest snapshot of an aggregate (a hash: v, s, d)."""
        return f"{self.stream}:snap:{validate_aggregate_id(aggregate_id)}"

    def projection(self, name: str, part: str | None = None) -> str:
        """Projection NAME's checkpoint (a hash: id, n, s) or, with PART, a key
        of its read model; both in the stream's hash tag."""
        key = f"{self.stream}:proj:{validate_aggregate_id(name, 'projection name')}"
        if part is None:
            return key
        return f"{key}:{validate_aggregate_id(part, 'read model part')}"

    @classmethod
    def from_stream_key(cls, key: str) -> StreamKeys:
        """Parse ``bb:{env:uri}`` (or ``bb:{env:uri#n}``) back into its parts."""
        match = re.fullmatch(rf"{PREFIX}:\{{([^:{{}}]+):([^{{}}]+)\}}", key)
        if match is None:
            raise ConfigurationError(
                f"{key!r} is not a backbone stream key (expected {PREFIX}:{{env:uri}})"
            )
        return cls.parse(match.group(1), match.group(2))


@dataclasses.dataclass(frozen=True, slots=True)
class EnvironmentKeys:
    """The Redis keys of a whole environment (not of one stream), in the hash tag
    ``{<environment>}``: the keyring of personal data's subjects."""

    environment: str

    def __post_init__(self) -> None:
        validate_part("environment", self.environment)

    @property
    def subjects(self) -> str:
        """The keyring (a hash): key id (hex) -> the subject's 32-byte key."""
        return f"{PREFIX}:{{{self.environment}}}:subjects"

    @property
    def erased(self) -> str:
        """Erased subjects (a hash): key id (hex) -> Unix milliseconds."""
        return f"{PREFIX}:{{{self.environment}}}:erased"
