"""Headline findings: sentences computed from the data, claiming only what it supports.

A speed difference is stated only when the interquartile ranges of the two points do not
overlap; memory is compared only when both peaks are at least MIN_MEMORY (smaller peaks are
within the noise of resident-memory measurement on the CPU). A point marked noisy
(harness.metrics.noise) is never quoted as a result: a comparison that involves one says so
instead of a ratio, the fastest point is chosen among the others, and each panel says how many
of its points are noisy.
"""

from __future__ import annotations

import pandas as pd

from harness.report.data import MIB, facet_label
from harness.report.tables import FAILED, KEY, marked_noisy

MIN_MEMORY = 1 * MIB
EXPONENT_TOLERANCE = 0.3
MIN_FIT_POINTS = 3      # fewer lengths in the fitted range: no claim about scaling


def times(x: float) -> str:
    return f"{x:.1f}x" if x < 10 else f"{x:.0f}x"


def is_noisy(row: pd.Series) -> bool:
    return marked_noisy(row.get("noisy"))


def compare(row: pd.Series, base: pd.Series, baseline: str) -> str:
    impl = row["impl"]
    noisy = [r["impl"] for r in (row, base) if is_noisy(r)]
    if noisy:
        return (f"{impl} is not compared with {baseline}: "
                f"{' and '.join(dict.fromkeys(noisy))} marked noisy (its median may be the "
                f"machine's, not the method's: see the noisy points)")
    parts = []
    overlap = not (row["time_q3_s"] < base["time_q1_s"] or row["time_q1_s"] > base["time_q3_s"])
    ratio = base["time_s"] / row["time_s"]
    if overlap:
        parts.append(f"not clearly faster or slower than {baseline} (interquartile ranges "
                     f"overlap)")
    elif ratio >= 1:
        parts.append(f"{times(ratio)} faster than {baseline}")
    else:
        parts.append(f"{times(1 / ratio)} slower than {baseline}")
    m, mb = row["peak_mem_bytes"], base["peak_mem_bytes"]
    if pd.notna(m) and pd.notna(mb) and m >= MIN_MEMORY and mb >= MIN_MEMORY:
        mr = mb / m
        if 0.9 <= mr <= 1.1:
            parts.append("about the same peak memory")
        elif mr > 1:
            parts.append(f"uses {times(mr)} less memory")
        else:
            parts.append(f"uses {times(1 / mr)} more memory")
    elif pd.notna(m) and pd.notna(mb):
        parts.append("memory below 1 MiB, not compared")
    energy = energy_comparison(row, base, baseline)
    if energy:
        parts.append(energy)
    text = f"{impl} is " + parts[0]
    for part in parts[1:]:
        text += (" and " if part.startswith("uses") else "; ") + part
    return text


def headline(speed: pd.DataFrame, baseline: str | None, scaling: pd.DataFrame) -> list[str]:
    out: list[str] = []
    if speed.empty:
        return out
    multi_run = speed["run"].nunique() > 1
    multi_group = speed["group"].nunique() > 1
    for key, sub in speed.groupby(KEY, sort=False):
        run, group, pass_, head_dim = key
        where = facet_label(head_dim, pass_) + (f", {group}" if multi_group else "") + \
            (f", run {run}" if multi_run else "")
        ok = sub[sub["status"] == "ok"]
        if baseline is not None and baseline in set(ok["impl"]):
            base_rows = ok[ok["impl"] == baseline]
            t = int(base_rows["seq_len"].max())
            base = base_rows[base_rows["seq_len"] == t].iloc[0]
            at_t = ok[(ok["seq_len"] == t) & (ok["impl"] != baseline)]
            for _, row in at_t.iterrows():
                out.append(f"{where}, T={t}: {compare(row, base, baseline)}.")
        if len(ok):
            t = int(ok["seq_len"].max())
            at_t = ok[ok["seq_len"] == t]
            quiet = at_t[~at_t.apply(is_noisy, axis=1)]
            if len(quiet):
                best = quiet.sort_values("time_s").iloc[0]
                others = len(at_t) - len(quiet)
                out.append(f"{where}: fastest at the largest length that ran (T={t}): "
                           f"{best['impl']} ({best['time_s'] * 1e3:.3g} ms)"
                           + (f", among the points not marked noisy ({others} noisy)"
                              if others else "") + ".")
            else:
                out.append(f"{where}: every point at the largest length that ran (T={t}) is "
                           f"marked noisy: no fastest is named.")
            noisy = ok[ok.apply(is_noisy, axis=1)]
            if len(noisy):
                names = ", ".join(f"{r['impl']} T={r['seq_len']}" for _, r in noisy.iterrows())
                out.append(f"{where}: {len(noisy)} of {len(ok)} points marked noisy, their "
                           f"medians not quoted as results ({names}).")
        for impl, rows in sub.groupby("impl", sort=False):
            failed = rows[rows["status"].isin(FAILED)].sort_values("seq_len")
            if len(failed):
                first = failed.iloc[0]
                ran = rows[rows["status"] == "ok"]["seq_len"]
                reached = f"largest that ran T={int(ran.max())}" if len(ran) else "nothing ran"
                word = {"oom": "ran out of memory", "timeout": "timed out",
                        "error": "failed with an error"}[first["status"]]
                out.append(f"{where}: {impl} {word} at T={first['seq_len']} ({reached}).")
    out += fidelity_findings(speed)
    out += scaling_findings(scaling)
    return out


def fidelity_findings(speed: pd.DataFrame) -> list[str]:
    """What a speedup costs: approximate methods' output deviation from exact softmax."""
    if "deviation_from_softmax" not in speed.columns:
        return []
    rows = speed[(speed["status"] == "ok") & speed["deviation_from_softmax"].notna()]
    out = []
    for impl, sub in rows.groupby("impl", sort=False):
        low, high = (f"{v:.3g}" for v in (sub["deviation_from_softmax"].min(),
                                           sub["deviation_from_softmax"].max()))
        spread = low if low == high else f"{low} to {high}"
        out.append(f"{impl}: its output deviates from exact softmax attention on the same inputs "
                   f"by {spread} (relative Frobenius error, T up to {int(sub['seq_len'].max())}):"
                   f" its speed is not the speed of the same function.")
    return out


def scaling_findings(scaling: pd.DataFrame) -> list[str]:
    if scaling.empty:
        return []
    holds, fails = [], []
    for _, row in scaling.iterrows():
        label = row["impl"] + (f" ({row['pass'].replace('_', '+')}, D={row['head_dim']})"
                               if scaling[["pass", "head_dim"]].drop_duplicates().shape[0] > 1
                               else "")
        if row["points"] < MIN_FIT_POINTS:
            continue
        for what in ("time", "memory"):
            measured, theory = row[f"{what}_exponent"], row[f"{what}_theory"]
            if pd.isna(measured) or theory is None or pd.isna(theory):
                continue
            text = f"{label} {what} T^{measured:.2f} (claimed T^{theory:g})"
            (holds if abs(measured - theory) <= EXPONENT_TOLERANCE else fails).append(text)
    out = []
    few = scaling[scaling["points"] < MIN_FIT_POINTS]
    if len(few):
        out.append(f"Scaling not judged for {len(few)} series: fewer than {MIN_FIT_POINTS} "
                   f"lengths in the upper part of the range (see the scaling table).")
    if holds:
        out.append("Scaling as claimed (measured exponent within ±0.3 of the claim, fitted over "
                   "the upper part of the lengths): " + "; ".join(holds) + ".")
    if fails:
        out.append("Scaling not as claimed on this hardware over the measured range (a lower "
                   "exponent often means fixed costs still dominate at these lengths): " +
                   "; ".join(fails) + ".")
    return out


def run_findings(pairs: pd.DataFrame, reference: str) -> list[str]:
    out = []
    if pairs.empty:
        return out
    for (run, impl), rows in pairs.groupby(["run", "impl"], sort=False):
        ratio = float(rows["time_ratio"].median())
        hw = rows.iloc[0]["hardware_tag_other"]
        ref_hw = rows.iloc[0]["hardware_tag_ref"]
        word = (f"{times(1 / ratio)} faster" if ratio < 0.95 else
                f"{times(ratio)} slower" if ratio > 1.05 else "within 5% of")
        tail = "" if word == "within 5% of" else " than"
        out.append(f"{impl}: {run} ({hw}) is {word}{tail} {reference} ({ref_hw}) "
                   f"(median time ratio {ratio:.3g} over {len(rows)} paired points).")
    return out


# -- energy -----------------------------------------------------------------------------------
def energy_comparison(row: pd.Series, base: pd.Series, baseline: str) -> str:
    """The energy-per-token ratio of two points where both have a value ('' otherwise): a
    difference is stated only beyond the sum of the two values' counter-lag bounds
    (energy_error_max) and 5%."""
    e, eb = row.get("energy_j_per_token"), base.get("energy_j_per_token")
    if pd.isna(e) or pd.isna(eb) or e <= 0 or eb <= 0:
        return ""
    bound = sum(float(x) for x in (row.get("energy_error_max"), base.get("energy_error_max"))
                if x is not None and pd.notna(x))
    ratio = eb / e
    values = f"{e * 1e6:.3g} vs {eb * 1e6:.3g} µJ per token"
    if max(ratio, 1 / ratio) <= 1 + max(0.05, bound):
        return f"about the same energy per token as {baseline} ({values})"
    word = "less" if ratio > 1 else "more"
    return f"{times(max(ratio, 1 / ratio))} {word} energy per token than {baseline} ({values})"


def energy_absence(speed: pd.DataFrame) -> str:
    """Why the ok points have no energy value, grouped by reason ('' when every ok point has
    one): 'no energy counter on this machine: RAPL not readable: ... (12 of 12 ok points)'."""
    ok = speed[speed["status"] == "ok"]
    if ok.empty or "energy_j_per_call" not in ok.columns:
        return ""
    missing = ok[ok["energy_j_per_call"].isna()]
    if missing.empty:
        return ""
    reasons = missing.get("energy_reason", pd.Series("", index=missing.index)).fillna("")
    counts = reasons.replace("", "not recorded (records written without energy fields)") \
        .value_counts()
    parts = []
    for reason, n in counts.items():
        machine = str(reason).startswith(("RAPL not readable", "no NVML",
                                          "counter not supported", "no energy counter"))
        prefix = "no energy counter on this machine: " if machine else ""
        parts.append(f"{prefix}{reason} ({n} of {len(ok)} ok points)")
    return "; ".join(parts)
