"""% of peak in the report: against the run's best peak (every measurement run.json holds, the
start and end of the run and any ``report --measure-peaks``), and the "peak under-measured"
mark of a point still above 100% of it.

A record's own % of peak and mark were taken against the peak known when it was written (the
start measurement); a later measurement can only raise the peak, so the report's figures are
the same or lower, and a point above 100% of the best peak is marked in the tables and drawn
apart in the roofline instead of as a result above the roof."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from harness.metrics import peaks as peaks_mod

MARK = "peak under-measured"


def run_device_peaks(meta: dict[str, Any], device: str) -> dict[str, Any]:
    """run.json's peaks of ``device``: ``peaks_by_device`` when the run had several devices,
    else ``peaks``."""
    return ((meta.get("peaks_by_device") or {}).get(device) or meta.get("peaks") or {})


def best_peaks(peaks: dict[str, Any]) -> dict[str, Any]:
    """``peaks`` with the best of its measurements at the top (each value naming its
    measurement)."""
    runs = peaks_mod.measurements(peaks)
    return peaks_mod.with_measurements(peaks, runs) if runs else dict(peaks)


def against_run_peaks(frame: pd.DataFrame, metas: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """``frame`` (the report's speed frame) with pct_peak_bandwidth, pct_peak_flops and
    peak_under_measured recomputed against each run's best peak (``metas``: run label ->
    run.json). Rows of runs without measured peaks keep their records' values."""
    frame = frame.copy()
    frame["peak_under_measured"] = frame["peak_under_measured"].fillna("").astype(str)
    for (run, device), rows in frame.groupby(["run", "device"], sort=False):
        best = best_peaks(run_device_peaks(metas.get(run) or {}, device))
        flop_roofs, bandwidth = peaks_mod.roofs(best)
        if not flop_roofs and bandwidth is None:
            continue
        ok = rows[rows["status"] == "ok"]
        for index, row in ok.iterrows():
            pct_bw = pct_fl = None
            if bandwidth and pd.notna(row["achieved_bytes_per_s"]):
                pct_bw = 100.0 * float(row["achieved_bytes_per_s"]) / bandwidth
            roof = flop_roofs.get(row["dtype"])
            if roof and pd.notna(row["flops"]) and pd.notna(row["time_s"]) and row["time_s"] > 0:
                pct_fl = 100.0 * float(row["flops"]) / float(row["time_s"]) / roof
            frame.at[index, "pct_peak_bandwidth"] = np.nan if pct_bw is None else pct_bw
            frame.at[index, "pct_peak_flops"] = np.nan if pct_fl is None else pct_fl
            frame.at[index, "peak_under_measured"] = peaks_mod.under_measured(
                pct_fl, pct_bw, best, row["dtype"])
    return frame


def above(frame: pd.DataFrame, column: str) -> pd.Series:
    """Rows above 100% of the peak of ``column`` (pct_peak_bandwidth or pct_peak_flops)."""
    return pd.to_numeric(frame[column], errors="coerce").gt(peaks_mod.ROOF_PCT)


def marked(frame: pd.DataFrame) -> pd.Series:
    """Rows marked peak under-measured (above 100% of some peak of their run)."""
    return frame["peak_under_measured"].fillna("").astype(str).ne("")
