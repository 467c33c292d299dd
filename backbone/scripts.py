"""The Lua scripts backbone runs, each behind one typed wrapper that owns its
arguments and its reply (the scripts' own headers document the wire format);
:class:`Scripts` holds one of each per connection. Every wrapper is a
:class:`~backbone.script.Script` (``EVALSHA``, optionally followed by ``WAIT``).

* ``publish.lua`` appends a batch, entries and payload hashes:
  :class:`~backbone.write_scripts.PublishScript`;
* ``append.lua`` appends events of one aggregate if its version is the one
  expected, and indexes them: :class:`~backbone.write_scripts.AppendScript`;
* ``snapshot.lua`` stores an aggregate's snapshot unless a newer one is there:
  :class:`~backbone.write_scripts.SnapshotScript`;
* ``versions.lua`` raises a stream's operation-version marks:
  :class:`~backbone.write_scripts.VersionsScript`;
* ``read.lua`` acks and reads new entries with their payloads: its reply becomes
  the consumer's deliveries, so its wrapper lives with the reader
  (``backbone.consume.reader.ReadScript``);
* ``dead_letter.lua`` moves one event to the dead-letter stream:
  :class:`~backbone.consumer_scripts.DeadLetterScript`;
* ``redrive.lua`` appends a dead letter's event again:
  :class:`~backbone.consumer_scripts.RedriveScript`;
* ``group.lua`` recreates a vanished consumer group:
  :class:`~backbone.consumer_scripts.GroupScript`;
* ``forget_consumer.lua`` removes a stopped consumer that holds nothing:
  :class:`~backbone.consumer_scripts.ForgetConsumerScript`;
* ``trim.lua`` removes a stream's oldest entries with their payload keys, up
  to what groups, projections and aggregates still need:
  :class:`~backbone.trim_script.TrimScript`;
* ``lease.lua`` (a partition's lease and the operations it fences) and
  ``members.lua`` (the live members of an ordered subscription): their
  wrappers live with the ordered consumer (``backbone.consume.leases`` and
  ``backbone.consume.membership``);
* ``partitions.lua`` records a partitioned stream's partition count or
  compares it: run by ``backbone.partitions``.
"""

from __future__ import annotations

from .consumer_scripts import (
    DeadLetterScript,
    ForgetConsumerScript,
    GroupScript,
    RedriveScript,
)
from .script import Script
from .trim_script import TrimScript
from .write_scripts import AppendScript, PublishScript, SnapshotScript, VersionsScript

__all__ = ["Scripts"]


class Scripts:
    """The scripts backbone runs, compiled once per connection."""

    __slots__ = (
        "append",
        "dead_letter",
        "forget_consumer",
        "group",
        "lease",
        "members",
        "partitions",
        "publish",
        "read",
        "redrive",
        "snapshot",
        "trim",
        "versions",
    )

    def __init__(self) -> None:
        self.publish = PublishScript("publish")
        self.append = AppendScript("append")
        self.snapshot = SnapshotScript("snapshot")
        self.read = Script("read")
        self.dead_letter = DeadLetterScript("dead_letter")
        self.redrive = RedriveScript("redrive")
        self.group = GroupScript("group")
        self.forget_consumer = ForgetConsumerScript("forget_consumer")
        self.trim = TrimScript("trim")
        self.versions = VersionsScript("versions")
        self.lease = Script("lease")
        self.members = Script("members")
        self.partitions = Script("partitions")
