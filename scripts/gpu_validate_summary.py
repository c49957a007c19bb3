"""Summary of a scripts/gpu_validate.sh run: WORK/summary.md, printed too.

Reads WORK/steps.tsv (written by the script), the GPU tests' progress lines (a line per test as
it ended, across runs; the JUnit XML when there are none) and the run directories under
WORK/results, and states per step what happened and per run what was recorded.
"""

from __future__ import annotations

import csv
import json
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path


def read_steps(out: Path) -> list[dict[str, str]]:
    with open(out / "steps.tsv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def junit_counts(path: Path) -> str:
    """'N passed, M skipped, ...' with the distinct skip reasons, from pytest's JUnit XML."""
    if not path.exists():
        return ""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        return f"unreadable JUnit XML ({exc})"
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for case in root.iter("testcase"):
        outcome = next((child for child in case if child.tag in ("skipped", "failure", "error")),
                       None)
        if outcome is None:
            counts["passed"] += 1
        else:
            counts[{"skipped": "skipped", "failure": "failed", "error": "errors"}[outcome.tag]] += 1
            if outcome.tag == "skipped":
                reasons[(outcome.get("message") or "").strip()] += 1
    text = ", ".join(f"{n} {what}" for what, n in counts.items())
    if reasons:
        top = "; ".join(f"{reason} ({n})" for reason, n in reasons.most_common(3))
        text += f" — skip reasons: {top}"
    return text


def progress_counts(path: Path) -> str:
    """'N passed, M skipped, ...' with the failed tests' names and the distinct skip reasons, from
    scripts/pytest_gpu_plan.py's progress lines (outcome, node id, seconds, reason)."""
    if not path.exists():
        return ""
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    failed: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split("\t")
        if len(fields) < 3:
            continue
        outcome, nodeid, reason = fields[0], fields[1], fields[3] if len(fields) > 3 else ""
        counts[outcome] += 1
        if outcome == "skipped":
            reasons[reason] += 1
        elif outcome in ("failed", "error"):
            failed.append(f"{nodeid.split('::')[-1]} ({reason[:100]})")
    text = ", ".join(f"{n} {what}" for what, n in counts.items())
    if failed:
        text += " — failed: " + "; ".join(failed[:5]) + (" ..." if len(failed) > 5 else "")
    if reasons:
        text += " — skip reasons: " + "; ".join(f"{r} ({n})" for r, n in reasons.most_common(3))
    return text


def run_counts(run: Path) -> str:
    """Statuses of a run directory's records (and points left by the time budget)."""
    results = run / "results.jsonl"
    if not results.exists():
        return ""
    statuses: Counter[str] = Counter()
    for line in results.read_text(encoding="utf-8").splitlines():
        try:
            statuses[json.loads(line).get("status", "?")] += 1
        except json.JSONDecodeError:
            statuses["unreadable line"] += 1
    text = ", ".join(f"{status} {n}" for status, n in sorted(statuses.items()))
    try:
        not_tried = json.loads((run / "run.json").read_text()).get("not_tried_time_budget")
    except (OSError, json.JSONDecodeError):
        not_tried = None
    if not_tried:
        text += f"; {not_tried} not tried (time budget; a rerun of the script resumes it)"
    return text


def read_floor(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def floor_counts(path: Path) -> str:
    data = read_floor(path)
    if data is None:
        return ""
    statuses = Counter(row["status"] for row in data.get("rows", []))
    counts = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
    if data.get("complete") is False:  # written row by row: the step stopped before the end
        counts += (", " if counts else "") + "incomplete (stopped before its last row)"
    return counts


def floor_table(path: Path) -> list[str]:
    """HRR forward time over the bandwidth floor (benchmarks/hrr/bandwidth_floor.py)."""
    data = read_floor(path)
    rows = [r for r in (data or {}).get("rows", []) if r.get("status") == "ok"]
    if not rows:
        return []
    lines = ["", f"HRR forward over the bandwidth floor (copy bandwidth "
                 f"{data['copy_bandwidth_bytes_s'] / 1e9:.0f} GB/s; target: at most 2x):", "",
             "| impl | dtype | T | ms | floor ms | x floor |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['impl']} | {r['dtype']} | {r['seq_len']} | {r['time_s'] * 1e3:.3f} | "
              f"{r['floor_s'] * 1e3:.3f} | {r['ratio']:.2f} |" for r in rows]
    return lines


def summary(out: Path) -> str:
    steps = read_steps(out)
    lines = ["# attnbench GPU validation", "", "| step | status | seconds | detail |",
             "|---|---|---|---|"]
    details = {"gpu-tests": progress_counts(out / "gpu-tests.progress.tsv")
               or junit_counts(out / "gpu-tests.xml"),
               "hrr-floor": floor_counts(out / "hrr_floor.json"),
               "sweep": run_counts(out / "results" / "sweep"),
               "cudagraph": run_counts(out / "results" / "cudagraph"),
               "lra": run_counts(out / "results" / "lra")}
    for step in steps:
        detail = "; ".join(d for d in (step["detail"], details.get(step["step"], "")) if d)
        lines.append(f"| {step['step']} | {step['status']} | {step['seconds']} | {detail} |")
    total = sum(int(step["seconds"] or 0) for step in steps)
    bad = [s["step"] for s in steps if s["status"] in ("failed", "timeout")]
    lines += ["", f"Steps took {total} s in all. " +
              (f"Failed or timed out: {', '.join(bad)}." if bad else "No step failed.")]
    lines += floor_table(out / "hrr_floor.json")
    lines.append("")
    lines.append(f"Working folder {out}; OUTDIR/gpu_validate.tar.gz holds it without caches and "
                 f"data (log.txt, steps.tsv, environment.txt, results/, report/).")
    if (out / "results" / "sweep" / "results.jsonl").exists():
        lines.append("To keep the sweep as a baseline: copy results/sweep (from the archive) to "
                     "results/baselines/<gpu-name>.")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: gpu_validate_summary.py WORK", file=sys.stderr)
        return 2
    out = Path(argv[0])
    if not (out / "steps.tsv").exists():
        print(f"{out}: no steps.tsv; not a gpu_validate.sh working folder", file=sys.stderr)
        return 2
    text = summary(out)
    (out / "summary.md").write_text(text, encoding="utf-8")
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
