"""Testing a service's handlers and producers without a Redis server.

:class:`TestBus` is a :class:`~backbone.Backbone` on an embedded in-process Redis
(the ``backbone[embedded]`` extra) that remembers what it made: the events
published through it are there to read back, typed, and :meth:`TestBus.drain`
waits until every subscription made on it has finished everything published, so
a test needs no polling of its own::

    async def test_transit_answers_an_order() -> None:
        async with TestBus() as bus:
            producer = shipment_tracking_producer(bus, "orders")
            async with subscribe_shipment_tracking(
                bus, "orders", Transit(producer), group="transit"
            ):
                await producer.order_placed(user, product, now)
                await bus.drain()
            (packing,) = await bus.published("orders", "packing")
            assert packing.args["product_id"] == product.id

With pytest and pytest-asyncio, the ``backbone_bus`` fixture gives each test a
fresh ``TestBus`` and stops what the test left running: this module is a pytest
plugin, registered when backbone is installed.

Everything runs the real code paths (the same scripts, codecs, retries and dead
letters as against Redis), so what passes here behaves the same in production.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, cast

from .codec import OperationCodec, unpack_value
from .connection import Backbone
from .deadletters import DeadLetter, DeadLetters
from .errors import DecodeError
from .events import F_OPERATION, F_VERSION, EventId, as_text, entry_version
from .keyring import Keyring, open_payloads
from .sealing import SealError

if TYPE_CHECKING:
    from .consume import Subscription
    from .contract import ContractSpec
    from .dispatch import Dispatcher
    from .events import EventId as _EventId
    from .keys import StreamKeys
    from .options import StartFrom, SubscriptionOptions
    from .producer import Producer, ProducerOptions

__all__ = ["Published", "TestBus", "backbone_bus"]


@dataclasses.dataclass(frozen=True, slots=True)
class Published:
    """One event of a stream, as published: its id, operation and arguments
    (typed by the contract when the bus knows it, else as msgpack gave them)."""

    id: EventId
    uri: str
    operation: str
    args: dict[str, Any]
    metadata: dict[str, str]


class TestBus(Backbone):
    """An embedded bus for tests: see the module documentation."""

    __test__ = False  # not a test class, whatever pytest thinks of its name

    def __init__(self, *, environment: str = "test") -> None:
        super().__init__("memory://", environment=environment)
        self.subscriptions: list[Subscription] = []
        self._uris: dict[str, ContractSpec | None] = {}

    # --- what the bus makes ----------------------------------------------------------

    def producer(
        self,
        uri: str,
        contract: ContractSpec | None = None,
        options: ProducerOptions | None = None,
        *,
        partitions: int | None = None,
    ) -> Producer:
        if contract is not None or uri not in self._uris:
            self._uris[uri] = contract or self._uris.get(uri)
        return super().producer(uri, contract, options, partitions=partitions)

    def subscribe(
        self,
        uri: str,
        dispatcher: Dispatcher[Any],
        *,
        group: str,
        consumer: str | None = None,
        start: StartFrom | _EventId | str | None = None,
        options: SubscriptionOptions | None = None,
        partitions: int | None = None,
    ) -> Subscription:
        from .options import StartFrom

        if self._uris.get(uri) is None:
            self._uris[uri] = dispatcher.contract.spec
        subscription = super().subscribe(
            uri,
            dispatcher,
            group=group,
            consumer=consumer,
            # A test's subscription sees what the test published before it.
            start=StartFrom.BEGINNING if start is None else start,
            options=options,
            partitions=partitions,
        )
        self.subscriptions.append(subscription)
        return subscription

    # --- reading back ----------------------------------------------------------------

    async def published(
        self, uri: str, operation: str | None = None
    ) -> list[Published]:
        """The events of stream URI (of OPERATION only), oldest first. Personal
        values read as they would in a handler: their plaintext, or
        ``backbone.ERASED`` once their subject was erased. A partitioned
        stream's events come partition by partition."""
        found: list[Published] = []
        whole = self.keys(uri)
        recorded = await self.redis.get(whole.partitions)
        count = int(recorded) if recorded and whole.partition is None else 1
        for partition in range(count):
            keys = whole if count == 1 else whole.of_partition(partition)
            found += await self._published(keys, uri, operation)
        return found

    async def _published(
        self, keys: StreamKeys, uri: str, operation: str | None
    ) -> list[Published]:
        codecs = self._codecs(uri)
        found: list[Published] = []
        entries: list[Any] = list(await self.redis.xrange(keys.stream) or [])
        for raw_id, raw_fields in entries:
            entry_id = as_text(raw_id)
            fields = {as_text(k): as_text(v) for k, v in (raw_fields or {}).items()}
            name = fields.get(as_text(F_OPERATION), "")
            if operation is not None and name != operation:
                continue
            payload = cast(
                dict[bytes, bytes], await self.redis.hgetall(keys.payload(entry_id))
            )
            (opened,) = await open_payloads(Keyring.of(self), [payload])
            if isinstance(opened, SealError):
                raise DecodeError("undecodable", f"{keys.payload(entry_id)}: {opened}")
            codec = codecs.get(name)
            if codec is not None:
                version = entry_version(raw_fields.get(F_VERSION))
                values = codec.decode(payload, version)
                args = dict(zip(codec.parameter_names, values, strict=True))
            else:
                args = {as_text(k): unpack_value(v) for k, v in payload.items()}
            found.append(
                Published(EventId(keys.stream, entry_id), uri, name, args, fields)
            )
        return found

    def _codecs(self, uri: str) -> dict[str, OperationCodec]:
        spec = self._uris.get(uri)
        if spec is None:
            return {}
        return {op.name: OperationCodec(op) for op in spec.operations}

    async def dead_letters(self, uri: str) -> list[DeadLetter]:
        """The dead letters of stream URI, oldest first."""
        return await DeadLetters(self, uri).list(limit=10_000)

    # --- waiting ---------------------------------------------------------------------

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until every running subscription of this bus has finished every
        event published so far (handled, skipped or dead-lettered, and acked),
        including events their handlers published meanwhile.

        Raises :class:`TimeoutError` naming what is still unfinished.
        """
        unstarted = [s for s in self.subscriptions if not s.started]
        if unstarted:
            raise RuntimeError(
                f"{', '.join(repr(s) for s in unstarted)} was made but never "
                "started: `await` it, or use it in `async with`, before draining"
            )
        deadline = time.monotonic() + timeout
        while True:
            waiting = [s for s in self.subscriptions if not await self._idle(s)]
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"after {timeout:g}s these subscriptions still have events to "
                    f"finish: {', '.join(repr(s) for s in waiting)} (a handler that "
                    "never returns, or retries with a long backoff?)"
                )
            await asyncio.sleep(0.001)

    async def _idle(self, subscription: Subscription) -> bool:
        if not subscription.running:
            return True
        if subscription.in_flight:
            return False
        from .consume.partitioned import PartitionedSubscription

        if isinstance(subscription, PartitionedSubscription):
            parts = subscription.parts  # every partition, held or not
        else:
            parts = [subscription.keys]
        for part in parts:
            if not await self._drained(part.stream, subscription.group):
                return False
        return True

    async def _drained(self, stream: str, group: str) -> bool:
        last = await self.redis.xrevrange(stream, count=1)
        if not last:
            return True
        for info in await self.redis.xinfo_groups(stream):
            if as_text(info.get("name")) == group:
                delivered = as_text(info.get("last-delivered-id"))
                pending = int(info.get("pending", 0))
                return delivered == as_text(last[0][0]) and pending == 0
        return False

    # --- lifetime --------------------------------------------------------------------

    async def close(self) -> None:
        """Stop the subscriptions still running, then close."""
        await asyncio.gather(
            *(s.stop() for s in self.subscriptions if s.running),
            return_exceptions=True,
        )
        await super().close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


try:  # the pytest fixture, when pytest-asyncio is there
    import pytest_asyncio

    @pytest_asyncio.fixture
    async def backbone_bus() -> AsyncIterator[TestBus]:
        """A fresh :class:`TestBus` per test; what the test left running stops."""
        async with TestBus() as bus:
            yield bus

except ImportError:  # pragma: no cover - depends on the environment

    async def backbone_bus() -> AsyncIterator[TestBus]:
        """Needs pytest-asyncio: ``pip install pytest-asyncio``."""
        raise RuntimeError(
            "the backbone_bus fixture needs pytest-asyncio: pip install pytest-asyncio"
        )
        yield  # pragma: no cover
