"""What every section shares: the event, its hand-made encodings, settings, timing.

Every producer and consumer variant carries the same event, the ShipmentTracking
``packing(email, product_id, time)`` operation with the values below, so the
figures compare the same bytes moved by different code.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import decimal
import gc
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import msgpack

from contracts.shipment_tracking import Product, User
from contracts.shipment_tracking_gen import ShipmentTrackingProducer

__all__ = [
    "BATCH_SIZE",
    "CONTRACT",
    "EMAIL",
    "PRODUCT_ID",
    "Comparison",
    "Measurement",
    "Section",
    "Settings",
    "decode_field",
    "event_time",
    "fresh_gc",
    "hand_fields",
    "hand_meta",
    "identity",
    "order_placed_args",
    "packing_args",
    "write_batches",
]

CONTRACT: Final = "ShipmentTracking"
EMAIL: Final = "user42@example.com"
PRODUCT_ID: Final = 1042
BATCH_SIZE: Final = 1000
EXT_DATETIME: Final = 1


def event_time() -> dt.datetime:
    """The ``time`` argument of the benchmark event (fixed, microsecond precision)."""
    return dt.datetime(2026, 11, 23, 12, 0, 0, 123456, tzinfo=dt.UTC)


def packing_args() -> tuple[str, int, dt.datetime]:
    return EMAIL, PRODUCT_ID, event_time()


def order_placed_args() -> tuple[User, Product, dt.datetime]:
    user = User(id=42, name="User 42", email=EMAIL)
    product = Product(id=PRODUCT_ID, name="Widget 42", price=decimal.Decimal("9.99"))
    return user, product, event_time()


async def write_batches(
    producer: ShipmentTrackingProducer,
    operation: str,
    args: Sequence[Any],
    events: int,
    size: int,
) -> None:
    """EVENTS OPERATION(ARGS) events through PRODUCER, in explicit batches of SIZE."""
    left = events
    while left > 0:
        n = min(size, left)
        async with producer.batch() as batch:
            add = getattr(batch, operation)
            for _ in range(n):
                add(*args)
        left -= n


def identity() -> str:
    """A producer identity shaped like backbone's (host:pid:random)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


# --- the hand-written layout (same bytes as backbone's, written without backbone) ---


def _default(obj: object) -> object:
    if isinstance(obj, dt.datetime):
        return msgpack.ExtType(EXT_DATETIME, obj.isoformat().encode())
    raise TypeError(f"cannot encode {type(obj).__qualname__}")


def _ext_hook(code: int, data: bytes) -> object:
    if code == EXT_DATETIME:
        return dt.datetime.fromisoformat(data.decode())
    return msgpack.ExtType(code, data)


_PACKER = msgpack.Packer(default=_default, use_bin_type=True, autoreset=True)


def hand_fields(email: str, product_id: int, time_: dt.datetime) -> list[bytes]:
    """The payload hash fields of one packing event, msgpack-encoded by hand
    (the same bytes backbone's codec writes, without pydantic)."""
    pack = _PACKER.pack
    return [
        b"email",
        pack(email),
        b"product_id",
        pack(product_id),
        b"time",
        pack(time_),
    ]


def hand_meta(operation: str, producer: str) -> list[bytes | str]:
    """The stream-entry metadata backbone writes: o, v, c, t, p."""
    return [
        b"o",
        operation,
        b"v",
        b"1",
        b"c",
        CONTRACT,
        b"t",
        str(time.time_ns() // 1_000_000),
        b"p",
        producer,
    ]


def decode_field(raw: bytes) -> Any:
    """Read one msgpack payload field (the hand-written consumer's decoder)."""
    return msgpack.unpackb(raw, raw=False, ext_hook=_ext_hook, strict_map_key=False)


# --- settings and results ------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Settings:
    """Sizes of one run (``--quick`` shrinks them all)."""

    quick: bool = False
    producer_events: int = 30_000
    consumer_events: int = 100_000
    concurrency: int = 64
    batch_size: int = BATCH_SIZE
    repeats: int = 3
    repeat_below_seconds: float = 5.0
    latency_rate: int = 1_000
    latency_seconds: float = 10.0
    latency_warmup_seconds: float = 1.0
    memory_events: int = 20_000
    store_events: int = 100_000
    archive_events: int = 50_000
    archive_row_by_row: int = 5_000

    @classmethod
    def make(cls, *, quick: bool, events: int | None) -> Settings:
        if quick:
            base = cls(
                quick=True,
                repeats=1,
                producer_events=2_000,
                consumer_events=2_000,
                latency_seconds=2.0,
                latency_warmup_seconds=0.25,
                memory_events=2_000,
                store_events=2_000,
                archive_events=2_000,
                archive_row_by_row=500,
            )
        else:
            base = cls()
        if events is not None:
            base = dataclasses.replace(
                base, producer_events=events, consumer_events=events
            )
        return base

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(slots=True)
class Measurement:
    """One variant's throughput (or None with a note when it could not run)."""

    name: str
    events: int
    seconds: float | None
    group: str = ""
    note: str = ""
    bytes_per_event: int | None = None
    runs: list[float] = dataclasses.field(default_factory=list)

    @property
    def rate(self) -> float | None:
        if self.seconds is None or self.seconds <= 0:
            return None
        return self.events / self.seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "group": self.group,
            "events": self.events,
            "seconds": self.seconds,
            "events_per_s": self.rate,
            "bytes_per_event": self.bytes_per_event,
            "runs_seconds": self.runs or ([self.seconds] if self.seconds else []),
            "note": self.note,
        }


@dataclasses.dataclass(frozen=True, slots=True)
class Comparison:
    """A derived figure: a factor (x), a percentage (%) or a byte count (B)."""

    label: str
    value: float | None
    unit: str = "x"

    def text(self) -> str:
        if self.value is None:
            return "n/a"
        if self.unit == "%":
            return f"{self.value * 100:.0f}%"
        if self.unit == "B":
            return f"{self.value:.0f} B"
        return f"{self.value:.2f}x"

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "value": self.value, "unit": self.unit}


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


@dataclasses.dataclass(slots=True)
class Section:
    """The outcome of one benchmark section."""

    name: str
    title: str
    rows: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    comparisons: list[Comparison] = dataclasses.field(default_factory=list)
    figures: dict[str, float | None] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "rows": self.rows,
            "comparisons": [c.as_dict() for c in self.comparisons],
            "figures": self.figures,
            "notes": self.notes,
            "section_seconds": self.seconds,
        }


def fresh_gc() -> None:
    """Start each timed variant from the same garbage-collector state."""
    gc.collect()


def repeat_count(settings: Settings, first_run: float) -> int:
    """How many more runs a variant gets after a first run of FIRST_RUN seconds:
    short variants run ``settings.repeats`` times and keep their best (least
    disturbed) run; long ones average out noise by themselves and run once."""
    if first_run >= settings.repeat_below_seconds:
        return 0
    return max(0, settings.repeats - 1)


async def timed(body: Callable[[], Awaitable[None]]) -> float:
    """Seconds BODY takes (after a collection, so no variant pays another's garbage)."""
    fresh_gc()
    started = time.perf_counter()
    await body()
    return time.perf_counter() - started


async def wait_until(
    condition: Callable[[], Awaitable[bool]], *, timeout: float, poll: float = 0.001
) -> bool:
    """Poll CONDITION until true; False on TIMEOUT."""
    deadline = time.monotonic() + timeout
    while True:
        if await condition():
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(poll)
