"""Contracts with personal parameters, their handlers and an aggregate, for the
personal-data and erasure tests (bound without codegen)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Annotated, Any, Protocol

import pydantic

import backbone
from backbone import ERASED, Personal, contract


@contract(name="Customers")
class Customers(Protocol):
    async def registered(
        self,
        customer_id: str,
        email: Annotated[str, Personal("customer_id")],
        country: str,
    ) -> None:
        """A customer signed up; the email is theirs."""

    async def subscribed(
        self, email: Annotated[str, Personal("email")], topic: str
    ) -> None:
        """Someone subscribed to a newsletter: the email is its own subject."""


@contract(name="Profiles")
class Profiles(Protocol):
    async def named(self, name: Annotated[str, Personal], country: str) -> None:
        """The profile's holder (the aggregate) gave a name."""

    async def noted(self, note: str) -> None: ...


CUSTOMERS = backbone.bind(Customers)
PROFILES = backbone.bind(Profiles)
REGISTERED = CUSTOMERS.operation("registered")
SUBSCRIBED = CUSTOMERS.operation("subscribed")


def dispatcher(
    compiled: backbone.CompiledContract, handler: object, *, partial: bool = False
) -> Any:
    class Routes(backbone.Dispatcher[Any]):
        contract = compiled

        def routes(self, handler: Any) -> Mapping[str, backbone.Route]:
            return {
                op.name: backbone.route(
                    compiled.codecs[op.name], getattr(handler, op.method)
                )
                for op in compiled.spec.operations
            }

    return Routes(handler, partial=partial)


@dataclasses.dataclass
class Seen:
    """A Customers handler that records its calls; FAILING emails raise."""

    calls: list[tuple[str, tuple[Any, ...]]] = dataclasses.field(default_factory=list)
    failing: set[str] = dataclasses.field(default_factory=set)

    async def registered(
        self, customer_id: str, email: str | backbone.Erased, country: str
    ) -> None:
        if email in self.failing:
            raise RuntimeError("cannot handle this one")
        self.calls.append(("registered", (customer_id, email, country)))

    async def subscribed(self, email: str | backbone.Erased, topic: str) -> None:
        self.calls.append(("subscribed", (email, topic)))


class ProfileState(pydantic.BaseModel):
    name: str | None = None
    erased: bool = False
    country: str = ""
    notes: list[str] = []


class Profile(backbone.Aggregate[ProfileState]):
    contract = PROFILES
    snapshot_every = 2

    def __init__(self) -> None:
        super().__init__(ProfileState())
        self.applied = 0

    def apply_named(self, name: str | backbone.Erased, country: str) -> None:
        self.applied += 1
        self.state.name = None if name is ERASED else str(name)
        self.state.erased = name is ERASED
        self.state.country = country

    def apply_noted(self, note: str) -> None:
        self.applied += 1
        self.state.notes.append(note)

    def name(self, name: str, country: str) -> None:
        self.record(PROFILES.operation("named"), (name, country))

    def note(self, note: str) -> None:
        self.record(PROFILES.operation("noted"), (note,))


async def every_byte(bus: backbone.Backbone) -> list[bytes]:
    """Every key name and stored byte string of BUS's environment (streams'
    entries, hashes' fields and values, strings, lists)."""
    found: list[bytes] = []
    patterns = (f"bb:{{{bus.environment}:*", f"bb:{{{bus.environment}}}*")
    for pattern in patterns:
        async for key in bus.redis.scan_iter(match=pattern, count=1000):
            found.append(key)
            kind = (await bus.redis.type(key)).decode()
            if kind == "hash":
                for field, value in (await bus.redis.hgetall(key)).items():
                    found += [field, value]
            elif kind == "stream":
                for entry_id, fields in await bus.redis.xrange(key):
                    found.append(entry_id)
                    for field, value in fields.items():
                        found += [field, value]
            elif kind == "string":
                found.append(await bus.redis.get(key))
            elif kind == "list":
                found += await bus.redis.lrange(key, 0, -1)
            elif kind == "zset":
                found += [
                    m for m, _ in await bus.redis.zrange(key, 0, -1, withscores=True)
                ]
    return found


async def holds(bus: backbone.Backbone, text: str) -> bool:
    """Whether any key or value of BUS's environment holds TEXT (UTF-8)."""
    needle = text.encode()
    return any(needle in chunk for chunk in await every_byte(bus))
