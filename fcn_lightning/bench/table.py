"""One row per measured ratio, and the Markdown table they make."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    op: str  # "<=" or ">="
    bound: float

    def met(self, ratio: float) -> bool:
        return ratio <= self.bound if self.op == "<=" else ratio >= self.bound

    def verdict(self, ratio: float) -> str:
        if not math.isfinite(ratio):
            return f"{self}: not measured"
        if self.met(ratio):
            return f"{self}: met"
        return f"{self}: missed by {abs(ratio - self.bound) / self.bound:.1%}"

    def __str__(self) -> str:
        return f"{self.op} {self.bound:g}"


@dataclass
class Row:
    """``a_value / b_value`` of one measurement; both sides from the same run."""

    section: str
    what: str
    a: str  # what side A is
    b: str
    a_value: float
    b_value: float
    unit: str
    target: Target | None = None
    note: str = ""

    @property
    def ratio(self) -> float:
        if not (math.isfinite(self.a_value) and math.isfinite(self.b_value)) or not self.b_value:
            return float("nan")
        return self.a_value / self.b_value

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.target.met(self.ratio)

    def cells(self) -> list[str]:
        ratio = self.ratio
        return [
            self.section,
            self.what,
            f"{self.a}: {_value(self.a_value, self.unit)}",
            f"{self.b}: {_value(self.b_value, self.unit)}",
            _ratio(ratio),
            self.target.verdict(ratio) if self.target else "-",
            self.note,
        ]


def _ratio(ratio: float) -> str:
    if not math.isfinite(ratio):
        return "n/a"
    return f"**{ratio:.3f}**" if ratio < 10 else f"**{ratio:.0f}**"


def _value(value: float, unit: str) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.3g} {unit}"


def failed(section: str, what: str, a: str, b: str, error: BaseException) -> Row:
    """A row for a measurement that could not run: the error instead of numbers."""
    message = f"{type(error).__name__}: {error}".splitlines()[0][:160]
    return Row(section, what, a, b, float("nan"), float("nan"), "", note=f"failed: {message}")


def markdown(rows: list[Row]) -> str:
    lines = [
        "| # | measurement | A | B | A / B | target | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [c.replace("|", "/") for c in row.cells()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
