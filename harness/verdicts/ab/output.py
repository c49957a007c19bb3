"""The A/B table: rich on stdout, ``ab.md`` (for a pull request) and ``ab.csv`` (one row a point,
with every round's ratio)."""

from __future__ import annotations

import csv
import io
from typing import Sequence

from harness.contract.records import point_columns
from harness.verdicts.ab.rounds import Judgement
from harness.verdicts.ab.paired_stats import IMPROVED, REGRESSED, UNCHANGED, UNDECIDED

COLUMNS = ("impl", "config", "BASE", "HEAD", "ratio", "interval", "rounds", "verdict", "note")
STYLE = {REGRESSED: "bold red", IMPROVED: "green", UNDECIDED: "yellow", UNCHANGED: ""}


def config_text(j: Judgement) -> str:
    p = j.point
    workload = p.workload_label()
    return (f"T={p.seq_len} D={p.head_dim} B={p.batch} H={p.heads} {p.dtype} "
            f"{'causal ' if p.causal else ''}{p.pass_} {p.device}"
            + (f" {workload}" if workload else ""))


def value_text(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "instructions":
        return f"{value / 1e6:.2f} M"
    for scale, name in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us")):
        if value >= scale:
            return f"{value / scale:.3g} {name}"
    return f"{value * 1e9:.3g} ns"


def cells(j: Judgement, unit: str) -> dict[str, str]:
    e = j.estimate
    return {"impl": j.point.impl, "config": config_text(j),
            "BASE": value_text(j.base_value, unit), "HEAD": value_text(j.head_value, unit),
            "ratio": f"{e.ratio:.3f}" if e else "-",
            "interval": (f"[{e.lo:.3f}, {e.hi:.3f}]" if e.hi != float("inf") else
                         f"[{e.lo:.3f}, inf]") if e else "-",
            "rounds": str(e.rounds) if e else "-", "verdict": j.verdict, "note": j.note}


def rich_table(judgements: Sequence[Judgement], title: str, unit: str):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in COLUMNS:
        table.add_column(column, overflow="fold")
    for j in judgements:
        row = cells(j, unit)
        style = STYLE.get(j.verdict, "")
        table.add_row(*[f"[{style}]{row[c]}[/]" if style and c == "verdict" else row[c]
                        for c in COLUMNS])
    return table


def markdown(judgements: Sequence[Judgement], header: Sequence[str], unit: str) -> str:
    lines = [*header, "", "| " + " | ".join(COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    for j in judgements:
        row = cells(j, unit)
        lines.append("| " + " | ".join(row[c].replace("|", "/") for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def csv_text(judgements: Sequence[Judgement], unit: str) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    names = point_columns(j.point for j in judgements)
    writer.writerow([*names, "point_id", "metric", "base", "head", "ratio", "lo",
                     "hi", "rounds", "verdict", "round_ratios", "note"])
    for j in judgements:
        p, e = j.point, j.estimate
        columns = p.columns()
        writer.writerow([*("" if columns.get(n) is None else columns[n] for n in names),
                         p.point_id, unit,
                         "" if j.base_value is None else f"{j.base_value:.6g}",
                         "" if j.head_value is None else f"{j.head_value:.6g}",
                         f"{e.ratio:.5f}" if e else "", f"{e.lo:.5f}" if e else "",
                         f"{e.hi:.5f}" if e else "", e.rounds if e else "",
                         j.verdict, ";".join(f"{r:.5f}" for r in e.ratios) if e else "",
                         j.note])
    return buffer.getvalue()


def summary_line(judgements: Sequence[Judgement]) -> str:
    counts: dict[str, int] = {}
    for j in judgements:
        counts[j.verdict] = counts.get(j.verdict, 0) + 1
    parts = ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
    regressed = counts.get(REGRESSED, 0)
    return (f"REGRESSION: {regressed} point(s) ({parts})" if regressed
            else f"no regression ({parts})")
