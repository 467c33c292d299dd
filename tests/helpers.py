"""Handlers and builders the tests share."""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
from collections import Counter
from typing import Any

from redis.asyncio.cluster import RedisCluster

import backbone
from contracts.shipment_tracking import Product, User

UTC = dt.UTC


def user(index: int = 1) -> User:
    return User(id=index, name=f"User {index}", email=f"user{index}@example.com")


def product(index: int = 1) -> Product:
    return Product(
        id=100 + index, name=f"Widget {index}", price=decimal.Decimal("9.99")
    )


def moment(second: int = 0) -> dt.datetime:
    return dt.datetime(2026, 11, 23, 12, 0, second, 123456, tzinfo=UTC)


class Recorder:
    """A ShipmentTracking handler that records every call with its context."""

    def __init__(self, name: str = "recorder") -> None:
        self.name = name
        self.calls: list[tuple[str, tuple[Any, ...], backbone.EventContext]] = []
        self.changed = asyncio.Event()

    def _record(
        self, op: str, args: tuple[Any, ...], context: backbone.EventContext
    ) -> None:
        self.calls.append((op, args, context))
        self.changed.set()

    @property
    def ids(self) -> list[str]:
        return [context.id.id for _, _, context in self.calls]

    def count(self) -> int:
        return len(self.calls)

    def duplicates(self) -> int:
        return sum(n - 1 for n in Counter(self.ids).values() if n > 1)

    async def order_placed(
        self,
        user: User,
        product: Product,
        time: dt.datetime,
        *,
        context: backbone.EventContext = backbone.NO_CONTEXT,
    ) -> None:
        self._record("order_placed", (user, product, time), context)

    async def packing(
        self,
        email: str,
        product_id: int,
        time: dt.datetime,
        *,
        context: backbone.EventContext = backbone.NO_CONTEXT,
    ) -> None:
        self._record("packing", (email, product_id, time), context)

    async def on_delivery(
        self,
        email: str,
        product_id: int,
        time: dt.datetime,
        *,
        context: backbone.EventContext = backbone.NO_CONTEXT,
    ) -> None:
        self._record("on_delivery", (email, product_id, time), context)

    async def on_received(
        self,
        email: str,
        product_id: int,
        time: dt.datetime,
        *,
        context: backbone.EventContext = backbone.NO_CONTEXT,
    ) -> None:
        self._record("on_received", (email, product_id, time), context)


class Flaky(Recorder):
    """Records every attempt of `packing`; fails the first FAILURES attempts of each
    event, and waits on GATE (when given) before finishing."""

    def __init__(
        self,
        failures: int = 0,
        gate: asyncio.Event | None = None,
        error: type[Exception] = RuntimeError,
        manual_ack: bool = False,
    ) -> None:
        super().__init__("flaky")
        self.failures = failures
        self.gate = gate
        self.error = error
        self.manual_ack = manual_ack
        self.attempts: Counter[str] = Counter()
        self.running = 0
        self.started: list[str] = []
        self.finished: list[str] = []

    async def packing(
        self,
        email: str,
        product_id: int,
        time: dt.datetime,
        *,
        context: backbone.EventContext = backbone.NO_CONTEXT,
    ) -> None:
        event = context.event_id.id  # the original id, also for re-driven events
        self.attempts[event] += 1
        self.started.append(event)
        self.running += 1
        self.changed.set()
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.attempts[event] <= self.failures:
                raise self.error(f"attempt {self.attempts[event]} of {event} failed")
            self._record("packing", (email, product_id, time), context)
            if self.manual_ack and product_id % 2 == 0:
                await context.ack()
            self.finished.append(event)
        finally:
            self.running -= 1


async def write_bad_inputs(bus: backbone.Backbone, uri: str) -> dict[str, str]:
    """One raw entry of each kind of bad input on stream URI; returns reason ->
    entry id. They are written with a plain XADD then HSET, which is not atomic
    the way backbone's writes are: write them before a consumer runs."""
    from backbone.codec import pack_value

    stream = bus.keys(uri).stream
    meta = {"o": "packing", "v": "1", "c": "ShipmentTracking", "t": "1", "p": "test"}
    good = {
        "email": pack_value("a@example.com"),
        "product_id": pack_value(1),
        "time": pack_value(moment()),
    }

    async def entry(fields: dict[str, str], payload: dict[str, bytes] | None) -> str:
        entry_id: str = (await bus.redis.xadd(stream, fields)).decode()
        if payload is not None:
            await bus.redis.hset(bus.keys(uri).payload(entry_id), mapping=payload)
        return entry_id

    return {
        "missing-payload": await entry(meta, None),
        "undecodable": await entry(meta, {**good, "product_id": b"\xc1"}),
        "invalid-payload": await entry(meta, {**good, "product_id": pack_value("one")}),
        "unknown-operation": await entry({**meta, "o": "returned"}, good),
        "malformed-entry": await entry({"x": "y"}, None),
    }


# --- Redis Cluster -------------------------------------------------------------------


def cluster_client(bus: backbone.Backbone) -> RedisCluster:
    """BUS's client, which must be a Redis Cluster's."""
    assert isinstance(bus.redis, RedisCluster), f"{bus!r} is not on a Redis Cluster"
    return bus.redis


async def node_of(bus: backbone.Backbone, key: str) -> str:
    """``host:port`` of the master that holds KEY on BUS's cluster."""
    client = cluster_client(bus)
    await client.initialize()
    return str(client.get_node_from_key(key).name)


async def masters(bus: backbone.Backbone) -> set[str]:
    """``host:port`` of every master of BUS's cluster."""
    client = cluster_client(bus)
    await client.initialize()
    return {str(node.name) for node in client.get_primaries()}


async def spread_uris(bus: backbone.Backbone, prefix: str) -> list[str]:
    """One stream URI per master of BUS's cluster (``PREFIX.<n>``), each stream
    held by another master: streams whose keys land on every node."""
    wanted = await masters(bus)
    found: dict[str, str] = {}
    for n in range(10_000):
        uri = f"{prefix}.{n}"
        found.setdefault(await node_of(bus, bus.keys(uri).stream), uri)
        if set(found) == wanted:
            return [found[node] for node in sorted(found)]
    raise AssertionError(f"no URIs {prefix}.<n> on every master of {wanted}")
