"""One verdict row, as ``compare`` and ``ab`` both produce it, and how its values read as text.

A row is one point (and, for compare, one metric of it) judged between the baseline and the
current side (harness.verdicts.words names the two sides and the verdicts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from harness.console import format_bytes, format_seconds
from harness.contract.records import Point, point_columns

STATUS = "status"   # the metric of a row judged on its status alone


@dataclass(frozen=True)
class VerdictRow:
    point: Point
    metric: str                          # "time", "time / REF", "memory", "instructions", "status"
    verdict: str                         # one of harness.verdicts.words
    regression: bool = False             # counts as a regression (exit status 1)
    baseline: float | None = None        # the side's value (time in s, bytes, instructions)
    current: float | None = None
    ratio: float | None = None           # current / baseline
    lo: float | None = None              # interval of the ratio, when there is one
    hi: float | None = None
    baseline_status: str = ""
    current_status: str = ""
    baseline_spread: float | None = None  # relative spread of a side's samples (compare)
    current_spread: float | None = None
    rounds: str = ""                     # rounds judged: "4" (ab), "3/3" (compare: per side)
    round_ratios: tuple[float, ...] = ()  # each round's ratio (ab)
    note: str = ""


# -- the point's key columns: one source (the axis table, through Point.columns) -----------------
def key_names(points: Iterable[Point] = ()) -> tuple[str, ...]:
    """The key columns of rows of these points, in order: impl, every axis of the table (a
    plug-in's included) and the stored axes of a plug-in not loaded here."""
    return tuple(point_columns(points))


def key_values(point: Point) -> dict[str, Any]:
    """The point's key columns and values, as a record stores them (a workload axis at its
    default is None, blank in a CSV)."""
    return point.columns()


# -- text ----------------------------------------------------------------------------------
def config_text(point: Point) -> str:
    """How a point's settings read in a row: 'T=1024 D=64 B=1 H=8 float32 causal forward cpu'
    and the workload axes not at their default."""
    causal = " causal" if point.causal else ""
    workload = point.workload_label()
    return (f"T={point.seq_len} D={point.head_dim} B={point.batch} H={point.heads} "
            f"{point.dtype}{causal} {point.pass_} {point.device}"
            + (f" {workload}" if workload else ""))


def value_text(metric: str, value: float | None) -> str:
    """A side's value in the unit of the row's metric ('' when there is none)."""
    if value is None:
        return ""
    if metric == "memory":
        return format_bytes(value)
    if metric == "instructions":
        return f"{value / 1e6:.2f} M"
    if metric.startswith("time /"):
        return f"{value:.3f}x"
    return format_seconds(value)


def side_texts(row: VerdictRow) -> tuple[str, str]:
    """The baseline and current cells: the statuses on a status row, else the values."""
    if row.metric == STATUS:
        return row.baseline_status or "-", row.current_status or "-"
    return value_text(row.metric, row.baseline), value_text(row.metric, row.current)


def interval_text(row: VerdictRow) -> str:
    if row.lo is None or row.hi is None:
        return ""
    return f"[{row.lo:.3f}, {row.hi:.3f}]"


def spread_text(row: VerdictRow) -> str:
    if row.baseline_spread is None or row.current_spread is None:
        return ""
    return f"±{row.baseline_spread:.1%} / ±{row.current_spread:.1%}"
