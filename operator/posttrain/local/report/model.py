"""What the report shows, as plain data: a `Section` per resource with its tables, charts and checks.

Extraction fills these in (`extract`), and the terminal, the plots and the HTML page render them;
nothing here reads a file or draws.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class Check:
    """A metric that should move one way over the stage (the toy task's sanity check)."""

    metric: str
    before: float
    after: float
    better: Literal["up", "down"]

    @property
    def ok(self) -> bool:
        """Whether the metric moved the wanted way."""
        return self.after > self.before if self.better == "up" else self.after < self.before

    def text(self) -> str:
        """One line for the report: a tick or a cross, the two values and the wanted direction."""
        wanted = "should rise" if self.better == "up" else "should fall"
        return f"{'✓' if self.ok else '✗'} {self.metric}: {number(self.before)} → {number(self.after)} ({wanted})"


@dataclass(frozen=True)
class BarChart:
    """Bars per category, one series per group (e.g. before / after / target)."""

    title: str
    categories: list[str]
    series: dict[str, list[float]]
    ylabel: str = ""
    errors: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    """Series -> (low, high) per category, drawn as error bars."""


@dataclass(frozen=True)
class LineChart:
    """Curves over steps."""

    title: str
    series: dict[str, list[tuple[float, float]]]
    xlabel: str = "step"
    ylabel: str = ""


Chart = BarChart | LineChart


@dataclass(frozen=True)
class TableData:
    """A small table."""

    title: str
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    """What the report shows about one resource."""

    kind: str
    name: str
    phase: str
    seconds: float | None = None
    attempts: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    """Output name -> `rows` or the URI."""
    tables: list[TableData] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    elo: tuple[str, float] | None = None
    """(reference participant, the student's Elo) of an AlignRound's arena, when it rated the student."""
    cost: dict[str, float] = field(default_factory=dict)
    """Summary figures of what the stage cost (`tokens/sample`, `tokens/Elo`), see `report.cost`."""

    @property
    def label(self) -> str:
        """`Kind/name`, how the report titles the section."""
        return f"{self.kind}/{self.name}"


def number(value: float) -> str:
    """A metric value as shown: whole numbers without decimals, others with four significant digits."""
    if float(value).is_integer() and abs(value) < 1e12:
        return str(int(value))
    return f"{value:.4g}"


def mean(values: list[float]) -> float:
    """The arithmetic mean (0 for no values)."""
    return sum(values) / len(values) if values else 0.0


def ends(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """(mean of the first quarter, mean of the last quarter) of a curve, or None if it is too short.

    Means over a quarter, not single points: per-step losses on a toy batch are noisy.
    """
    if len(points) < 2:
        return None
    width = max(1, len(points) // 4)
    ys = [y for _, y in points]
    return mean(ys[:width]), mean(ys[-width:])
