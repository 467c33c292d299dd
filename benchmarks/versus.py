"""How backbone stands against the strongest hand-written baselines: the tables of
the baselines, sizes and processes sections, and the targets set against them
(each a ratio, backbone / the best raw baseline of the same work)."""

from __future__ import annotations

import re
from collections.abc import Callable

from .common import Section
from .tables import Table, Target, comparisons, figure, num, times

__all__ = ["RENDERERS", "evaluate"]


def _rows(
    section: Section,
    columns: list[str],
    cells: Callable[[dict[str, object]], list[str]],
) -> list[Table]:
    table = Table(section.title, columns, right=set(range(2, len(columns))))
    for row in section.rows:
        table.rows.append(cells(row))
        if row.get("note"):
            table.notes.append(f"{row['name']}: {row['note']}")
    table.notes += section.notes
    return [table, comparisons(section)]


def _f(row: dict[str, object], key: str) -> float | None:
    value = row.get(key)
    return float(value) if isinstance(value, int | float) else None


def _baselines(section: Section) -> list[Table]:
    return _rows(
        section,
        [
            *("variant", "kind", "events", "seconds", "events/s"),
            *("p50 ms", "p99 ms", "/ best raw"),
        ],
        lambda row: [
            str(row["name"]),
            str(row["group"]),
            num(_f(row, "events")),
            num(_f(row, "seconds"), 3),
            num(_f(row, "events_per_s")),
            num(_f(row, "p50_ms"), 3) if row.get("p50_ms") is not None else "-",
            num(_f(row, "p99_ms"), 3) if row.get("p99_ms") is not None else "-",
            times(_f(row, "vs_best_raw")),
        ],
    )


def _sizes(section: Section) -> list[Table]:
    return _rows(
        section,
        ["variant", "payload", "events", "seconds", "events/s", "MB/s", "/ best raw"],
        lambda row: [
            str(row["name"]),
            str(row["group"]),
            num(_f(row, "events")),
            num(_f(row, "seconds"), 3),
            num(_f(row, "events_per_s")),
            num(_f(row, "mb_per_s"), 1),
            times(_f(row, "vs_best_raw")),
        ],
    )


def _processes(section: Section) -> list[Table]:
    return _rows(
        section,
        ["variant", "processes", "events", "seconds", "events/s", "/ best raw"],
        lambda row: [
            str(row["name"]),
            str(row["processes"]),
            num(_f(row, "events")),
            num(_f(row, "seconds"), 3),
            num(_f(row, "events_per_s")),
            times(_f(row, "vs_best_raw")),
        ],
    )


RENDERERS: dict[str, Callable[[Section], list[Table]]] = {
    "baselines": _baselines,
    "sizes": _sizes,
    "processes": _processes,
}


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _largest_size(sections: dict[str, Section]) -> int | None:
    section = sections.get("sizes")
    if section is None:
        return None
    sizes = [
        int(m.group(1))
        for key in section.figures
        if (m := re.fullmatch(r"backbone_batch_(\d+)", key))
    ]
    return max(sizes, default=None)


def evaluate(sections: dict[str, Section]) -> list[Target]:
    """backbone / the best hand-written baseline, for each goal set against one;
    empty when neither the baselines nor the sizes section ran."""
    if "baselines" not in sections and "sizes" not in sections:
        return []

    def b(key: str) -> float | None:
        return figure(sections, "baselines", key)

    def ms(key: str) -> str:
        value = b(key)
        return "n/a" if value is None else f"{value:.3f} ms"

    size = _largest_size(sections)

    def s(key: str) -> float | None:
        return None if size is None else figure(sections, "sizes", f"{key}_{size}")

    at = f"{size:,} B" if size else "largest payload"
    return [
        Target(
            "one await per call vs redis.asyncio",
            ">= 2x redis.asyncio MULTI pipeline per call",
            _ratio(b("backbone_single"), b("asyncio_multi")),
            2.0,
            True,
            "x",
            f"p50 {ms('backbone_single_p50_ms')} vs {ms('asyncio_multi_p50_ms')}",
        ),
        Target(
            "one await per call vs raw round trip",
            ">= 1.0x raw hiredis MULTI/HSET/XADD/EXEC per call",
            _ratio(b("backbone_single"), b("raw_multi")),
            1.0,
            True,
            "x",
            f"p50 {ms('backbone_single_p50_ms')} vs {ms('raw_multi_p50_ms')}, "
            f"p99 {ms('backbone_single_p99_ms')} vs {ms('raw_multi_p99_ms')}",
        ),
        Target(
            "producer.batch() vs raw Lua batch",
            ">= 1.0x one EVALSHA per 1,000 events",
            _ratio(b("backbone_batch"), b("raw_lua_batch")),
            1.0,
            True,
            "x",
            "batches of 1,000",
        ),
        Target(
            "64 concurrent callers vs raw group commit",
            ">= 1.0x the raw Lua batch fed by 64 callers",
            _ratio(b("backbone_concurrent"), b("raw_group_commit")),
            1.0,
            True,
            "x",
            "64 tasks, one await per call each",
        ),
        Target(
            "subscription vs raw consumer",
            ">= 1.0x the best raw XREADGROUP+HMGET consumer",
            _ratio(b("backbone_subscription_best"), b("raw_consumer_best")),
            1.0,
            True,
            "x",
            "backbone's best options vs the faster raw loop",
        ),
        Target(
            "subscription default options",
            ">= 0.8x backbone's best options",
            _ratio(b("backbone_subscription_default"), b("backbone_subscription_best")),
            0.8,
            True,
            "x",
            "default vs max_in_flight=1000",
        ),
        Target(
            "end-to-end p99 (strict)",
            "<= 1 ms at 1,000 events/s",
            figure(sections, "latency", "p99_ms"),
            1.0,
            False,
            "ms",
            "latency section",
        ),
        Target(
            f"producer.batch() at {at}",
            ">= 0.8x raw Lua batch",
            _ratio(s("backbone_batch"), s("raw_lua_batch")),
            0.8,
            True,
            "x",
            "sizes section",
        ),
        Target(
            f"subscription at {at}",
            ">= 0.8x the best raw consumer",
            _ratio(s("backbone_subscription"), s("raw_consumer_best")),
            0.8,
            True,
            "x",
            "sizes section, default options",
        ),
    ]
