"""The report's tables, computed from the tidy frames (pure functions), and their writers."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from harness.contract.escape import csv_line, latex_text
from harness.contract.traits import Traits
from harness.report.claims import theoretical_exponents
from harness.report.data import MIB, point_key_columns

FAILED = ("oom", "timeout", "error")
KEY = ["run", "group", "pass", "head_dim"]          # a panel (one run, one figure facet)
# beside a value of a point marked noisy (harness.metrics.noise): the number is the machine's
# state at the time, not the method's; the table's caption says so
NOISY_MARK = " (noisy)"
NOISY_NOTE = ("(noisy): the samples did not fix the median, or the machine was busy while they "
              "ran; the median may not be the method's (tables/points.csv: noise_reason)")

def _present(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    """Index columns worth showing: run and group only when they vary."""
    return [c for c in columns if c not in ("run", "group") or frame[c].nunique() > 1]


def marked_noisy(value: object) -> bool:
    """A frame's ``noisy`` cell as a bool (None and NaN: not marked)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value)) \
        and bool(value)


def pivot(speed: pd.DataFrame, value: str, scale: float = 1.0, *, family: str | None = None,
          digits: int = 4, mark_noisy: bool = True) -> pd.DataFrame:
    """impl rows x seq_len columns of one measured value; failed points show their status and,
    with ``mark_noisy`` (values that come from the time), noisy points their value with
    NOISY_MARK."""
    frame = speed if family is None else speed[speed["family"] == family]
    if frame.empty:
        return pd.DataFrame()
    index = _present(frame, ["run", "group", "pass", "head_dim"]) + ["impl"]
    rows: dict[tuple, dict[str, object]] = {}
    lengths = sorted(frame["seq_len"].unique())
    for _, r in frame.iterrows():
        key = tuple(r[c] for c in index)
        cells = rows.setdefault(key, {})
        noisy = mark_noisy and marked_noisy(r.get("noisy"))
        if r["status"] == "ok" and isinstance(r[value], str):   # a value with its mark
            cells[f"T={r['seq_len']}"] = r[value] + (NOISY_MARK if noisy else "")
        elif r["status"] == "ok" and not pd.isna(r[value]):
            cell = round_sig(r[value] * scale, digits)
            cells[f"T={r['seq_len']}"] = f"{cell:g}{NOISY_MARK}" if noisy else cell
        else:
            cells[f"T={r['seq_len']}"] = r["status"] if r["status"] != "ok" else "n/a"
    table = pd.DataFrame([{**dict(zip(index, k)), **v} for k, v in rows.items()])
    columns = index + [f"T={t}" for t in lengths if f"T={t}" in table.columns]
    return table[columns].astype(object).fillna("")


def round_sig(value: float, digits: int = 4) -> float:
    if value == 0 or not math.isfinite(value):
        return float(value)
    return float(f"{value:.{digits}g}")


def ratios(speed: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """speedup = baseline time / time and memory ratio = baseline memory / memory, per point;
    a speedup is noisy when either point is."""
    ok = speed[speed["status"] == "ok"]
    keys = ["run", "group", *point_key_columns(speed), "seq_len"]
    base = ok[ok["impl"] == baseline][keys + ["time_s", "peak_mem_bytes", "noisy"]].rename(
        columns={"time_s": "base_time_s", "peak_mem_bytes": "base_mem_bytes",
                 "noisy": "base_noisy"})
    merged = ok[ok["impl"] != baseline].merge(base, on=keys, how="inner")
    merged["speedup"] = merged["base_time_s"] / merged["time_s"]
    merged["noisy"] = merged["noisy"].astype(bool) | merged["base_noisy"].astype(bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        mem = merged["peak_mem_bytes"].where(merged["peak_mem_bytes"] > 0)
        merged["memory_ratio"] = merged["base_mem_bytes"].where(merged["base_mem_bytes"] > 0) / mem
    return merged


def kv_dtype_table(speed: pd.DataFrame) -> pd.DataFrame:
    """FP8 key/value points (the kv_dtype axis) with their speed and their error side by side:
    median time, quant_error (against float64 attention of the unquantised inputs), and the
    time of the same point with k, v in the point's dtype where the run has it (its ratio:
    above 1, FP8 is slower)."""
    if "kv_dtype" not in speed.columns:
        return pd.DataFrame()
    ok = speed[speed["status"] == "ok"]
    fp8 = ok[ok["kv_dtype"].fillna("").astype(str) != ""]
    if fp8.empty:
        return pd.DataFrame()
    keys = ["run", "impl", *[c for c in point_key_columns(speed) if c != "kv_dtype"],
            "seq_len"]
    plain = ok[ok["kv_dtype"].fillna("").astype(str) == ""][keys + ["time_s"]].rename(
        columns={"time_s": "plain_time_s"})
    merged = fp8.merge(plain.drop_duplicates(keys), on=keys, how="left")
    shown = _present(merged, ["run", "group"]) + ["impl", "dtype", "kv_dtype", "seq_len"]
    table = merged[shown].copy()
    table["time_ms"] = (merged["time_s"] * 1e3).map(round_sig)
    table["quant_error"] = merged["quant_error"].map(
        lambda v: "n/a" if pd.isna(v) else round_sig(v, 3))
    table["time_ms_unquantised"] = (merged["plain_time_s"] * 1e3).map(
        lambda v: "" if pd.isna(v) else round_sig(v))
    table["time_ratio"] = (merged["time_s"] / merged["plain_time_s"]).map(
        lambda v: "" if pd.isna(v) else round_sig(v, 3))
    return table.reset_index(drop=True)


def largest_seq_len(speed: pd.DataFrame) -> pd.DataFrame:
    """Per implementation and panel: the largest seq_len that ran and what stopped it."""
    rows = []
    index = _present(speed, KEY)
    for key, sub in speed.groupby(index + ["impl"], sort=False):
        ok = sub[sub["status"] == "ok"]
        failed = sub[sub["status"].isin(FAILED)].sort_values("seq_len")
        unsupported = sub[sub["status"] == "unsupported"]
        skipped = sub[sub["status"] == "skipped"]
        first = failed.iloc[0] if len(failed) else None
        rows.append({
            **dict(zip(index + ["impl"], key)),
            "largest_ok_seq_len": int(ok["seq_len"].max()) if len(ok) else None,
            "largest_tried_seq_len": int(sub["seq_len"].max()),
            "ok": len(ok), "failed": len(failed), "unsupported": len(unsupported),
            "skipped": len(skipped),
            "first_failure": (f"{first['status']} at T={first['seq_len']}" if first is not None
                              else ("unsupported" if len(unsupported) == len(sub) else "")),
            "reason": (first["message"] if first is not None else
                       unsupported.iloc[0]["message"] if len(unsupported) else ""),
        })
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["largest_ok_seq_len"] = frame["largest_ok_seq_len"].astype("Int64")
    return frame


def noisy_points(speed: pd.DataFrame) -> pd.DataFrame:
    """The points marked noisy: their median (not a result), the samples' spread and how well
    they fix the median, the CPUs other processes took while they ran and why each is
    marked."""
    if "noisy" not in speed.columns:
        return pd.DataFrame()
    noisy = speed[(speed["status"] == "ok") & speed["noisy"].astype(bool)]
    if noisy.empty:
        return pd.DataFrame()
    columns = _present(speed, ["run", "group"]) + ["impl", "pass", "head_dim", "seq_len"]
    table = noisy[columns].copy()
    table["time_ms"] = (noisy["time_s"] * 1e3).map(round_sig)
    table["rel_spread"] = noisy["time_rel_spread"].map(
        lambda v: "" if pd.isna(v) else round_sig(v, 3))
    if "median_uncertainty" in noisy.columns:
        table["median_uncertainty"] = noisy["median_uncertainty"].map(
            lambda v: "" if pd.isna(v) else round_sig(v, 3))
    table["other_cpus"] = noisy["other_cpus"].map(
        lambda v: "" if pd.isna(v) else round_sig(v, 3))
    table["noise_reason"] = noisy["noise_reason"]
    return table.reset_index(drop=True)


def failures(speed: pd.DataFrame) -> pd.DataFrame:
    bad = speed[speed["status"] != "ok"]
    columns = _present(speed, ["run", "group"]) + ["impl", "pass", "head_dim", "seq_len",
                                                  "status", "message"]
    return bad[columns].reset_index(drop=True)


def fit_exponent(lengths: np.ndarray, values: np.ndarray) -> tuple[float, float, float, int]:
    """Slope of log(value) vs log(seq_len) over the upper part of the range: the lengths at or
    above the geometric middle of the range, widened downwards to at least three lengths."""
    mask = np.isfinite(values) & (values > 0)
    lengths, values = lengths[mask], values[mask]
    if len(np.unique(lengths)) < 2:
        return float("nan"), float("nan"), float("nan"), 0
    order = np.argsort(lengths)
    lengths, values = lengths[order], values[order]
    middle = math.sqrt(lengths.min() * lengths.max())
    distinct = np.unique(lengths)
    upper = lengths >= min(middle, distinct[-min(3, len(distinct))])
    x, y = np.log(lengths[upper]), np.log(values[upper])
    slope = float(np.polyfit(x, y, 1)[0])
    return slope, float(lengths[upper].min()), float(lengths[upper].max()), int(upper.sum())


def scaling(speed: pd.DataFrame, traits: Mapping[str, Traits]) -> pd.DataFrame:
    """Measured exponents of seq_len per implementation, next to those its declared traits
    claim (``traits``: name -> Traits of the registered implementations).

    The fit is of time and memory per sequence (divided by the batch): the claims are at one
    batch size, and a group that keeps B*T fixed (harness.report.data's fixed-token groups, the
    paper preset) shrinks B as T grows, so its raw times would fit one power of T too few."""
    rows = []
    ok = speed[speed["status"] == "ok"]
    index = _present(speed, KEY)
    for key, sub in ok.groupby(index + ["impl"], sort=False):
        t = sub["seq_len"].to_numpy(float)
        batch = sub["batch"].to_numpy(float)
        # a noisy median is the machine's: never part of the time fit (memory keeps it)
        noisy = sub["noisy"].map(marked_noisy).to_numpy(bool) if "noisy" in sub.columns \
            else np.zeros(len(sub), bool)
        times = np.where(noisy, np.nan, sub["time_s"].to_numpy(float))
        time_slope, lo, hi, n = fit_exponent(t, times / batch)
        mem_slope, mlo, mhi, mn = fit_exponent(t, sub["peak_mem_bytes"].to_numpy(float) / batch)
        theory_t, theory_m, why = theoretical_exponents(traits.get(sub.iloc[0]["impl"]),
                                                        sub.iloc[0]["family"])
        rows.append({**dict(zip(index + ["impl"], key)),
                     "fit_range": f"{int(lo)}-{int(hi)}" if n else "",
                     "points": n,
                     "noisy_left_out": int(noisy.sum()),
                     "time_exponent": round_sig(time_slope, 3),
                     "time_theory": theory_t,
                     "memory_exponent": round_sig(mem_slope, 3),
                     "memory_theory": theory_m,
                     "basis": why})
    return pd.DataFrame(rows)


def run_pairs(speed: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Every point measured in the reference run and in another run, side by side."""
    keys = ["impl", *point_key_columns(speed), "seq_len"]
    ok = speed[speed["status"] == "ok"]
    ref = ok[ok["run"] == reference][keys + ["time_s", "peak_mem_bytes", "hardware_tag"]]
    rows = []
    for run in [r for r in dict.fromkeys(speed["run"]) if r != reference]:
        other = ok[ok["run"] == run][keys + ["time_s", "peak_mem_bytes", "hardware_tag"]]
        merged = ref.merge(other, on=keys, suffixes=("_ref", "_other"))
        merged.insert(0, "run", run)
        rows.append(merged)
    if not rows:
        return pd.DataFrame()
    merged = pd.concat(rows, ignore_index=True)
    merged["time_ratio"] = merged["time_s_other"] / merged["time_s_ref"]
    with np.errstate(divide="ignore", invalid="ignore"):
        merged["memory_ratio"] = (merged["peak_mem_bytes_other"].where(
            merged["peak_mem_bytes_other"] > 0) / merged["peak_mem_bytes_ref"].where(
            merged["peak_mem_bytes_ref"] > 0))
    return merged


def run_comparison_table(pairs: pd.DataFrame, reference: str) -> pd.DataFrame:
    if pairs.empty:
        return pairs
    out = pd.DataFrame({
        "run": pairs["run"], "hardware": pairs["hardware_tag_other"],
        "reference_run": reference, "reference_hardware": pairs["hardware_tag_ref"],
        "impl": pairs["impl"], "pass": pairs["pass"], "head_dim": pairs["head_dim"],
        "dtype": pairs["dtype"], "batch": pairs["batch"], "heads": pairs["heads"],
        "seq_len": pairs["seq_len"],
        "time_ms_reference": (pairs["time_s_ref"] * 1e3).map(round_sig),
        "time_ms_run": (pairs["time_s_other"] * 1e3).map(round_sig),
        "time_ratio": pairs["time_ratio"].map(lambda v: round_sig(v, 3)),
        "memory_mib_reference": (pairs["peak_mem_bytes_ref"] / MIB).map(round_sig),
        "memory_mib_run": (pairs["peak_mem_bytes_other"] / MIB).map(round_sig),
        "memory_ratio": pairs["memory_ratio"].map(lambda v: round_sig(v, 3)),
    })
    return out


# -- writers ---------------------------------------------------------------------------------
def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """pandas' text for every value, each record on one "\\n"-ended line, every field that
    holds a CR or LF quoted (harness.contract.escape.csv_line)."""
    text = frame.to_csv(index=False, lineterminator="\r\n")   # CR quoted under this ending
    rows = csv.reader(io.StringIO(text, newline=""))
    path.write_text("".join(csv_line(row) for row in rows), newline="")


def latex_cell(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "--"
    if value is pd.NA:
        return "--"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return latex_text(f"{float(value):.4g}")
    return latex_text(value)


def to_latex(frame: pd.DataFrame, caption: str = "") -> str:
    """A booktabs tabular (needs \\usepackage{booktabs}); numeric columns right-aligned."""
    align = "".join("r" if pd.api.types.is_numeric_dtype(frame[c]) else "l"
                    for c in frame.columns)
    lines = [f"% {latex_text(caption)}" if caption else "% attnbench table",
             "% needs \\usepackage{booktabs}",
             f"\\begin{{tabular}}{{{align}}}", "\\toprule",
             " & ".join(latex_text(c) for c in frame.columns) + r" \\", "\\midrule"]
    for row in frame.itertuples(index=False):
        lines.append(" & ".join(latex_cell(v) for v in row) + r" \\")
    lines += ["\\bottomrule", "\\end{tabular}", ""]
    return "\n".join(lines)
