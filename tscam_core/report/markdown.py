"""Markdown table rows and the number cells of docs/results.md: percentages, the paper's figures, intervals."""

from __future__ import annotations

from ..intervals import Interval


def row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def rule(columns: int) -> str:
    """The header's separator: the first column left-aligned, the numbers right-aligned."""
    return row("---", *(["---:"] * (columns - 1)))


def pct(value: float | None, digits: int = 1) -> str:
    """A fraction in percent; "-" where the run has none."""
    return "-" if value is None else f"{100 * value:.{digits}f}"


def paper(value: float | None) -> str:
    """A figure copied from the paper, as printed there; "-" where it has none."""
    return "-" if value is None else f"{value:g}"


def cell(value: Interval | None, digits: int = 1) -> str:
    """``38.1 [36.0, 40.2]``: the figure and its 95% interval, in percent; "-" where there is none."""
    return "-" if value is None else value.percent(digits)
