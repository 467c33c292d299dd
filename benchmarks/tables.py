"""The cells of the report: tables, targets and how figures are written."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from .common import Section

__all__ = ["Table", "Target", "comparisons", "figure", "num", "pct", "times"]


@dataclasses.dataclass(slots=True)
class Table:
    """A titled table of text cells, rendered both with rich and as Markdown."""

    title: str
    columns: list[str]
    rows: list[list[str]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    right: set[int] = dataclasses.field(default_factory=set)


def num(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def times(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.0f}%"


@dataclasses.dataclass(slots=True)
class Target:
    """One goal: ACTUAL compared with LIMIT (at least, or at most)."""

    name: str
    requirement: str
    actual: float | None
    limit: float
    at_least: bool
    unit: str
    basis: str

    @property
    def met(self) -> bool | None:
        if self.actual is None:
            return None
        return self.actual >= self.limit if self.at_least else self.actual <= self.limit

    def show(self, value: float) -> str:
        if self.unit == "%":
            return f"{value * 100:.0f}%"
        if self.unit == "ms":
            return f"{value:.3f} ms"
        return f"{value:.2f}x"

    def miss(self) -> str:
        if self.actual is None:
            return "not measured"
        if self.met:
            return ""
        if self.at_least:
            factor = self.limit / self.actual if self.actual > 0 else math.inf
            return (
                f"short by {self.show(self.limit - self.actual)}: needs "
                f"{factor:.2f}x the current figure"
            )
        over = self.actual - self.limit
        return f"over by {self.show(over)}: must fall by {over / self.actual:.0%}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "requirement": self.requirement,
            "actual": self.actual,
            "limit": self.limit,
            "unit": self.unit,
            "basis": self.basis,
            "met": self.met,
            "miss": self.miss(),
        }


def comparisons(section: Section) -> Table:
    """SECTION's derived figures (ratios, shares) as a table of their own."""
    table = Table(f"{section.title}: ratios", ["comparison", "value"], right={1})
    for c in section.comparisons:
        table.rows.append([c.label, c.text()])
    return table


def figure(sections: dict[str, Section], section: str, key: str) -> float | None:
    """Figure KEY of SECTION, None when the section did not run or has no number."""
    s = sections.get(section)
    if s is None:
        return None
    value = s.figures.get(key)
    if value is None or math.isnan(value):
        return None
    return value
