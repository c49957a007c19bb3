"""Load run directories into tidy tables: one row per point, every status kept."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.errors import UsageError
from harness.contract.registry import REGISTRY
from harness.contract.parsers import PASSES
from harness.contract.records import (
    NUMERIC_SPEED_METRICS,
    implied_l2,
    implied_timing_basis,
    SPEED_METRICS,
    Point,
    field_problem,
    invalid_numbers,
    workload_text,
)
from harness.contract.axes import axes, workload_axes
from harness.metrics.stats import quartiles
from harness.grid.repro import reproducer
from harness.report.peak_marks import against_run_peaks
from harness.store.run_dir import RESULTS_FILE, TruncatedLineWarning, open_run

# everything but impl and seq_len: points sharing it form one line in a figure. The workload
# axes of the table (harness.contract.axes) with their defaults filled in: kv_heads (resolved:
# = heads by default), window (-1 none), alibi, documents (0 none), q_axis (0 for
# self-attention, else the fixed query length; q_len itself is the resolved number of queries),
# and one column per axis without a field (a plug-in's), at the point's value.
def workload_column_names() -> list[str]:
    return ["q_axis" if axis.name == "q_len" else axis.name for axis in workload_axes()]


BASIC_SERIES = ["device", "dtype", "batch", "heads", "head_dim", "causal", "pass"]
BASIC_GROUP = ["device", "dtype", "batch", "heads", "causal"]
MIB = 2 ** 20


@dataclass
class Run:
    label: str              # unique short name used in figures and tables
    path: Path
    meta: dict[str, Any]
    n_speed: int = 0
    n_accuracy: int = 0


@dataclass
class Results:
    runs: list[Run]
    speed: pd.DataFrame
    accuracy: pd.DataFrame
    warnings: list[str] = field(default_factory=list)

    @property
    def multi(self) -> bool:
        return len(self.runs) > 1

    def run(self, label: str) -> Run:
        return next(r for r in self.runs if r.label == label)


def run_labels(paths: list[Path]) -> list[str]:
    """Directory names, made unique with parent names where two runs share one."""
    labels = [p.name or str(p) for p in paths]
    for depth in range(2, 6):
        if len(set(labels)) == len(labels):
            break
        labels = ["/".join(p.resolve().parts[-depth:]) if labels.count(l) > 1 else l
                  for p, l in zip(paths, labels)]
    if len(set(labels)) != len(labels):
        raise UsageError("the same run directory is given twice")
    return labels


def load(paths: list[Path]) -> Results:
    """Read every run; UsageError (one line) for missing, empty or newer-schema runs."""
    if not paths:
        raise UsageError("no run directory given")
    paths = [Path(p) for p in paths]
    labels = run_labels(paths)
    runs: list[Run] = []
    speed_rows: list[dict[str, Any]] = []
    acc_rows: list[dict[str, Any]] = []
    messages: list[str] = []
    for path, label in zip(paths, labels):
        run_dir = open_run(path)
        meta = run_dir.metadata() if run_dir.run_path.exists() else {}
        if not run_dir.results_path.exists():
            raise UsageError(f"{path}: no {RESULTS_FILE}; nothing to report")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", TruncatedLineWarning)
            raw = list(run_dir.raw_records())
        messages += [str(w.message) for w in caught if issubclass(w.category,
                                                                  TruncatedLineWarning)]
        if not raw:
            raise UsageError(f"{path}: {RESULTS_FILE} holds no records; nothing to report")
        for i, data in enumerate(raw):
            problem = field_problem(data) or invalid_numbers(data)
            if problem:
                raise UsageError(f"{run_dir.results_path} record {i + 1} ({data.get('impl')}, "
                                 f"seq_len {data.get('seq_len')}): {problem}; refusing to "
                                 f"report it (fix or remove that line)")
        for machine_label, machine_meta, records in by_machine(label, meta, raw):
            run = Run(machine_label, path, machine_meta)
            rows, notes = latest_records(records, run_dir.results_path)
            messages += notes
            for data in rows:
                row = {**data, "run": machine_label, "hardware_tag": _hardware_tag(machine_meta)}
                if data.get("kind", "speed") == "accuracy":
                    acc_rows.append(row)
                    run.n_accuracy += 1
                else:
                    row["repro"] = repro_command(data, machine_meta)
                    speed_rows.append(row)
                    run.n_speed += 1
            runs.append(run)
    speed = against_run_peaks(tidy_speed(speed_rows), {run.label: run.meta for run in runs})
    return Results(runs, speed, tidy_accuracy(acc_rows), messages)


def by_machine(label: str, meta: dict[str, Any], raw: list[dict[str, Any]]
               ) -> list[tuple[str, dict[str, Any], list[dict[str, Any]]]]:
    """(label, run.json, records) per machine of a run: the run itself when its records name
    one machine (or none); a merged run's records of several machines (``merge``: one point may
    be measured on each) as one run per machine, labelled with the machine's tag, with that
    machine's description and peaks, so that each machine's points are reported and compared
    as their own (never one machine's record taken for the other's)."""
    ids = list(dict.fromkeys(str(data.get("hardware_id") or "") for data in raw))
    if len([hardware for hardware in ids if hardware]) < 2:
        return [(label, meta, raw)]
    machines = meta.get("machines") or {}
    peaks = meta.get("peaks_by_machine") or {}
    out = []
    for hardware in ids:
        machine = machines.get(hardware) or {"hardware_id": hardware,
                                             "hardware_tag": hardware or "unrecorded machine"}
        machine_meta = {**{k: v for k, v in meta.items()
                           if k not in ("peaks", "peaks_by_device", "machine")},
                        "machine": machine}
        if peaks.get(hardware):
            machine_meta["peaks"] = peaks[hardware]
        tag = machine.get("hardware_tag") or hardware or "unrecorded machine"
        out.append((f"{label} [{tag}]", machine_meta,
                    [data for data in raw if str(data.get("hardware_id") or "") == hardware]))
    return out


def latest_records(raw: list[dict[str, Any]], path: Path
                   ) -> tuple[list[dict[str, Any]], list[str]]:
    """The last record of each point (a merged or re-run file may repeat one), and the notes:
    several ok records of one point, records that held non-finite numbers."""
    by_id: dict[str, dict[str, Any]] = {}
    ok_counts: dict[str, int] = {}
    flagged = 0
    for i, data in enumerate(raw):
        flagged += bool(data.get("nonfinite_fields"))
        key = data.get("point_id") or f"line-{i}"
        by_id[key] = data
        if data.get("status") == "ok":
            ok_counts[key] = ok_counts.get(key, 0) + 1
    notes = []
    repeated = sum(n > 1 for n in ok_counts.values())
    if repeated:
        notes.append(f"{path}: {repeated} point(s) have more than one ok record (a re-run, "
                     f"rounds, or a second writer); the last of each is reported")
    if flagged:
        notes.append(f"{path}: {flagged} record(s) held NaN or infinite numbers, written as "
                     f"null (see their nonfinite_fields)")
    return list(by_id.values()), notes


def repro_command(data: dict[str, Any], meta: dict[str, Any]) -> str:
    """The sweep command that measures this record's point alone (harness.grid.repro), ''
    where the record names no point this harness can rebuild."""
    try:
        return reproducer(data, meta.get("settings")).command()
    except (KeyError, TypeError, ValueError):
        return ""


def _hardware_tag(meta: dict[str, Any]) -> str:
    return (meta.get("machine") or {}).get("hardware_tag", "") or "unknown hardware"


def _quartiles(samples: Any, median: Any) -> tuple[float, float]:
    values = [s for s in (samples or []) if s is not None]
    if values:
        return quartiles(values)
    if median is None or (isinstance(median, float) and np.isnan(median)):
        return float("nan"), float("nan")
    return float(median), float(median)


# bytes moved and % of the machine's peaks (harness.metrics.traffic): emptied for failed points
ROOFLINE_COLUMNS = ["bytes_moved", "achieved_bytes_per_s", "pct_peak_bandwidth",
                    "pct_peak_flops", "arithmetic_intensity", "flops"]
# the record's metrics (harness.contract.records.SPEED_METRICS) plus what the samples give here
SAMPLE_COLUMNS = ["time_q1_s", "time_q3_s", "n_samples"]


def series_columns() -> list[str]:
    """Everything but impl and seq_len: points sharing it form one line in a figure."""
    return [*BASIC_SERIES, *workload_column_names()]


def point_key_columns(frame: pd.DataFrame) -> list[str]:
    """Every column but impl and seq_len that tells one point from another in this frame: the
    series columns (every axis of the table) and those of a plug-in's axes not loaded here.
    Tables that pair points (a baseline, two runs) join on these and seq_len."""
    return [*series_columns(), *unknown_axis_columns(frame.columns)]


def group_columns() -> list[str]:
    """One figure per group."""
    return [*BASIC_GROUP, *workload_column_names()]


def speed_columns(unknown: list[str] = ()) -> list[str]:
    """The frame's columns; ``unknown``: axes of a plug-in not loaded here found in records."""
    return ["run", "hardware_tag", "impl", "framework", "family", *series_columns(),
            *unknown, "q_len", "seq_len", "status", "message", *SPEED_METRICS, *SAMPLE_COLUMNS,
            "point_id", "repro"]



def tidy_speed(rows: list[dict[str, Any]]) -> pd.DataFrame:
    known = {axis.name for axis in axes()}
    unknown = list(dict.fromkeys(name for data in rows for name in (data.get("axes") or {})
                                 if name not in known))
    columns = speed_columns(unknown)
    if not rows:
        return pd.DataFrame(columns=columns + ["group"])
    out = []
    for data in rows:
        q1, q3 = _quartiles(data.get("time_samples_s"), data.get("time_s"))
        row = {c: data.get(c) for c in columns}
        row.update(workload_columns(data))
        row.update({name: (data.get("axes") or {}).get(name) for name in unknown})
        row.update(time_q1_s=q1, time_q3_s=q3, n_samples=len(data.get("time_samples_s") or []))
        # records written without the field: the basis their timer implies
        row["timing_basis"] = data.get("timing_basis") or implied_timing_basis(data.get("timer"))
        row["l2"] = data.get("l2") or implied_l2(data.get("l2_flush"))
        if data.get("status") != "ok":
            for column in ("time_s", "time_q1_s", "time_q3_s", "peak_mem_bytes", "tflops",
                           "tokens_per_s", *ROOFLINE_COLUMNS):
                row[column] = None
        out.append(row)
    frame = pd.DataFrame(out, columns=columns)
    for name in unknown:   # as stored: pandas would make [None, 4] floats, labelled 'block=4.0'
        frame[name] = pd.Series([row.get(name) for row in out], index=frame.index, dtype=object)
    for column in (*NUMERIC_SPEED_METRICS, "time_q1_s", "time_q3_s"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    frame["throttled"] = frame["throttled"].map(lambda v: v is True)
    # records without the mark (older ones, failures) are not noisy
    frame["noisy"] = frame["noisy"].map(lambda v: v is True)
    frame["noise_reason"] = frame["noise_reason"].fillna("").astype(str)
    for column in ("batch", "heads", "head_dim", "seq_len", "n_samples"):
        frame[column] = frame[column].astype(int)
    frame["causal"] = frame["causal"].astype(bool)
    for axis in workload_axes():
        column = "q_axis" if axis.name == "q_len" else axis.name
        frame[column] = frame[column].astype(axis.type)
    frame["q_len"] = frame["q_len"].astype(int)
    frame["message"] = frame["message"].fillna("").astype(str)
    frame["group"] = [group_label(r) for r in frame[group_columns() + unknown].to_dict("records")]
    _fixed_token_groups(frame)
    order = {n: i for i, n in enumerate(REGISTRY.names())}
    pass_order = {p: i for i, p in enumerate(PASSES)}
    frame["_impl_order"] = frame["impl"].map(lambda n: (order.get(n, len(order)), n))
    frame["_pass_order"] = frame["pass"].map(lambda p: pass_order.get(p, 99))
    run_order = {r: i for i, r in enumerate(dict.fromkeys(frame["run"]))}
    frame["_run_order"] = frame["run"].map(run_order)
    frame = frame.sort_values(["_run_order", "group", "_pass_order", "head_dim", "_impl_order",
                               "seq_len"], kind="mergesort")
    return frame.drop(columns=["_impl_order", "_pass_order", "_run_order"]).reset_index(drop=True)


def _fixed_token_groups(frame: pd.DataFrame) -> None:
    """Sweeps that keep B*T fixed (batch shrinks as seq_len grows) are one group, not many;
    one per workload (window, GQA, ...), as at a fixed batch."""
    workloads = pd.Series([workload_label(r) for r in frame.to_dict("records")],
                          index=frame.index)
    keys = ["run", "device", "dtype", "heads", "causal", workloads.rename("_workload")]
    for _, sub in frame.groupby(keys, sort=False):
        if sub["batch"].nunique() < 2:
            continue
        per_t = sub.groupby("seq_len")["batch"].nunique()
        tokens = (sub["batch"] * sub["seq_len"]).unique()
        if (per_t == 1).all() and len(tokens) == 1:
            device, dtype, heads, causal = sub.iloc[0][["device", "dtype", "heads", "causal"]]
            workload = workloads[sub.index[0]]
            frame.loc[sub.index, "group"] = (f"{device} {dtype} B*T={int(tokens[0])} H={heads}" +
                                             (" causal" if causal else "") +
                                             (f" {workload}" if workload else ""))


def workload_columns(data: dict[str, Any]) -> dict[str, Any]:
    """The workload axes of a record with the defaults filled in (older records lack them):
    each axis at its point value, except kv_heads and q_len, resolved (q_axis: the point's
    q_len, 0 for self-attention)."""
    point = Point.from_dict({**data, "impl": data.get("impl") or ""})
    columns = {axis.name: point.value(axis.name) for axis in workload_axes()}
    columns.update(kv_heads=point.n_kv_heads, q_len=point.n_queries, q_axis=point.q_len)
    return columns


def workload_label(row: dict[str, Any]) -> str:
    """'Hkv=8 Tq=1 window=128 alibi docs=8' for the axes not at their default."""
    values = {axis.name: row[axis.name] for axis in workload_axes() if axis.name in row}
    values["kv_heads"] = 0 if row["kv_heads"] == row["heads"] else int(row["kv_heads"])
    values["q_len"] = int(row["q_axis"])
    unknown = [f"{k}={v}" for k, v in row.items() if k in unknown_axis_columns(row)
               and v is not None and v == v]
    return " ".join(p for p in (workload_text(values), *unknown) if p)


def unknown_axis_columns(columns: Any) -> list[str]:
    """The columns of axes of a plug-in not loaded here (found in the records' ``axes``)."""
    known = set(speed_columns()) | {"group"}
    return [c for c in columns if c not in known]


def axis_columns(columns: Any) -> list[str]:
    """The frame's column of every axis beyond the basic ones (kv_heads and q_len resolved),
    in table order, then those of a plug-in not loaded here: tables/points.csv has them all."""
    return [axis.name for axis in workload_axes()] + unknown_axis_columns(columns)


def group_label(row: dict[str, Any]) -> str:
    workload = workload_label(row)
    return (f"{row['device']} {row['dtype']} B={row['batch']} H={row['heads']}" +
            (" causal" if row["causal"] else "") + (f" {workload}" if workload else ""))


def facet_label(head_dim: int, pass_: str) -> str:
    return f"{pass_.replace('_', '+')}, D={head_dim}"


ACCURACY_COLUMNS = ["run", "hardware_tag", "impl", "task", "status", "message", "data_source",
                    "preset", "seed", "device", "dtype", "seq_len", "params",
                    "best_val_accuracy", "test_accuracy", "epochs_to_best", "epochs",
                    "train_time_s", "examples_per_s", "peak_mem_bytes", "mem_method", "curve", "tuning"]


def tidy_accuracy(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame([{c: r.get(c) for c in ACCURACY_COLUMNS} for r in rows],
                         columns=ACCURACY_COLUMNS)
    if frame.empty:
        return frame
    for column in ("best_val_accuracy", "test_accuracy", "train_time_s", "examples_per_s"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    frame["message"] = frame["message"].fillna("").astype(str)
    return frame.sort_values(["run", "task", "impl", "seed"], kind="mergesort").reset_index(
        drop=True)


def ok(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["status"] == "ok"]
