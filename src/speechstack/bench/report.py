"""Benchmark results: checks against targets, stages, interleaved timing, the printed table."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Check:
    """One measured number against its target; ``passed`` is computed from the two."""

    name: str
    value: float
    target: float
    unit: str  # "x", "clips/s", "s", ...
    at_least: bool = True  # True: value >= target passes; False: value <= target passes

    @property
    def passed(self) -> bool:
        return self.value >= self.target if self.at_least else self.value <= self.target

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "target": self.target,
            "unit": self.unit,
            "comparison": ">=" if self.at_least else "<=",
            "passed": self.passed,
        }


@dataclass
class Stage:
    """The numbers of one benchmark: ``measured`` holds everything (JSON-ready), ``lines``
    the informative rows of the table (label, formatted value), ``checks`` the targets."""

    key: str
    title: str
    measured: dict[str, Any] = field(default_factory=dict)
    lines: list[tuple[str, str]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None  # why the stage did not run

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "measured": self.measured,
            "checks": [check.as_dict() for check in self.checks],
            "notes": self.notes,
            "skipped": self.skipped,
        }


def interleaved(
    functions: dict[str, Callable[[], object]],
    rounds: int,
    sync: Callable[[], None] = lambda: None,
) -> dict[str, list[float]]:
    """Seconds per call of each function, measured ``rounds`` times, interleaved (the order
    rotates every round) so a noisy neighbour slows every candidate alike."""
    names = list(functions)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            sync()
            start = time.perf_counter()
            functions[name]()
            sync()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def summary(seconds: list[float]) -> dict[str, float]:
    return {"best": min(seconds), "median": statistics.median(seconds), "runs": len(seconds)}


def rate(count: float, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def number(value: float, unit: str = "") -> str:
    """``1234.5, "clips/s"`` -> ``"1,234 clips/s"``; ratios get two decimals."""
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "%":
        return f"{value:+.1f}%"
    if unit in {"s", "ms", "MB"}:
        return f"{value:,.1f} {unit}" if abs(value) < 1000 else f"{value:,.0f} {unit}"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{text} {unit}".strip()


def format_report(stages: list[Stage], header: str) -> str:
    """A fixed-width table: one row per informative number and per check (PASS/FAIL)."""
    rows: list[tuple[str, str, str, str, str]] = []
    for index, stage in enumerate(stages, start=1):
        label = f"{index}. {stage.title}"
        if stage.skipped:
            rows.append((label, f"skipped: {stage.skipped}", "", "", ""))
            continue
        for text, value in stage.lines:
            rows.append((label, text, value, "", ""))
            label = ""
        for check in stage.checks:
            comparison = ">=" if check.at_least else "<="
            target = f"{comparison} {number(check.target, check.unit)}"
            verdict = "PASS" if check.passed else "FAIL"
            rows.append((label, check.name, number(check.value, check.unit), target, verdict))
            label = ""
        for note in stage.notes:
            rows.append((label, f"note: {note}", "", "", ""))
            label = ""
    headers = ("stage", "measure", "value", "target", "result")
    widths = [max(len(headers[i]), *(len(row[i]) for row in rows)) for i in range(5)]
    widths[1] = min(widths[1], 70)

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

    checks = [check for stage in stages for check in stage.checks]
    passed = sum(check.passed for check in checks)
    footer = f"{passed}/{len(checks)} checks passed"
    body = [line(headers), line(tuple("-" * width for width in widths))]
    body += [line(row).rstrip() for row in rows]
    return "\n".join([header, "", *body, "", footer])
