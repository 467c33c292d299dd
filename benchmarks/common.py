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
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Final, TypeVar

import msgpack

from contracts.shipment_tracking import Product, User
from contracts.shipment_tracking_gen import ShipmentTrackingProducer

T = TypeVar("T")

__all__ = [
    "BATCH_SIZE",
    "CONTRACT",
    "EMAIL",
    "PRODUCT_ID",
    "Comparison",
    "EntryIds",
    "Measurement",
    "Run",
    "Section",
    "Settings",
    "decode_field",
    "event_time",
    "fresh_gc",
    "hand_fields",
    "hand_meta",
    "hand_values",
    "identity",
    "interleave",
    "measurement",
    "order_placed_args",
    "packing_args",
    "padded_email",
    "run_loop",
    "write_batches",
]

CONTRACT: Final = "ShipmentTracking"
EMAIL: Final = "user42@example.com"
PRODUCT_ID: Final = 1042
BATCH_SIZE: Final = 1000
EXT_DATETIME: Final = 1
LOOP_ENV: Final = "BACKBONE_BENCH_LOOP"
"""The event loop of a run (``--loop``), seen by its child processes too."""


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(MAIN)`` on the event loop the run asked for: asyncio's, or
    uvloop's with ``--loop uvloop``. Every variant of a run, backbone's and the
    hand-written ones, runs on the same loop."""
    factory = None
    if os.environ.get(LOOP_ENV) == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


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


def hand_values(email: str, product_id: int, time_: dt.datetime) -> list[bytes]:
    """The payload values alone, in parameter order (what HMGET reads back)."""
    pack = _PACKER.pack
    return [pack(email), pack(product_id), pack(time_)]


def padded_email(size: int) -> str:
    """An ``email`` argument long enough that the packing event's three encoded
    payload values take SIZE bytes (at least the unpadded event's)."""
    base = sum(len(v) for v in hand_values(EMAIL, PRODUCT_ID, event_time()))
    pad = max(0, size - base)
    for _ in range(3):  # the string's msgpack header grows with its length
        text = "x" * pad + EMAIL
        total = sum(len(v) for v in hand_values(text, PRODUCT_ID, event_time()))
        if total == size or pad == 0:
            break
        pad = max(0, pad - (total - size))
    return "x" * pad + EMAIL


class EntryIds:
    """Explicit, increasing stream entry ids (``<ms>-<seq>``) made by the client,
    so that a MULTI/EXEC transaction can name each payload hash by its entry id
    (backbone's layout) without reading XADD's answer first. One writer per
    stream only: ids made by two writers could reach Redis out of order."""

    def __init__(self) -> None:
        self.ms = 0
        self.seq = 0

    def after(self, entry_id: bytes | str) -> None:
        """Make the next id come after ENTRY_ID (the stream's last entry)."""
        text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        ms, _, seq = text.partition("-")
        self.ms, self.seq = max(self.ms, int(ms)), int(seq or 0)

    def next(self) -> str:
        now = time.time_ns() // 1_000_000
        if now > self.ms:
            self.ms, self.seq = now, 0
        else:
            self.seq += 1
        return f"{self.ms}-{self.seq}"


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
    per_call_events: int = 10_000
    concurrency_events: int = 30_000
    size_events: int = 20_000
    size_budget_bytes: int = 100_000_000
    payload_sizes: tuple[int, ...] = (200, 2_000, 20_000)
    process_counts: tuple[int, ...] = (1, 2, 4)
    process_events: int = 100_000

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
                per_call_events=300,
                concurrency_events=2_000,
                size_events=300,
                process_events=2_000,
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


@dataclasses.dataclass(slots=True)
class Run:
    """One timed run of a variant: its seconds, and the duration of each call
    when the variant times its calls one by one."""

    seconds: float
    latencies: list[float] = dataclasses.field(default_factory=list)


async def interleave(
    settings: Settings, variants: Sequence[tuple[str, Callable[[], Awaitable[Run]]]]
) -> dict[str, list[Run]]:
    """Runs of each of VARIANTS in interleaved rounds (A, B, C, then A, B, C
    again), so that a noisy moment of the machine hits them all alike; more
    rounds while the quickest variant takes under ``repeat_below_seconds``."""
    runs: dict[str, list[Run]] = {name: [] for name, _ in variants}
    for name, once in variants:
        runs[name].append(await once())
    quickest = min(r[0].seconds for r in runs.values())
    for _ in range(repeat_count(settings, quickest)):
        for name, once in variants:
            runs[name].append(await once())
    return runs


def measurement(
    name: str, events: int, runs: list[Run], group: str = ""
) -> Measurement:
    """The Measurement of a variant's RUNS: its best run, all runs kept."""
    seconds = [r.seconds for r in runs]
    return Measurement(name, events, min(seconds), group=group, runs=seconds)
