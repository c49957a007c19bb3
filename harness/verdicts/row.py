"""One verdict row, as ``compare`` and ``ab`` both produce it, and how its values read as text.

A row is one point (and, for compare, one metric of it) judged between the baseline and the
current side (harness.verdicts.words names the two sides and the verdicts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from harness.console import format_bytes, format_seconds
from harness.contract.records import Point, point_columns
from harness.verdicts.words import verdict_text

STATUS = "status"   # the metric of a row judged on its status alone


@dataclass(frozen=True)
class VerdictRow:
    point: Point
    metric: str                          # "time", "time / REF", "memory", "instructions", "status"
    verdict: str                         # one class of harness.verdicts.words
    fails: bool = False                  # its class fails (exit status 1; words.with_failures)
    baseline: float | None = None        # the side's value (time in s, bytes, instructions)
    current: float | None = None
    ratio: float | None = None           # current / baseline
    lo: float | None = None              # interval of the ratio, when there is one
    hi: float | None = None
    baseline_status: str = ""
    current_status: str = ""
    baseline_noise: float | None = None  # relative half-width of a side's value's interval
    current_noise: float | None = None   # (None: not measurable, e.g. one sample)
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


def noise_text(row: VerdictRow) -> str:
    """'±1.2% / ±0.8%' (baseline / current); '-' for a side whose noise was not measurable,
    '' when neither was."""
    if row.baseline_noise is None and row.current_noise is None:
        return ""

    def one(value: float | None) -> str:
        return "-" if value is None else f"±{value:.1%}"
    return f"{one(row.baseline_noise)} / {one(row.current_noise)}"


def verdict_cell(row: VerdictRow) -> str:
    """The verdict as a table shows it: a status class with its statuses."""
    return verdict_text(row.verdict, row.baseline_status, row.current_status)
