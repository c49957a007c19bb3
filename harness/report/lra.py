"""The accuracy track's tables: accuracy over seeds (mean, sample std, n), the points of the
accuracy-speed-memory figure, the tuning choices and the Hrrformer comparison block.

Pure functions of the tidy accuracy frame (harness.report.data.tidy_accuracy); accuracies in %.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import pandas as pd

from harness.contract.traits import Traits
from harness.metrics.stats import MeanStd, mean_std
from harness.report.claims import default_baseline
from harness.report.published import LRA_TASKS, PUBLISHED_LRA, TASK_TITLES

AVG = "Avg"
HRRFORMER_CITATION = ("Alam et al., \"Recasting Self-Attention with Holographic Reduced "
                      "Representations\", ICML 2023, arXiv:2305.19534")
# the Hrrformer paper's own claims (its abstract and LRA speed/memory comparison)
HRRFORMER_CLAIMS = {
    "speedup": "28x (1 layer) / 10x (multi layer) more training examples/s than Luna-256; "
               "up to 280x faster LRA training",
    "memory": "0.21x (1 layer) / 0.29x (multi layer) of Luna-256's memory (79% / 71% less)",
}


def ok_rows(acc: pd.DataFrame) -> pd.DataFrame:
    return acc[(acc["status"] == "ok") & acc["test_accuracy"].notna()]


def task_order(acc: pd.DataFrame) -> list[str]:
    present = set(acc["task"])
    return [t for t in LRA_TASKS if t in present] + sorted(present - set(LRA_TASKS))


def group_keys(acc: pd.DataFrame) -> list[str]:
    """Records are summarised per implementation, and per run when several runs are reported
    (two runs may be on different machines)."""
    return ["run", "impl"] if acc["run"].nunique() > 1 else ["impl"]


def lra_average(per_task: dict[str, pd.DataFrame]) -> tuple[MeanStd | None, str]:
    """The LRA average of one implementation from its ok rows per LRA task (in %).

    When every task present has the same seeds, the average is taken per seed and then
    summarised over the seeds (so the spread is the spread of the average); otherwise it is
    the mean of the task means with no spread."""
    tasks = [t for t in LRA_TASKS if t in per_task and len(per_task[t])]
    if not tasks:
        return None, ""
    over = "all 5 LRA tasks" if len(tasks) == 5 else f"{len(tasks)} of 5 LRA tasks"
    seed_sets = [tuple(sorted(per_task[t]["seed"])) for t in tasks]
    if all(s == seed_sets[0] for s in seed_sets) and len(set(seed_sets[0])) == len(seed_sets[0]):
        by_seed = [sum(float(per_task[t].set_index("seed").loc[s, "test_accuracy"])
                       for t in tasks) / len(tasks) * 100 for s in seed_sets[0]]
        return mean_std(by_seed), over
    means = [100 * float(per_task[t]["test_accuracy"].mean()) for t in tasks]
    return MeanStd(sum(means) / len(means), None, 1), over + "; seeds differ between tasks: " \
        "mean of the task means, no spread"


def accuracy_summary(acc: pd.DataFrame) -> pd.DataFrame:
    """One row per (run,) implementation and task, and one ``Avg`` row per implementation:
    test accuracy (%) mean, sample std (empty for n=1), n, the seeds, data source; tasks where
    nothing finished carry the failure status instead."""
    ok = ok_rows(acc)
    keys = group_keys(acc)
    names = ["run", "model"] if len(keys) == 2 else ["model"]
    rows: list[dict[str, Any]] = []
    for key, sub in acc.groupby(keys, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        ident = dict(zip(names, key))
        mine = ok
        for column, value in zip(keys, key):
            mine = mine[mine[column] == value]
        per_task = {}
        for task in task_order(acc):
            got = mine[mine["task"] == task]
            failed = sub[(sub["task"] == task) & (sub["status"] != "ok")]["status"]
            sources = ", ".join(sorted(set(sub[sub["task"] == task]["data_source"].dropna())
                                       - {""}))
            if len(got):
                per_task[task] = got
                s = mean_std(100 * got["test_accuracy"])
                rows.append({**ident, "task": task, "data": sources, "mean": round(s.mean, 2),
                             "std": None if s.std is None else round(s.std, 2), "n": s.n,
                             "seeds": " ".join(str(int(x)) for x in sorted(got["seed"])),
                             "status": "ok" if not len(failed) else
                             f"ok; {len(failed)} failed ({', '.join(sorted(set(failed)))})"})
            elif len(failed):
                rows.append({**ident, "task": task, "data": sources, "mean": None, "std": None,
                             "n": 0, "seeds": "", "status": ", ".join(sorted(set(failed)))})
        average, over = lra_average(per_task)
        if average is not None:
            rows.append({**ident, "task": AVG, "data": "", "mean": round(average.mean, 2),
                         "std": None if average.std is None else round(average.std, 2),
                         "n": average.n, "seeds": "", "status": f"over {over}"})
    columns = names + ["task", "data", "mean", "std", "n", "seeds", "status"]
    return pd.DataFrame(rows, columns=columns)


def cell(row: pd.Series) -> str:
    if row["n"] == 0 or row["mean"] is None or pd.isna(row["mean"]):
        return str(row["status"])
    std = None if row["std"] is None or pd.isna(row["std"]) else float(row["std"])
    return MeanStd(float(row["mean"]), std, int(row["n"])).text()


def accuracy_display(summary: pd.DataFrame) -> pd.DataFrame:
    """The wide table of the report: one row per implementation, one column per task,
    cells ``mean ± std (n=k)`` (``mean (n=1)`` for a single seed)."""
    ident = [c for c in ("run", "model") if c in summary.columns]
    rows = []
    if summary.empty:
        return pd.DataFrame(columns=["source", *ident])
    tasks = [t for t in dict.fromkeys(summary["task"]) if t != AVG]
    order = [t for t in LRA_TASKS if t in tasks] + [t for t in tasks if t not in LRA_TASKS]
    for key, sub in summary.groupby(ident, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        row: dict[str, Any] = {"source": "ours", **dict(zip(ident, key))}
        row["data"] = ", ".join(sorted({d for d in ", ".join(sub["data"]).split(", ") if d}))
        for task in order:
            got = sub[sub["task"] == task]
            row[TASK_TITLES.get(task, task)] = cell(got.iloc[0]) if len(got) else ""
        avg = sub[sub["task"] == AVG]
        row[AVG] = cell(avg.iloc[0]) if len(avg) else ""
        row["avg_over"] = avg.iloc[0]["status"].removeprefix("over ") if len(avg) else ""
        rows.append(row)
    return pd.DataFrame(rows)


def published_table() -> pd.DataFrame:
    return pd.DataFrame([
        {"source": "published", "model": model,
         **{TASK_TITLES[t]: v for t, v in zip(LRA_TASKS, values[:5])}, AVG: values[5]}
        for model, values in PUBLISHED_LRA.items()])


# -- accuracy vs speed vs memory --------------------------------------------------------------
def speed_points(acc: pd.DataFrame) -> pd.DataFrame:
    """Per (run,) implementation and task: accuracy mean/std/n (%), training examples/s and
    peak memory (means over the seeds' ok records). Adds per-implementation ``Avg`` rows when
    the implementation has all five LRA tasks: the LRA average, the geometric mean of the five
    tasks' examples/s, the mean of their peak memories."""
    ok = ok_rows(acc).copy()
    ok["peak_mem_bytes"] = pd.to_numeric(ok["peak_mem_bytes"], errors="coerce")
    keys = group_keys(acc)
    rows = []
    for key, sub in ok.groupby(keys + ["task"], sort=True):
        s = mean_std(100 * sub["test_accuracy"])
        rate = sub["examples_per_s"].dropna()
        mem = sub["peak_mem_bytes"].dropna()
        rows.append({**dict(zip(keys + ["task"], key)), "accuracy": s.mean, "std": s.std,
                     "n": s.n, "examples_per_s": float(rate.mean()) if len(rate) else None,
                     "peak_mem_bytes": float(mem.mean()) if len(mem) else None})
    points = pd.DataFrame(rows, columns=keys + ["task", "accuracy", "std", "n",
                                                "examples_per_s", "peak_mem_bytes"])
    extra = []
    for key, sub in points.groupby(keys, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        lra = sub[sub["task"].isin(LRA_TASKS)]
        if set(lra["task"]) != set(LRA_TASKS):
            continue
        mine = ok
        for column, value in zip(keys, key):
            mine = mine[mine[column] == value]
        average, _ = lra_average({t: mine[mine["task"] == t] for t in LRA_TASKS})
        rates = lra["examples_per_s"].dropna()
        mems = lra["peak_mem_bytes"].dropna()
        extra.append({**dict(zip(keys, key)), "task": AVG, "accuracy": average.mean,
                      "std": average.std, "n": average.n,
                      "examples_per_s": (math.exp(sum(math.log(r) for r in rates) / len(rates))
                                         if len(rates) == 5 and (rates > 0).all() else None),
                      "peak_mem_bytes": float(mems.mean()) if len(mems) else None})
    if extra:
        points = pd.concat([points, pd.DataFrame(extra)], ignore_index=True)
    return points


# -- tuning --------------------------------------------------------------------------------
def tuning_table(acc: pd.DataFrame) -> pd.DataFrame:
    """One row per tuned record: the grid, the setting chosen on validation, its validation
    and test accuracy (%), and how many trials ran."""
    if "tuning" not in acc.columns:
        return pd.DataFrame()
    rows = []
    for _, row in acc.iterrows():
        tuning = row["tuning"] if isinstance(row["tuning"], dict) else {}
        if not tuning:
            continue
        trials = tuning.get("trials") or []
        rows.append({"task": row["task"], "impl": row["impl"], "seed": row["seed"],
                     "status": row["status"],
                     "grid": "; ".join(f"{k}={','.join(map(str, v))}"
                                       for k, v in (tuning.get("grid") or {}).items()),
                     "chosen": ", ".join(f"{k}={v}" for k, v in
                                         (tuning.get("chosen") or {}).items()) or "none",
                     "val_acc": None if pd.isna(row["best_val_accuracy"]) else
                     round(100 * row["best_val_accuracy"], 2),
                     "test_acc": None if pd.isna(row["test_accuracy"]) else
                     round(100 * row["test_accuracy"], 2),
                     "trials_ok": f"{sum(t.get('status') == 'ok' for t in trials)}/{len(trials)}"})
    return pd.DataFrame(rows)


# -- the Hrrformer comparison ---------------------------------------------------------------
def pick_pair(impls: list[str], families: Mapping[str, str], traits: Mapping[str, Traits],
              order: list[str]) -> tuple[str, str] | None:
    """(HRR implementation, softmax implementation) among those with ok records: the first HRR
    method in ``order`` (registration order), and the exact method the report would take as its
    baseline (declared preference), else the first exact one in ``order``."""
    rank = {name: i for i, name in enumerate(order)}
    ranked = sorted(impls, key=lambda n: (rank.get(n, len(rank)), n))
    hrr = [i for i in ranked if families.get(i) == "hrr"]
    soft = [i for i in ranked if families.get(i) == "exact"]
    if not hrr or not soft:
        return None
    return hrr[0], default_baseline(soft, traits, order) or soft[0]


def published_accuracy_difference(task: str) -> float | None:
    """Hrrformer (multi layer) minus the LRA paper's Transformer, in points, as published."""
    names = list(LRA_TASKS) + [AVG]
    if task not in names:
        return None
    k = names.index(task)
    return round(PUBLISHED_LRA["Hrrformer, multi layer"][k]
                 - PUBLISHED_LRA["Transformer (LRA paper)"][k], 2)


def hrrformer_comparison(acc: pd.DataFrame, families: Mapping[str, str],
                         traits: Mapping[str, Traits], order: list[str]) -> pd.DataFrame:
    """Per task (and the LRA average when both have all five): HRR vs softmax measured here,
    training speed-up (examples/s ratio), peak-memory ratio and accuracy difference (points,
    ± the standard error sqrt(s1^2/n1 + s2^2/n2) when both have n >= 2), with the Hrrformer
    paper's claims beside them. Empty when either did not run."""
    ok = ok_rows(acc)
    if ok.empty or acc["run"].nunique() > 1:
        return pd.DataFrame()
    pair = pick_pair(sorted(set(ok["impl"])), families, traits, order)
    if pair is None:
        return pd.DataFrame()
    hrr, soft = pair
    points = speed_points(acc).set_index(["impl", "task"])
    rows = []
    for task in task_order(acc) + [AVG]:
        if (hrr, task) not in points.index or (soft, task) not in points.index:
            continue
        a, b = points.loc[(hrr, task)], points.loc[(soft, task)]
        speed = (a["examples_per_s"] / b["examples_per_s"]
                 if a["examples_per_s"] and b["examples_per_s"] else None)
        memory = (a["peak_mem_bytes"] / b["peak_mem_bytes"]
                  if a["peak_mem_bytes"] and b["peak_mem_bytes"] else None)
        diff = a["accuracy"] - b["accuracy"]
        spread = (math.sqrt(a["std"] ** 2 / a["n"] + b["std"] ** 2 / b["n"])
                  if a["n"] >= 2 and b["n"] >= 2 and pd.notna(a["std"]) and pd.notna(b["std"])
                  else None)
        published = published_accuracy_difference(task)
        rows.append({
            "task": TASK_TITLES.get(task, task), "hrr": hrr, "softmax": soft,
            "n": f"{int(a['n'])}/{int(b['n'])}",
            "training_speedup": None if speed is None else round(float(speed), 2),
            "memory_ratio": None if memory is None else round(float(memory), 3),
            "accuracy_difference_pp": round(float(diff), 2),
            "accuracy_difference_se": None if spread is None else round(spread, 2),
            "published_speedup": HRRFORMER_CLAIMS["speedup"],
            "published_memory": HRRFORMER_CLAIMS["memory"],
            "published_accuracy_difference_pp": published,
        })
    return pd.DataFrame(rows)


def hrrformer_block(comparison: pd.DataFrame) -> pd.DataFrame:
    """The report's view of hrrformer_comparison: one row per metric, one column per task,
    the Hrrformer paper's claim in the last column."""
    if comparison.empty:
        return comparison
    hrr, soft = comparison.iloc[0]["hrr"], comparison.iloc[0]["softmax"]

    def fmt(value, pattern):
        return "n/a" if value is None or pd.isna(value) else pattern.format(value)

    speed = {"metric": f"training speed-up ({hrr} / {soft} training examples/s)"}
    memory = {"metric": f"peak-memory ratio ({hrr} / {soft})"}
    accuracy = {"metric": f"test accuracy difference ({hrr} - {soft}, points)"}
    published_acc = []
    for _, row in comparison.iterrows():
        column = f"{row['task']} (n={row['n']})"
        speed[column] = fmt(row["training_speedup"], "{:.2f}x")
        memory[column] = fmt(row["memory_ratio"], "{:.3f}x")
        diff = f"{row['accuracy_difference_pp']:+.2f}"
        if row["accuracy_difference_se"] is not None and pd.notna(row["accuracy_difference_se"]):
            diff += f" ± {row['accuracy_difference_se']:.2f} (s.e.)"
        accuracy[column] = diff
        if row["published_accuracy_difference_pp"] is not None and \
                pd.notna(row["published_accuracy_difference_pp"]):
            published_acc.append(f"{row['task']} {row['published_accuracy_difference_pp']:+.2f}")
    speed["published (Hrrformer paper)"] = HRRFORMER_CLAIMS["speedup"]
    memory["published (Hrrformer paper)"] = HRRFORMER_CLAIMS["memory"]
    accuracy["published (Hrrformer paper)"] = (
        ("Hrrformer (multi layer) - Transformer (LRA paper): " + ", ".join(published_acc))
        if published_acc else "no published LRA number for these tasks")
    return pd.DataFrame([speed, memory, accuracy])
