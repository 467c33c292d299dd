"""Property test of the consumer: whatever lands on a stream, the loop goes on.

Each example writes a random mix of good events (published by the generated
producer) and raw material written with plain Redis commands: stream entries
with random, missing or garbage fields, payload keys of every Redis type or
none, hashes with random fields and values from empty to a megabyte, broken
msgpack and valid msgpack of the wrong shape. Then one subscription reads the
stream from the beginning, and the test checks, for each entry, the one outcome
that is correct for it:

- handled exactly once: good events, and raw entries whose garbage is harmless
  (unknown extra fields, odd metadata beside a valid operation and payload);
- dead-lettered exactly once, with a reason: everything that cannot be handled;
- skipped (acked, neither handled nor dead-lettered): entries re-driven to
  another group.

Throughout, the subscription must keep running, and at the end the group's
pending list is empty. Each example uses a stream of its own.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import itertools
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any, Final

import msgpack
import pydantic
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import backbone
from backbone.codec import pack_value, unpack_value
from conftest import eventually
from contracts.shipment_tracking_gen import (
    shipment_tracking_producer,
    subscribe_shipment_tracking,
)
from helpers import Recorder, moment

GROUP: Final = "prop"
OTHER_GROUP: Final = "elsewhere"
MEGABYTE: Final = 1 << 20
SETTLE_TIMEOUT: Final = 10.0

# Operations of the ShipmentTracking contract taking (email, product_id, time),
# and the one taking (user, product, time).
SHAPED: Final = ("packing", "on_delivery", "on_received")
KNOWN: Final = (*SHAPED, "order_placed")
PARAMS: Final = ("email", "product_id", "time")
ALL_PARAM_NAMES: Final = frozenset(
    {b"email", b"product_id", b"time", b"user", b"product"}
)
METADATA: Final = frozenset({b"o", b"v", b"c", b"t", b"p", b"co", b"ca", b"rg", b"ri"})

# The payload's decoding, independent of the consumer: msgpack (with backbone's
# extension types), then pydantic in lax mode against the contract's annotation.
ADAPTERS: Final[dict[str, pydantic.TypeAdapter[Any]]] = {
    "email": pydantic.TypeAdapter(str),
    "product_id": pydantic.TypeAdapter(int),
    "time": pydantic.TypeAdapter(dt.datetime),
}

_uris = itertools.count()


# --- the scenario -----------------------------------------------------------------


class Outcome(enum.Enum):
    HANDLED = "handled"
    DEAD = "dead-lettered"
    SKIPPED = "skipped"


class PayloadKind(enum.Enum):
    MISSING = "missing"
    HASH = "hash"
    STRING = "string"
    LIST = "list"
    SET = "set"
    ZSET = "zset"
    STREAM = "stream"


def show(value: bytes) -> str:
    """VALUE for a failure report: whole up to a few hundred bytes, else its size."""
    if len(value) <= 256:
        return repr(value)
    return f"<{len(value)} bytes {value[:16]!r}...>"


def show_pairs(pairs: tuple[tuple[bytes, bytes], ...]) -> str:
    items = [f"({show(name)}, {show(value)})" for name, value in pairs]
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


@dataclasses.dataclass(frozen=True)
class Good:
    """An event published by the generated producer."""

    operation: str


@dataclasses.dataclass(frozen=True)
class Raw:
    """A stream entry and its payload key, written with plain commands."""

    fields: tuple[tuple[bytes, bytes], ...]
    kind: PayloadKind
    # hash: (field, value) pairs; other kinds: (member, value) pairs as they need
    payload: tuple[tuple[bytes, bytes], ...]

    def __repr__(self) -> str:
        # Python, except that values of megabytes are shown by their size.
        return (
            f"Raw(fields={show_pairs(self.fields)}, kind=PayloadKind.{self.kind.name}, "
            f"payload={show_pairs(self.payload)})"
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))  # hypothesis' report of a failing example

    def field(self, name: bytes) -> bytes | None:
        return dict(self.fields).get(name)


Item = Good | Raw


@dataclasses.dataclass(frozen=True)
class Scenario:
    items: tuple[Item, ...]
    concurrency: int
    max_in_flight: int

    def __repr__(self) -> str:
        lines = [
            f"Scenario(concurrency={self.concurrency}, "
            f"max_in_flight={self.max_in_flight})"
        ]
        lines += [f"  [{n}] {item!r}" for n, item in enumerate(self.items)]
        return "\n".join(lines)


# --- strategies -------------------------------------------------------------------


def weighted(absent: int, strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """STRATEGY, or None in about ABSENT tenths of the draws."""
    return st.integers(0, 9).flatmap(lambda n: st.none() if n < absent else strategy)


# Sizes of values: mostly small, now and then about a megabyte.
sizes = st.integers(0, 999).map(lambda n: MEGABYTE if n >= 997 else n % 40)


@st.composite
def blobs(draw: st.DrawFn) -> bytes:
    size = draw(sizes)
    if size <= 64:
        return draw(st.binary(min_size=size, max_size=size))
    pattern = draw(st.binary(min_size=1, max_size=8))
    return (pattern * (size // len(pattern) + 1))[:size]


@st.composite
def emails(draw: st.DrawFn) -> str:
    size = draw(sizes)
    if size == MEGABYTE:
        return "x" * size + "@example.com"
    return draw(st.text(max_size=size))


def valid_value(param: str) -> st.SearchStrategy[Any]:
    if param == "email":
        return emails()
    if param == "product_id":
        return st.integers(-(2**63), 2**64 - 1)
    return st.datetimes(timezones=st.sampled_from([None, dt.UTC]))


# Any value pack_value takes: of the wrong type for most parameters, sometimes of
# a type pydantic turns into the right one (lax mode); the oracle tells which.
any_value: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),
    st.text(max_size=12),
    st.binary(max_size=12),
    st.lists(st.integers(-5, 5), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(-5, 5), max_size=3),
    st.datetimes(),
    st.dates(),
    st.uuids(),
    st.decimals(),
    st.timedeltas(
        min_value=dt.timedelta(days=-100_000), max_value=dt.timedelta(days=100_000)
    ),
    st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=12)),
)


@st.composite
def broken_msgpack(draw: st.DrawFn) -> bytes:
    """Bytes that are not one msgpack value."""
    packed = pack_value(draw(any_value))
    return draw(
        st.sampled_from(
            [
                b"\xc1" + packed,  # 0xc1 is never used by msgpack
                packed[:-1],  # truncated (empty when it was one byte)
                packed + b"\x00",  # trailing data
                b"",
            ]
        )
    )


def payload_value(param: str) -> st.SearchStrategy[bytes | None]:
    """One payload field of PARAM: absent, valid, or some kind of garbage."""
    return st.one_of(
        st.none(),
        valid_value(param).map(pack_value),
        valid_value(param).map(pack_value),
        any_value.map(pack_value),
        broken_msgpack(),
        blobs(),
    )


field_names = st.binary(max_size=8).filter(lambda n: n not in ALL_PARAM_NAMES)


@st.composite
def hash_payload(draw: st.DrawFn, valid: bool) -> tuple[tuple[bytes, bytes], ...]:
    pairs: dict[bytes, bytes] = {}
    for param in PARAMS:
        value = (
            pack_value(draw(valid_value(param)))
            if valid
            else draw(payload_value(param))
        )
        if value is not None:
            pairs[param.encode()] = value
    extra = draw(st.dictionaries(field_names, blobs(), max_size=3))
    return tuple(pairs.items()) + tuple(extra.items())


@st.composite
def payloads(
    draw: st.DrawFn, valid: bool
) -> tuple[PayloadKind, tuple[tuple[bytes, bytes], ...]]:
    if valid:
        return PayloadKind.HASH, draw(hash_payload(valid=True))
    # Mostly hashes (of random fields), sometimes none, now and then another type.
    kind = draw(
        st.sampled_from(
            [PayloadKind.HASH] * 10
            + [PayloadKind.MISSING] * 2
            + [PayloadKind.STRING, PayloadKind.LIST, PayloadKind.SET]
            + [PayloadKind.ZSET, PayloadKind.STREAM]
        )
    )
    if kind is PayloadKind.HASH:
        return kind, draw(hash_payload(valid=False))
    if kind is PayloadKind.MISSING:
        return kind, ()
    members = draw(st.lists(st.tuples(blobs(), blobs()), min_size=1, max_size=3))
    return kind, tuple(members)


text_or_bytes = st.one_of(st.text(max_size=12).map(str.encode), blobs())

producer_times = st.one_of(
    st.integers(0, 4_102_444_800_000).map(lambda ms: str(ms).encode()),
    # numbers, but no time a datetime can hold
    st.sampled_from([10**20, -(10**20), 2**63, -(2**63), 10**400]).map(
        lambda ms: str(ms).encode()
    ),
    st.sampled_from([b"9" * 5000, b"-1", b"1.5", b"1e3", b" 7 ", b"now", b""]),
    st.integers(-(10**15), -1).map(lambda ms: str(ms).encode()),
    text_or_bytes,
)

versions = st.one_of(
    st.sampled_from([b"1", b"2", b"0", b"-1", b"one", b"1.0", b"", b"9" * 30]),
    text_or_bytes,
)

operations = st.one_of(
    st.sampled_from([name.encode() for name in KNOWN]),
    st.sampled_from([b"Packing", b"packing ", b"", b"returned"]),
    text_or_bytes,
)

redrive_groups = st.one_of(
    st.sampled_from([GROUP.encode(), OTHER_GROUP.encode(), b""]), text_or_bytes
)

redrive_origins = st.one_of(
    st.sampled_from([b"0-0", b"1-1", b"", b"not-an-id", b"99999999999999999999-0"]),
    text_or_bytes,
)


@st.composite
def entry_fields(draw: st.DrawFn, plausible: bool) -> tuple[tuple[bytes, bytes], ...]:
    """A stream entry's fields. PLAUSIBLE: a valid operation, maybe odd metadata."""
    fields: dict[bytes, bytes | None] = {
        b"o": draw(
            st.sampled_from([n.encode() for n in SHAPED])
            if plausible
            else weighted(2, operations)
        ),
        b"v": draw(weighted(3, versions)),
        b"c": draw(weighted(3, st.just(b"ShipmentTracking"))),
        b"t": draw(weighted(3, producer_times)),
        b"p": draw(weighted(3, text_or_bytes)),
        b"co": draw(weighted(6, text_or_bytes)),
        b"ca": draw(weighted(6, text_or_bytes)),
        b"rg": draw(weighted(8, redrive_groups)),
        b"ri": draw(weighted(7, redrive_origins)),
    }
    extra = draw(
        st.dictionaries(
            st.binary(max_size=6).filter(lambda n: n not in METADATA),
            blobs(),
            max_size=3,
        )
    )
    pairs = tuple((k, v) for k, v in fields.items() if v is not None)
    pairs += tuple(extra.items())
    return pairs or ((b"x", b""),)  # XADD needs one field at least


@st.composite
def raws(draw: st.DrawFn) -> Raw:
    # Half of the entries have a valid operation (and mostly a valid payload)
    # with garbage beside them; the other half are anything at all.
    plausible = draw(st.booleans())
    fields = draw(entry_fields(plausible))
    kind, payload = draw(payloads(valid=plausible and draw(st.integers(0, 2)) > 0))
    return Raw(fields, kind, payload)


goods = st.sampled_from(["packing", "on_delivery"]).map(Good)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    items = draw(st.lists(st.one_of(goods, raws()), min_size=1, max_size=12))
    concurrency = draw(st.sampled_from([1, 3]))
    max_in_flight = draw(st.sampled_from([m for m in (1, 3, 256) if m >= concurrency]))
    return Scenario(tuple(items), concurrency, max_in_flight)


# Scenarios that generation reaches only now and then, run every time as well.
VALID_PAYLOAD: Final = (
    (b"email", pack_value("a@example.com")),
    (b"product_id", pack_value(1)),
    (b"time", pack_value(moment())),
)


def raw(
    kind: PayloadKind = PayloadKind.HASH,
    payload: tuple[tuple[bytes, bytes], ...] = VALID_PAYLOAD,
    **fields: bytes,
) -> Raw:
    """An entry of a valid event, with FIELDS changed and the payload given."""
    metadata = {
        "o": b"packing",
        "v": b"1",
        "c": b"ShipmentTracking",
        "t": b"1764000000000",
        "p": b"test",
        **fields,
    }
    return Raw(tuple((k.encode(), v) for k, v in metadata.items()), kind, payload)


PAYLOAD_KEYS_OF_EVERY_TYPE: Final = Scenario(
    (
        Good("packing"),
        *(
            raw(kind, ((b"email", pack_value("a@example.com")),))
            for kind in PayloadKind
            if kind is not PayloadKind.HASH
        ),
        Good("on_delivery"),
    ),
    concurrency=1,
    max_in_flight=256,
)
PRODUCER_TIMES_OUT_OF_RANGE: Final = Scenario(
    (
        raw(t=str(10**20).encode()),
        raw(t=str(-(10**20)).encode()),
        raw(t=str(10**400).encode()),
        Good("packing"),
    ),
    concurrency=1,
    max_in_flight=256,
)
ODD_REDRIVE_GROUPS: Final = Scenario(
    (
        raw(rg=b""),
        raw(rg=GROUP.encode(), ri=b"1-0"),
        raw(rg=OTHER_GROUP.encode(), ri=b"1-0"),
        raw(rg=b"\xff"),
        Good("packing"),
    ),
    concurrency=1,
    max_in_flight=256,
)


# --- the expected outcome of each entry ---------------------------------------------


@dataclasses.dataclass(frozen=True)
class Expected:
    entry_id: str
    item: Item
    outcome: Outcome
    why: str
    reason: str | None = None  # the dead letter's reason, where only one fits
    call: tuple[str, tuple[Any, ...]] | None = None  # a good event's handler call


def field_fits(param: str, raw: bytes | None) -> bool:
    if raw is None:
        return False
    try:
        ADAPTERS[param].validate_python(unpack_value(raw))
    except Exception:
        return False
    return True


def expect(raw: Raw) -> tuple[Outcome, str, str | None]:
    """The one correct outcome of RAW for group GROUP: (outcome, why, reason)."""
    redrive = raw.field(b"rg")
    # An empty re-drive group names no group (group names are never empty): it
    # restricts nothing, as for an entry without one.
    if redrive and redrive != GROUP.encode():
        return Outcome.SKIPPED, f"re-driven to group {redrive!r}", None
    operation = raw.field(b"o")
    if operation is None:
        return Outcome.DEAD, "no operation field", "malformed-entry"
    if operation not in {name.encode() for name in KNOWN}:
        return Outcome.DEAD, f"unknown operation {operation!r}", "unknown-operation"
    if operation not in {name.encode() for name in SHAPED}:
        return Outcome.DEAD, "payload lacks the operation's fields", None
    if raw.kind is not PayloadKind.HASH:
        return Outcome.DEAD, f"payload key is {raw.kind.value}", None
    values = dict(raw.payload)
    wrong = [p for p in PARAMS if not field_fits(p, values.get(p.encode()))]
    if wrong:
        return Outcome.DEAD, f"payload fields {wrong} absent or invalid", None
    return Outcome.HANDLED, "valid operation and payload", None


# --- writing ------------------------------------------------------------------------


async def write_raw(bus: backbone.Backbone, uri: str, raw: Raw) -> str:
    """XADD the entry, then write its payload key (not atomic: write before the
    subscription starts)."""
    keys = bus.keys(uri)
    redis = bus.redis
    added = await redis.xadd(keys.stream, dict(raw.fields))
    entry_id = added.decode() if isinstance(added, bytes) else str(added)
    key = keys.payload(entry_id)
    members = [member for member, _ in raw.payload]
    if raw.kind is PayloadKind.HASH and raw.payload:
        await redis.hset(key, mapping=dict(raw.payload))
    elif raw.kind is PayloadKind.STRING:
        await redis.set(key, members[0])
    elif raw.kind is PayloadKind.LIST:
        await redis.rpush(key, *members)
    elif raw.kind is PayloadKind.SET:
        await redis.sadd(key, *members)
    elif raw.kind is PayloadKind.ZSET:
        await redis.zadd(key, {member: n for n, member in enumerate(members)})
    elif raw.kind is PayloadKind.STREAM:
        await redis.xadd(key, dict(raw.payload))
    return entry_id


async def write_scenario(
    bus: backbone.Backbone, uri: str, scenario: Scenario
) -> list[Expected]:
    producer = shipment_tracking_producer(bus, uri)
    expected: list[Expected] = []
    for n, item in enumerate(scenario.items):
        if isinstance(item, Good):
            args = (f"good{n}@example.com", 10_000_000 + n, moment(n % 60))
            if item.operation == "packing":
                event = await producer.packing(*args)
            else:
                event = await producer.on_delivery(*args)
            expected.append(
                Expected(
                    event.id,
                    item,
                    Outcome.HANDLED,
                    "published by the producer",
                    call=(item.operation, args),
                )
            )
        else:
            entry_id = await write_raw(bus, uri, item)
            outcome, why, reason = expect(item)
            expected.append(Expected(entry_id, item, outcome, why, reason))
    return expected


# --- the property -------------------------------------------------------------------


def stopped(subscription: backbone.Subscription) -> str:
    completion = subscription.completion
    error = completion.exception() if not completion.cancelled() else None
    return f"the subscription stopped: {type(error).__name__}: {error}"


async def group_state(bus: backbone.Backbone, stream: str) -> tuple[str, int]:
    """The group's last delivered id and pending count, from one reply (two
    commands could straddle a read and see everything delivered and nothing
    pending before the read made it pending)."""
    (group,) = await bus.redis.xinfo_groups(stream)
    delivered = group["last-delivered-id"]
    if isinstance(delivered, bytes):
        delivered = delivered.decode()
    return str(delivered), int(group["pending"])


def check(
    expected: list[Expected],
    calls: list[tuple[str, tuple[Any, ...], backbone.EventContext]],
    letters: list[backbone.DeadLetter],
) -> dict[Outcome, list[str]]:
    """What differs from the expected outcome of each entry, by expected outcome."""
    handled = Counter(context.id.id for _, _, context in calls)
    arguments = {context.id.id: (op, args) for op, args, context in calls}
    dead = Counter(letter.event_id.id for letter in letters)
    letter_of = {letter.event_id.id: letter for letter in letters}
    problems: dict[Outcome, list[str]] = {outcome: [] for outcome in Outcome}
    for n, e in enumerate(expected):
        entry = e.entry_id
        label = f"[{n}] {entry} ({e.why})"
        seen = f"handled {handled[entry]}x, dead-lettered {dead[entry]}x"
        letter = letter_of.get(entry)
        if letter is not None:
            seen += f" ({letter.reason}: {letter.error_type}: {letter.error_message})"
        if e.outcome is Outcome.HANDLED:
            if handled[entry] != 1 or dead[entry]:
                problems[e.outcome].append(f"{label}: expected handled once, {seen}")
            elif e.call is not None and arguments[entry] != e.call:
                problems[e.outcome].append(
                    f"{label}: handled as {arguments[entry]}, not as {e.call}"
                )
        elif e.outcome is Outcome.DEAD:
            if handled[entry] or dead[entry] != 1 or letter is None:
                problems[e.outcome].append(
                    f"{label}: expected dead-lettered once, {seen}"
                )
            elif not letter.reason:
                problems[e.outcome].append(f"{label}: dead letter without a reason")
            elif e.reason is not None and letter.reason != e.reason:
                problems[e.outcome].append(
                    f"{label}: dead-lettered as {letter.reason!r}, not {e.reason!r}"
                )
        elif handled[entry] or dead[entry]:
            problems[e.outcome].append(f"{label}: expected skipped, {seen}")
    return problems


async def run_scenario(
    bus: backbone.Backbone, scenario: Scenario, report: Callable[[str], None]
) -> None:
    """Write SCENARIO on a stream of its own, subscribe, and check every entry's
    outcome once nothing can change any more. REPORT shows what failing needs."""
    uri = f"prop.{next(_uris)}"
    stream = bus.keys(uri).stream
    report(repr(scenario))
    expected = await write_scenario(bus, uri, scenario)
    for n, e in enumerate(expected):
        report(f"[{n}] {e.entry_id}: expect {e.outcome.value} ({e.why})")
    last_id = expected[-1].entry_id

    handler = Recorder()
    options = backbone.SubscriptionOptions(
        retry=backbone.RetryPolicy(
            max_deliveries=2, initial_backoff=0.001, max_backoff=0.01
        ),
        concurrency=scenario.concurrency,
        max_in_flight=scenario.max_in_flight,
    )
    subscription = subscribe_shipment_tracking(
        bus,
        uri,
        handler,
        group=GROUP,
        start=backbone.StartFrom.BEGINNING,
        options=options,
    )
    dead_letters = backbone.DeadLetters(bus, uri)
    seen: list[tuple[str, int]] = []

    async def settled() -> bool:
        """Everything read and nothing pending: no outcome can change any more."""
        if subscription.completion.done():
            raise AssertionError(stopped(subscription))
        seen[:] = [await group_state(bus, stream)]
        return seen[0] == (last_id, 0)

    try:
        async with subscription:
            try:
                await eventually(settled, timeout=SETTLE_TIMEOUT, message="settling")
            except AssertionError as exc:
                letters = await dead_letters.list(group=GROUP, limit=10_000)
                raise AssertionError(
                    f"{exc}; last entry {last_id}, (last delivered, pending) {seen}, "
                    f"{subscription.stats}, handled {handler.ids}, dead-lettered "
                    f"{[(x.event_id.id, x.reason) for x in letters]}"
                ) from None
            summary = await bus.redis.xpending(stream, GROUP)
            letters = await dead_letters.list(group=GROUP, limit=10_000)
            assert subscription.running, stopped(subscription)
            assert not subscription.completion.done(), stopped(subscription)
    finally:
        if subscription.completion.done() and not subscription.completion.cancelled():
            subscription.completion.exception()  # retrieved: reported above

    assert int(summary["pending"]) == 0, summary
    problems = check(expected, handler.calls, letters)
    assert not problems[Outcome.HANDLED], "\n".join(problems[Outcome.HANDLED])
    assert not problems[Outcome.DEAD], "\n".join(problems[Outcome.DEAD])
    assert not problems[Outcome.SKIPPED], "\n".join(problems[Outcome.SKIPPED])
    written = {e.entry_id for e in expected}
    outcomes = {c.id.id for _, _, c in handler.calls}
    outcomes |= {letter.event_id.id for letter in letters}
    assert outcomes <= written, (
        f"outcomes of entries never written: {outcomes - written}"
    )


@settings(
    max_examples=50,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(scenario=scenarios())
async def test_every_entry_gets_its_outcome_and_the_loop_goes_on(
    bus: backbone.Backbone, scenario: Scenario
) -> None:
    await run_scenario(bus, scenario, note)


@pytest.mark.parametrize(
    "scenario",
    [PAYLOAD_KEYS_OF_EVERY_TYPE, PRODUCER_TIMES_OUT_OF_RANGE, ODD_REDRIVE_GROUPS],
    ids=[
        "payload-keys-of-every-type",
        "producer-times-out-of-range",
        "odd-redrive-groups",
    ],
)
async def test_pinned_scenarios(bus: backbone.Backbone, scenario: Scenario) -> None:
    """The same check on fixed scenarios, each reported on its own."""
    await run_scenario(bus, scenario, print)


def test_the_oracle_reads_payload_fields_like_the_contract() -> None:
    """The test's own decoding agrees with the contract on plain cases."""
    assert field_fits("email", pack_value("a@example.com"))
    assert field_fits("product_id", pack_value(7))
    assert field_fits("time", pack_value(moment()))
    assert not field_fits("product_id", pack_value("seven"))
    assert not field_fits("product_id", b"\xc1")
    assert not field_fits("time", pack_value(msgpack.ExtType(1, b"not a time")))
    assert not field_fits("email", None)
    assert field_fits("product_id", pack_value(decimal.Decimal(3)))
    assert not field_fits("email", pack_value(uuid.uuid4()))
