"""Personal data and erasure: sealed in Redis, opened for readers, and after
`erase` read as ERASED by handlers, replays, projections, aggregates, dead
letters and the TestBus, on both backends."""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import Annotated, Any, Protocol

import pydantic
import pytest

import backbone
from backbone import ERASED, Personal, contract, operation
from backbone.deadletters import DeadLetters
from backbone.keyring import Keyring
from backbone.sealing import key_id
from backbone.testing import TestBus
from conftest import eventually
from personal_helpers import (
    CUSTOMERS,
    PROFILES,
    REGISTERED,
    SUBSCRIBED,
    Profile,
    Seen,
    dispatcher,
    every_byte,
    holds,
)

FROM_START = backbone.StartFrom.BEGINNING
URI = "customers"
ADA = "ada@example.com"
BOB = "bob@example.org"


async def publish_two(bus: backbone.Backbone) -> None:
    """Two customers, and a newsletter subscriber who is their own subject."""
    producer = bus.producer(URI, CUSTOMERS.spec)
    await producer.publish(REGISTERED, ("c-1", ADA, "UK"))
    await producer.publish(REGISTERED, ("c-2", BOB, "FR"))
    await producer.publish(SUBSCRIBED, ("cy@example.net", "releases"))


async def handled(bus: backbone.Backbone, group: str, count: int = 3) -> Seen:
    handler = Seen()
    async with bus.subscribe(
        URI, dispatcher(CUSTOMERS, handler), group=group, start=FROM_START
    ) as sub:
        await eventually(lambda: len(handler.calls) == count, message="handled")
        assert sub.stats.dead_lettered == 0
    return handler


async def test_redis_holds_no_plaintext_while_handlers_see_it(
    bus: backbone.Backbone,
) -> None:
    await publish_two(bus)
    handler = await handled(bus, "g")
    assert handler.calls == [
        ("registered", ("c-1", ADA, "UK")),
        ("registered", ("c-2", BOB, "FR")),
        ("subscribed", ("cy@example.net", "releases")),
    ]
    for secret in (ADA, BOB, "cy@example.net"):
        assert not await holds(bus, secret), secret
    # The other parameters are stored as before; the subjects themselves never
    # reach the keyring (key ids only), so a subject that is an email is safe.
    assert await holds(bus, "c-1")
    assert await holds(bus, "releases")
    ring = await bus.redis.hgetall(f"bb:{{{bus.environment}}}:subjects")
    assert set(ring) == {
        key_id(s).hex().encode() for s in ("c-1", "c-2", "cy@example.net")
    }
    assert all(len(key) == 32 for key in ring.values())


async def test_after_erase_handlers_see_erased_and_the_rest_stays(
    bus: backbone.Backbone,
) -> None:
    await publish_two(bus)
    report = await backbone.erase(bus, "c-1")
    assert (report.erased, report.outcome) == (True, "erased")
    assert report.key_id == key_id("c-1").hex()
    handler = await handled(bus, "after")
    assert handler.calls == [
        ("registered", ("c-1", ERASED, "UK")),
        ("registered", ("c-2", BOB, "FR")),  # another subject: intact
        ("subscribed", ("cy@example.net", "releases")),
    ]
    assert await DeadLetters(bus, URI).count() == 0
    again = await backbone.erase(bus, "c-1")
    assert (again.erased, again.outcome) == (False, "already erased")
    assert again.erased_at == report.erased_at
    nothing = await backbone.erase(bus, "never-seen")
    assert (nothing.outcome, nothing.erased_at) == ("no data", None)
    assert "nothing to erase" in str(nothing)


class Tier(str, enum.Enum):  # noqa: UP042 - str() is "Tier.GOLD", not "gold"
    GOLD = "gold"


@contract(name="Members")
class Members(Protocol):
    async def joined(
        self,
        member_id: Annotated[
            str, pydantic.StringConstraints(strip_whitespace=True, to_lower=True)
        ],
        name: Annotated[str, Personal("member_id")],
    ) -> None: ...

    async def ranked(self, tier: str, name: Annotated[str, Personal("tier")]) -> None:
        """A tier as the subject: passed as an enum member, stored as its value."""


async def test_the_subject_is_the_value_stored_not_the_argument_as_passed(
    bus: backbone.Backbone,
) -> None:
    """What a consumer sees as the subject, and what `erase` is given, is the
    stored value: the key is that value's, however the argument was spelled."""
    members = backbone.bind(Members)
    producer = bus.producer("members", members.spec)
    await producer.publish(members.operation("joined"), ("  M-7 ", "Ada"))
    await producer.publish(members.operation("ranked"), (Tier.GOLD, "Bob"))
    stream = bus.keys("members").stream
    assert [fields[b"o"] for _, fields in await bus.redis.xrange(stream)] == [
        b"joined",
        b"ranked",
    ]
    assert (await backbone.erase(bus, "m-7")).outcome == "erased"
    assert (await backbone.erase(bus, "gold")).outcome == "erased"

    class Seen:
        def __init__(self) -> None:
            self.calls: list[tuple[str, object]] = []

        async def joined(self, member_id: str, name: object) -> None:
            self.calls.append((member_id, name))

        async def ranked(self, tier: str, name: object) -> None:
            self.calls.append((tier, name))

    seen = Seen()
    await backbone.replay(bus, "members", dispatcher(members, seen))
    assert seen.calls == [("m-7", ERASED), ("gold", ERASED)]


async def test_a_personal_value_of_an_empty_subject_is_refused(
    bus: backbone.Backbone,
) -> None:
    """`erase` and `backbone erase` refuse an empty subject, so a value sealed
    for one could never be erased: it is never written."""
    producer = bus.producer(URI, CUSTOMERS.spec)
    with pytest.raises(backbone.ValidationError, match=r"'email'.*is empty"):
        await producer.publish(REGISTERED, ("", ADA, "UK"))
    with pytest.raises(backbone.ValidationError, match=r"'email'.*is empty"):
        await producer.publish(SUBSCRIBED, ("", "releases"))
    assert await bus.redis.xlen(bus.keys(URI).stream) == 0
    assert not await holds(bus, ADA)


@pytest.mark.parametrize("garbage", ["not-a-time", "99999999999999999999"])
async def test_an_erasure_record_someone_overwrote_is_no_crash(
    bus: backbone.Backbone, garbage: str
) -> None:
    await publish_two(bus)
    kid = key_id("c-1").hex()
    await bus.redis.hset(f"bb:{{{bus.environment}}}:erased", kid, garbage)
    first = await backbone.erase(bus, "c-1")  # deletes the key, records anew
    assert first.outcome == "erased"
    await bus.redis.hset(f"bb:{{{bus.environment}}}:erased", kid, garbage)
    again = await backbone.erase(bus, "c-1")
    assert (again.erased, again.erased_at) == (False, None)
    assert "nothing to erase" in str(again)


async def test_erasure_takes_effect_for_a_running_subscription(
    bus: backbone.Backbone,
) -> None:
    handler = Seen()
    producer = bus.producer(URI, CUSTOMERS.spec)
    async with bus.subscribe(
        URI, dispatcher(CUSTOMERS, handler), group="live", start=FROM_START
    ):
        await producer.publish(REGISTERED, ("c-1", ADA, "UK"))
        await eventually(lambda: len(handler.calls) == 1)
        await backbone.erase(bus, "c-1")  # keys are never cached across reads
        # The same event again, as a copy of it would be: payload first.
        keys = bus.keys(URI)
        first = (await bus.redis.xrange(keys.stream, count=1))[0][0].decode()
        again = f"{int(first.split('-')[0]) + 1}-0"
        await bus.redis.copy(keys.payload(first), keys.payload(again))
        meta = {"o": "registered", "v": "1", "c": "Customers", "t": "1", "p": "x"}
        await bus.redis.xadd(keys.stream, meta, id=again)
        bus.notify_written(keys.stream)
        await eventually(lambda: len(handler.calls) == 2)
    assert handler.calls[1] == ("registered", ("c-1", ERASED, "UK"))


async def test_a_new_event_after_erasure_gets_a_new_key_and_old_ones_stay_erased(
    bus: backbone.Backbone,
) -> None:
    producer = bus.producer(URI, CUSTOMERS.spec)
    await producer.publish(REGISTERED, ("c-1", ADA, "UK"))
    await backbone.erase(bus, "c-1")
    await producer.publish(REGISTERED, ("c-1", "ada@new.example", "UK"))
    handler = await handled(bus, "g", count=2)
    assert [call[1][1] for call in handler.calls] == [ERASED, "ada@new.example"]


async def test_replay_and_projection_see_erased(bus: backbone.Backbone) -> None:
    await publish_two(bus)
    await backbone.erase(bus, "c-2")
    await backbone.erase(bus, "cy@example.net")
    replayed = Seen()
    summary = await backbone.replay(bus, URI, dispatcher(CUSTOMERS, replayed))
    assert (summary.replayed, summary.undecodable) == (3, 0)
    assert replayed.calls == [
        ("registered", ("c-1", ADA, "UK")),
        ("registered", ("c-2", ERASED, "FR")),
        ("subscribed", (ERASED, "releases")),
    ]

    class Emails:
        def __init__(self) -> None:
            self.seen: list[object] = []

        async def registered(
            self, customer_id: str, email: str | backbone.Erased, country: str
        ) -> None:
            self.seen.append(email)

    emails = Emails()
    projection = backbone.Projection(
        bus, URI, "emails", emails, type(dispatcher(CUSTOMERS, Seen()))
    )
    assert await projection.catch_up() == 2
    assert emails.seen == [ADA, ERASED]
    assert projection.stats.skipped == 0


async def test_an_aggregate_sees_erased_and_its_sealed_snapshot_is_not_used(
    bus: backbone.Backbone,
) -> None:
    profiles = bus.aggregates("profiles", Profile)
    profile = await profiles.load("p-7")
    profile.name("Ada Lovelace", "UK")
    profile.note("likes engines")
    await profiles.save(profile)  # version 2: a snapshot is due
    snapshot = await bus.redis.hgetall(bus.keys("profiles").snapshot("p-7"))
    assert snapshot[b"v"] == b"2"
    assert snapshot[b"d"][:1] == b"\xc7"  # a msgpack ext...
    assert snapshot[b"d"][2] == 9  # ...of type 9: a sealed state
    assert not await holds(bus, "Ada Lovelace")
    assert await holds(bus, "likes engines")  # not personal: stays readable

    loaded = await profiles.load("p-7")
    assert loaded.applied == 0  # from the snapshot
    assert loaded.state.name == "Ada Lovelace"

    await backbone.erase(bus, "p-7")  # the subject is the aggregate id
    erased = await profiles.load("p-7")
    assert erased.applied == 2  # the snapshot cannot be opened: all events
    assert erased.state.name is None
    assert erased.state.erased
    assert erased.state.notes == ["likes engines"]
    history = await profiles.events("p-7")
    assert history[0].named == {"name": ERASED, "country": "UK"}
    assert history[1].named == {"note": "likes engines"}
    assert history[0].key_ids == frozenset()

    # Saving again stores a snapshot without personal data: not sealed.
    erased.note("second")
    erased.note("third")
    await profiles.save(erased)
    fresh = await bus.redis.hgetall(bus.keys("profiles").snapshot("p-7"))
    assert fresh[b"v"] == b"4"
    assert fresh[b"d"][0] != 0xC7 or fresh[b"d"][2] != 9
    assert (await profiles.load("p-7")).applied == 0


async def test_a_snapshot_needs_every_subject_it_holds(bus: backbone.Backbone) -> None:
    """A state built from two subjects' values is sealed under both keys."""

    @contract(name="Teams")
    class Teams(Protocol):
        async def joined(
            self, member: str, nick: Annotated[str, Personal("member")]
        ) -> None: ...

    teams = backbone.bind(Teams)

    class Team(backbone.Aggregate[dict[str, str]]):
        contract = teams
        snapshot_every = 2

        def __init__(self) -> None:
            super().__init__({})
            self.applied = 0

        def apply_joined(self, member: str, nick: str | backbone.Erased) -> None:
            self.applied += 1
            self.state[member] = "" if nick is ERASED else str(nick)

    repo = bus.aggregates("teams", Team)
    team = await repo.load("t-1")
    team.record(teams.operation("joined"), ("m-1", "Ace"))
    team.record(teams.operation("joined"), ("m-2", "Bee"))
    await repo.save(team)
    assert not await holds(bus, "Ace")
    assert not await holds(bus, "Bee")
    assert (await repo.load("t-1")).applied == 0
    await backbone.erase(bus, "m-2")
    again = await repo.load("t-1")
    assert again.applied == 2
    assert again.state == {"m-1": "Ace", "m-2": ""}


class KeptState(pydantic.BaseModel):
    """A state that keeps what `apply_named` gets, erased marker included."""

    model_config = pydantic.ConfigDict(arbitrary_types_allowed=True)
    name: str | backbone.Erased | None = None
    notes: list[str] = []


class KeptProfile(backbone.Aggregate[KeptState]):
    contract = PROFILES
    snapshot_every = 2

    def __init__(self) -> None:
        super().__init__(KeptState())
        self.applied = 0

    def apply_named(self, name: str | backbone.Erased, country: str) -> None:
        self.applied += 1
        self.state.name = name

    def apply_noted(self, note: str) -> None:
        self.applied += 1
        self.state.notes.append(note)


async def test_a_state_that_keeps_the_erased_marker_is_snapshotted_again(
    bus: backbone.Backbone, caplog: pytest.LogCaptureFixture
) -> None:
    profiles = bus.aggregates("profiles", KeptProfile)
    profile = await profiles.load("p-3")
    profile.record(PROFILES.operation("named"), ("Ada", "UK"))
    profile.record(PROFILES.operation("noted"), ("one",))
    await profiles.save(profile)
    await backbone.erase(bus, "p-3")
    erased = await profiles.load("p-3")
    assert (erased.applied, erased.state.name) == (2, ERASED)
    erased.record(PROFILES.operation("noted"), ("two",))
    erased.record(PROFILES.operation("noted"), ("three",))
    with caplog.at_level(logging.WARNING, logger="backbone.store"):
        await profiles.save(erased)  # version 4: a snapshot is due
    assert "could not store snapshot" not in caplog.text
    snapshot = await bus.redis.hgetall(bus.keys("profiles").snapshot("p-3"))
    assert snapshot[b"v"] == b"4"
    loaded = await profiles.load("p-3")
    assert loaded.applied == 0  # from the new snapshot
    assert loaded.state.name is ERASED
    assert loaded.state.notes == ["one", "two", "three"]
    assert not await holds(bus, "Ada")


async def test_a_dead_letter_copy_is_erased_too_and_redrive_delivers_erased(
    bus: backbone.Backbone,
) -> None:
    await bus.producer(URI, CUSTOMERS.spec).publish(REGISTERED, ("c-1", ADA, "UK"))
    failing = Seen(failing={ADA})
    options = backbone.SubscriptionOptions(retry=backbone.RetryPolicy(max_deliveries=1))
    async with bus.subscribe(
        URI,
        dispatcher(CUSTOMERS, failing),
        group="g",
        start=FROM_START,
        options=options,
    ) as sub:
        await eventually(lambda: sub.stats.dead_lettered == 1)
    letters = DeadLetters(bus, URI)
    [letter] = await letters.list()
    copy = bus.keys(URI).dead_letter_payload("g", letter.event_id.id)
    assert await bus.redis.exists(copy)
    assert not await holds(bus, ADA)
    assert await letters.payload(letter) == {
        "customer_id": "c-1",
        "email": backbone.personal.SEALED,
        "country": "UK",
    }
    assert str((await letters.payload(letter))["email"]) == "<personal>"

    await backbone.erase(bus, "c-1")
    shown = await letters.payload(letter)
    assert shown["email"] is ERASED
    assert str(shown["email"]) == "<erased>"
    assert shown["customer_id"] == "c-1"

    await letters.retry([letter.id])
    handler = Seen()
    async with bus.subscribe(
        URI, dispatcher(CUSTOMERS, handler), group="g", start=FROM_START
    ):
        await eventually(lambda: len(handler.calls) == 1, message="re-driven")
    assert handler.calls == [("registered", ("c-1", ERASED, "UK"))]


async def test_a_damaged_sealed_value_is_dead_lettered_undecodable(
    bus: backbone.Backbone,
) -> None:
    producer = bus.producer(URI, CUSTOMERS.spec)
    first = await producer.publish(REGISTERED, ("c-1", ADA, "UK"))
    second = await producer.publish(REGISTERED, ("c-2", BOB, "FR"))
    third = await producer.publish(REGISTERED, ("c-3", "c3@example.com", "DE"))
    keys = bus.keys(URI)
    sealed = await bus.redis.hget(keys.payload(first.id), "email")
    flipped = sealed[:-1] + bytes([sealed[-1] ^ 1])  # the GCM tag no longer fits
    await bus.redis.hset(keys.payload(first.id), "email", flipped)
    garbage = b"\xc7\x05\x07" + b"\x01abcd"  # ext 7, a body too short for a key id
    await bus.redis.hset(keys.payload(second.id), "email", garbage)
    handler = Seen()
    async with bus.subscribe(
        URI, dispatcher(CUSTOMERS, handler), group="g", start=FROM_START
    ) as sub:
        await eventually(
            lambda: sub.stats.dead_lettered == 2 and len(handler.calls) == 1
        )
    assert handler.calls == [("registered", ("c-3", "c3@example.com", "DE"))]
    letters = {
        letter.event_id.id: letter for letter in await DeadLetters(bus, URI).list()
    }
    assert {letters[i].reason for i in (first.id, second.id)} == {"undecodable"}
    assert "does not authenticate" in letters[first.id].error_message
    assert "damaged" in letters[second.id].error_message
    assert "'email'" in letters[first.id].error_message
    assert third.id not in letters

    # A replay counts them undecodable, and goes on.
    summary = await backbone.replay(bus, URI, dispatcher(CUSTOMERS, Seen()))
    assert (summary.replayed, summary.undecodable) == (1, 2)


async def test_claimed_and_recovered_entries_are_opened_too(
    bus: backbone.Backbone,
) -> None:
    await publish_two(bus)
    await backbone.erase(bus, "c-2")
    stream = bus.keys(URI).stream
    await bus.redis.xgroup_create(stream, "g", id="0")
    await bus.redis.xreadgroup("g", "w1", {stream: ">"})  # taken, never acked
    handler = Seen()
    async with bus.subscribe(
        URI, dispatcher(CUSTOMERS, handler), group="g", consumer="w1"
    ):
        await eventually(lambda: len(handler.calls) == 3, message="recovery")
    assert handler.calls[0][1] == ("c-1", ADA, "UK")
    assert handler.calls[1][1] == ("c-2", ERASED, "FR")


async def test_two_producers_creating_a_subjects_key_at_once_agree(
    url: str, environment: str
) -> None:
    async with (
        backbone.Backbone(url, environment=environment) as one,
        backbone.Backbone(url, environment=environment) as two,
    ):
        if one.embedded:  # two embedded buses are two servers: share one
            two.redis = one.redis
        ids = [key_id(f"s-{n}") for n in range(50)]
        first, second = await asyncio.gather(
            Keyring.of(one).get_or_create(ids), Keyring.of(two).get_or_create(ids)
        )
        assert first == second
        assert len(set(first.values())) == 50

        p1 = one.producer(URI, CUSTOMERS.spec)
        p2 = two.producer(URI, CUSTOMERS.spec)
        await asyncio.gather(
            *(
                producer.publish(REGISTERED, ("new-subject", f"{n}@example.com", "UK"))
                for n in range(10)
                for producer in (p1, p2)
            )
        )
        handler = Seen()
        async with one.subscribe(
            URI, dispatcher(CUSTOMERS, handler), group="g", start=FROM_START
        ):
            await eventually(lambda: len(handler.calls) == 20)
        assert sorted(call[1][1] for call in handler.calls) == sorted(
            f"{n}@example.com" for n in range(10) for _ in (1, 2)
        )
        if not one.embedded:
            from conftest import drop_environment

            await drop_environment(one)


async def test_a_batch_is_sealed_with_one_keyring_call(
    bus: backbone.Backbone, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    original = Keyring.get_or_create

    async def counting(self: Keyring, ids: Any) -> dict[bytes, bytes]:
        calls.append(len(ids))
        return await original(self, ids)

    monkeypatch.setattr(Keyring, "get_or_create", counting)
    producer = bus.producer(URI, CUSTOMERS.spec)
    async with backbone.Batch(producer) as batch:
        for n in range(20):
            batch.add(REGISTERED, (f"c-{n % 5}", f"{n}@example.com", "UK"))
    assert calls == [5]
    handler = await handled(bus, "g", count=20)
    assert handler.calls[7][1] == ("c-2", "7@example.com", "UK")


async def test_an_upcaster_sees_erased_values(bus: backbone.Backbone) -> None:
    @contract(name="Customers")
    class CustomersV1(Protocol):
        async def registered(
            self, customer_id: str, mail: Annotated[str, Personal("customer_id")]
        ) -> None: ...

    seen: list[object] = []

    def rename(payload: dict[str, Any]) -> dict[str, Any]:
        seen.append(payload["mail"])
        return {
            "customer_id": payload["customer_id"],
            "email": payload.pop("mail"),
            "country": "unknown",
        }

    @contract(name="Customers")
    class CustomersV2(Protocol):
        @operation(version=2, upcasters={1: rename})
        async def registered(
            self,
            customer_id: str,
            email: Annotated[str, Personal("customer_id")],
            country: str,
        ) -> None: ...

        async def subscribed(
            self, email: Annotated[str, Personal("email")], topic: str
        ) -> None: ...

    v1, v2 = backbone.bind(CustomersV1), backbone.bind(CustomersV2)
    producer = bus.producer(URI, v1.spec)
    await producer.publish(v1.operation("registered"), ("c-1", ADA))
    await producer.publish(v1.operation("registered"), ("c-2", BOB))
    await backbone.erase(bus, "c-2")
    handler = Seen()
    async with bus.subscribe(URI, dispatcher(v2, handler), group="g", start=FROM_START):
        await eventually(lambda: len(handler.calls) == 2)
    assert handler.calls == [
        ("registered", ("c-1", ADA, "unknown")),
        ("registered", ("c-2", ERASED, "unknown")),
    ]
    assert seen == [ADA, ERASED]


class Contact(pydantic.BaseModel):
    email: str
    verified: bool = False


async def test_an_erased_value_an_upcaster_wrapped_or_copied_reads_as_erased(
    bus: backbone.Backbone,
) -> None:
    """An upcaster put the opened value inside a model and copied it into a
    plain parameter: after erasure both read as ERASED, never a dead letter."""

    @contract(name="Customers")
    class CustomersV1(Protocol):
        async def registered(
            self, customer_id: str, mail: Annotated[str, Personal("customer_id")]
        ) -> None: ...

    def wrap(payload: dict[str, Any]) -> dict[str, Any]:
        mail = payload.pop("mail")
        return {
            "customer_id": payload["customer_id"],
            "contact": {"email": mail},
            "reply_to": mail,
        }

    @contract(name="Customers")
    class CustomersV2(Protocol):
        @operation(version=2, upcasters={1: wrap})
        async def registered(
            self,
            customer_id: str,
            contact: Annotated[Contact, Personal("customer_id")],
            reply_to: str,
        ) -> None: ...

    class Handler:
        def __init__(self) -> None:
            self.calls: list[tuple[object, ...]] = []

        async def registered(
            self, customer_id: str, contact: object, reply_to: object
        ) -> None:
            self.calls.append((customer_id, contact, reply_to))

    v1, v2 = backbone.bind(CustomersV1), backbone.bind(CustomersV2)
    producer = bus.producer(URI, v1.spec)
    await producer.publish(v1.operation("registered"), ("c-1", ADA))
    await producer.publish(v1.operation("registered"), ("c-2", BOB))
    await backbone.erase(bus, "c-2")
    expected = [("c-1", Contact(email=ADA), ADA), ("c-2", ERASED, ERASED)]
    handler = Handler()
    async with bus.subscribe(
        URI, dispatcher(v2, handler, partial=True), group="g", start=FROM_START
    ) as sub:
        await eventually(lambda: len(handler.calls) == 2)
        assert sub.stats.dead_lettered == 0
    assert handler.calls == expected
    replayed = Handler()
    summary = await backbone.replay(bus, URI, dispatcher(v2, replayed, partial=True))
    assert (summary.replayed, summary.undecodable) == (2, 0)
    assert replayed.calls == expected


async def test_the_test_bus_reads_personal_values_and_erased_ones() -> None:
    async with TestBus() as bus:
        producer = bus.producer(URI, CUSTOMERS.spec)
        await producer.publish(REGISTERED, ("c-1", ADA, "UK"))
        [event] = await bus.published(URI)
        assert event.args == {"customer_id": "c-1", "email": ADA, "country": "UK"}
        await backbone.erase(bus, "c-1")
        [event] = await bus.published(URI, "registered")
        assert event.args["email"] is ERASED
        assert event.args["country"] == "UK"


async def test_a_personal_operation_of_the_aggregate_cannot_be_plainly_published(
    bus: backbone.Backbone,
) -> None:
    producer = bus.producer("profiles", PROFILES.spec)
    with pytest.raises(backbone.ConfigurationError) as raised:
        await producer.publish(PROFILES.operation("named"), ("Ada", "UK"))
    message = str(raised.value)
    assert "Profiles.named" in message
    assert "Repository" in message
    assert "Personal('customer_id')" in message
    with pytest.raises(backbone.ConfigurationError):
        async with backbone.Batch(producer) as batch:
            batch.add(PROFILES.operation("named"), ("Ada", "UK"))
    assert await bus.redis.xlen(bus.keys("profiles").stream) == 0
    # Its other operations publish as usual.
    await producer.publish(PROFILES.operation("noted"), ("hello",))


async def test_a_snapshot_is_not_stored_when_a_subject_was_erased_meanwhile(
    bus: backbone.Backbone, caplog: pytest.LogCaptureFixture
) -> None:
    profiles = bus.aggregates("profiles", Profile)
    profile = await profiles.load("p-1")
    profile.name("Ada", "UK")
    await profiles.save(profile)  # version 1: no snapshot yet
    await backbone.erase(bus, "p-1")
    profile.note("a note")
    with caplog.at_level(logging.INFO, logger="backbone.store"):
        await profiles.save(profile)  # version 2: due, but "Ada" is erased
    assert not await bus.redis.exists(bus.keys("profiles").snapshot("p-1"))
    assert "erased subject" in caplog.text
    assert not await holds(bus, "Ada")


async def test_every_byte_covers_what_backbone_writes(bus: backbone.Backbone) -> None:
    """The scan the tests trust finds a plaintext value where there is one."""
    await bus.producer(URI, CUSTOMERS.spec).publish(
        REGISTERED, ("c-1", ADA, "plain-country")
    )
    assert await holds(bus, "plain-country")
    assert any(b"subjects" in chunk for chunk in await every_byte(bus))


def test_erased_is_a_falsy_singleton_with_a_clear_repr() -> None:
    import copy
    import pickle

    assert not ERASED
    assert repr(ERASED) == str(ERASED) == "<erased>"
    assert backbone.Erased() is ERASED
    assert copy.deepcopy(ERASED) is ERASED
    assert pickle.loads(pickle.dumps(ERASED)) is ERASED
