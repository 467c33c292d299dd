"""Tables (rich, on the terminal; Markdown, in report.md), targets, report.json."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table as RichTable

from . import scaling, versus
from .common import Section
from .tables import Table, Target, comparisons, figure
from .tables import num as _num
from .tables import pct as _pct
from .tables import times as _x

__all__ = [
    "Table",
    "Target",
    "evaluate_baselines",
    "evaluate_targets",
    "render",
    "tables",
    "write",
]

evaluate_baselines = versus.evaluate


def _producer(section: Section) -> list[Table]:
    table = Table(
        section.title,
        [
            "variant",
            "operation",
            "events",
            "seconds",
            "events/s",
            "/ hand-written",
            "/ server ceiling",
            "stored B/event",
        ],
        right={2, 3, 4, 5, 6, 7},
    )
    for row in section.rows:
        table.rows.append(
            [
                row["name"],
                row["group"],
                _num(row["events"]),
                _num(row["seconds"], 3),
                _num(row["events_per_s"]),
                _x(row["vs_hand_written"]),
                _pct(row["vs_ceiling"]),
                _num(row["bytes_per_event"]),
            ]
        )
        if row["note"]:
            table.notes.append(f"{row['name']}: {row['note']}")
    table.notes += section.notes
    return [table, comparisons(section)]


def _consumer(section: Section) -> list[Table]:
    table = Table(
        section.title,
        ["variant", "events", "seconds", "events/s", "/ hand-written"],
        right={1, 2, 3, 4},
    )
    for row in section.rows:
        table.rows.append(
            [
                row["name"],
                _num(row["events"]),
                _num(row["seconds"], 3),
                _num(row["events_per_s"]),
                _x(row["vs_hand_written"]),
            ]
        )
        if row["note"]:
            table.notes.append(f"{row['name']}: {row['note']}")
    table.notes += section.notes
    return [table, comparisons(section)]


def _latency(section: Section) -> list[Table]:
    f = section.figures
    table = Table(section.title, ["figure", "value"], right={1})
    for label, key, digits in (
        ("p50 (ms)", "p50_ms", 3),
        ("p90 (ms)", "p90_ms", 3),
        ("p99 (ms)", "p99_ms", 3),
        ("p99.9 (ms)", "p99_9_ms", 3),
        ("max (ms)", "max_ms", 3),
        ("mean (ms)", "mean_ms", 3),
        ("events measured", "events_measured", 0),
        ("achieved send rate (events/s)", "achieved_rate", 1),
        ("pacer lateness p99 (ms)", "pacer_lag_p99_ms", 3),
        ("pacer lateness max (ms)", "pacer_lag_max_ms", 3),
    ):
        table.rows.append([label, _num(f.get(key), digits)])
    table.notes += section.notes
    return [table]


def _memory(section: Section) -> list[Table]:
    table = Table(
        section.title,
        ["layout", "hash-max-listpack-value", "events", "bytes/event", "/ inline"],
        right={1, 2, 3, 4},
    )
    for row in section.rows:
        table.rows.append(
            [
                row["name"],
                str(row["hash-max-listpack-value"]),
                _num(row["events"]),
                _num(row["bytes_per_event"], 1),
                _x(row["vs_inline"]),
            ]
        )
    table.notes += section.notes
    return [table, comparisons(section)]


def _store(section: Section) -> list[Table]:
    table = Table(
        section.title, ["variant", "events", "seconds", "events/s"], right={1, 2, 3}
    )
    for row in section.rows:
        table.rows.append(
            [
                row["name"],
                _num(row["events"]),
                _num(row["seconds"], 3),
                # a load's figure is its time: a snapshot folds no event
                "-" if row["group"] == "load" else _num(row["events_per_s"]),
            ]
        )
    table.notes += section.notes
    return [table, comparisons(section)]


def _archive(section: Section) -> list[Table]:
    table = Table(
        section.title,
        ["variant", "rows", "seconds", "rows/s", "/ row-by-row"],
        right={1, 2, 3, 4},
    )
    for row in section.rows:
        table.rows.append(
            [
                row["name"],
                _num(row["events"]),
                _num(row["seconds"], 3),
                _num(row["events_per_s"]),
                _x(row.get("vs_row_by_row")),
            ]
        )
    table.notes += section.notes
    return [table, comparisons(section)]


_RENDERERS: dict[str, Callable[[Section], list[Table]]] = {
    "producer": _producer,
    "consumer": _consumer,
    "latency": _latency,
    "memory": _memory,
    "store": _store,
    "archive": _archive,
    **versus.RENDERERS,
    "scaling": scaling.tables,
}


# --- targets ---------------------------------------------------------------------


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def evaluate_targets(sections: dict[str, Section]) -> list[Target]:
    p_best = figure(sections, "producer", "backbone_best")
    p_hand = figure(sections, "producer", "hand_written")
    p_ceiling = figure(sections, "producer", "server_ceiling")
    c_best = figure(sections, "consumer", "backbone_best")
    c_hand = figure(sections, "consumer", "hand_written")
    modes = {
        "one await per call": figure(sections, "producer", "backbone_single"),
        "concurrent calls": figure(sections, "producer", "backbone_concurrent"),
        "explicit batch": figure(sections, "producer", "backbone_batch"),
    }
    measured = {k: v for k, v in modes.items() if v is not None}
    best_mode = (
        "backbone " + max(measured, key=lambda k: measured[k])
        if measured
        else "producer not run"
    )
    consumers = {
        "default options": figure(sections, "consumer", "backbone_default"),
        "max_in_flight=1000": figure(
            sections, "consumer", "backbone_max_in_flight_1000"
        ),
    }
    measured = {k: v for k, v in consumers.items() if v is not None}
    best_consumer = (
        "backbone " + max(measured, key=lambda k: measured[k])
        if measured
        else "consumer not run"
    )
    return [
        Target(
            "producer vs hand-written",
            ">= 3x the hand-written redis.asyncio loop",
            _ratio(p_best, p_hand),
            3.0,
            True,
            "x",
            best_mode,
        ),
        Target(
            "producer vs server ceiling",
            ">= 50% of redis-cli --pipe",
            _ratio(p_best, p_ceiling),
            0.5,
            True,
            "%",
            best_mode,
        ),
        Target(
            "consumer vs hand-written",
            ">= 2x the hand-written consumer loop",
            _ratio(c_best, c_hand),
            2.0,
            True,
            "x",
            best_consumer,
        ),
        Target(
            "end-to-end p99",
            "<= 2 ms at 1,000 events/s",
            figure(sections, "latency", "p99_ms"),
            2.0,
            False,
            "ms",
            "producer process -> subscription",
        ),
        Target(
            "memory per event",
            "<= 1.3x the inline layout",
            figure(sections, "memory", "ratio"),
            1.3,
            False,
            "x",
            "order_placed, default listpack limit",
        ),
    ]


def _targets_table(targets: Sequence[Target], title: str = "Targets") -> Table:
    table = Table(
        title, ["target", "requirement", "actual", "met", "missed by", "basis"]
    )
    for t in targets:
        met = t.met
        table.rows.append(
            [
                t.name,
                t.requirement,
                "n/a" if t.actual is None else t.show(t.actual),
                "not run" if met is None else ("yes" if met else "NO"),
                t.miss(),
                t.basis,
            ]
        )
    return table


def tables(
    sections: dict[str, Section],
    targets: Sequence[Target],
    against: Sequence[Target] = (),
) -> list[Table]:
    """Every section's tables, the targets, and (AGAINST, from
    :func:`benchmarks.versus.evaluate`) the targets set against the strongest
    hand-written baselines."""
    out: list[Table] = []
    for name, section in sections.items():
        out += _RENDERERS[name](section)
    out.append(_targets_table(targets))
    if against:
        table = _targets_table(
            against, "Targets against the strongest hand-written baselines"
        )
        table.notes.append(
            "each actual is backbone / the best raw baseline of the same work "
            "(or a time): above 1.00x backbone is faster"
        )
        out.append(table)
    return out


# --- output ----------------------------------------------------------------------


def render(console: Console, table: Table) -> None:
    rich_table = RichTable(title=table.title, title_justify="left", show_lines=False)
    for i, column in enumerate(table.columns):
        rich_table.add_column(column, justify="right" if i in table.right else "left")
    for row in table.rows:
        styled = [f"[bold red]{cell}[/]" if cell == "NO" else cell for cell in row]
        rich_table.add_row(*styled)
    console.print(rich_table)
    for note in table.notes:
        console.print(f"  [dim]{note}[/]", highlight=False)
    console.print()


def markdown(table: Table) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [f"### {table.title}", ""]
    lines.append("| " + " | ".join(cell(c) for c in table.columns) + " |")
    lines.append(
        "|"
        + "|".join(
            "---:" if i in table.right else "---" for i in range(len(table.columns))
        )
        + "|"
    )
    for row in table.rows:
        lines.append("| " + " | ".join(cell(c) for c in row) + " |")
    if table.notes:
        lines.append("")
        lines += [f"- {n}" for n in table.notes]
    lines.append("")
    return "\n".join(lines)


def write(
    directory: Path,
    report: dict[str, Any],
    all_tables: Sequence[Table],
) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / "report.json"
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    machine = report["machine"]
    server = machine["redis_server"]
    packages = machine["packages"]
    header = [
        "# backbone benchmarks",
        "",
        f"- generated: {report['generated']}",
        f"- command: `{report['command']}`",
        f"- machine: {machine['cpu_count']} CPUs ({machine['cpu_model']}), "
        f"{machine['platform']}",
        f"- python {machine['python']}; redis-server {server['redis_version']} "
        f"({server['mem_allocator']}); redis-py {packages['redis']}, hiredis "
        f"{packages['hiredis']} (parser in use: "
        f"{machine['redis_py_uses_hiredis_parser']}); msgpack {packages['msgpack']}, "
        f"pydantic {packages['pydantic']}, faststream {packages['faststream']}",
        "- backbone source: "
        + (
            f"commit {machine['source']['commit']}, uncommitted changes: "
            f"{machine['source']['uncommitted_changes'] or 'none'}"
            if machine["source"]["commit"]
            else "not a git checkout (commit unknown)"
        ),
        f"- settings: {report['settings']}",
        f"- total time: {report['duration_seconds']:.1f} s",
        "",
        "",
    ]
    md_path = directory / "report.md"
    md_path.write_text("\n".join(header) + "\n".join(markdown(t) for t in all_tables))
    return json_path, md_path
