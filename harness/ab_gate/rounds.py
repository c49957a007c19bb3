"""Interleaved rounds: each round runs one sweep per side (that side's own ``run_bench.py``),
alternating which side goes first, until every point is decided, the round cap or the time budget.

One sweep process per side per round measures every point of the grid with the normal sweep's
worker isolation and correctness gate; its records land in a run directory of their own
(``OUT/rounds/base-01`` ...) and are appended to the side's pooled run directory (``OUT/base``,
``OUT/head``: every round of a point is one record there, so ``run_bench.py compare`` reads them
as rounds too). Records are read as plain JSON, so a side from an older revision only needs the
record fields every revision has written (point fields, status, message, time_samples_s).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from harness.ab_gate.sides import ENTRY, Side, is_checkout
from harness.ab_gate.paired_stats import (
    IMPROVED,
    REGRESSED,
    UNCHANGED,
    UNDECIDED,
    PairedEstimate,
    base_first,
    paired_estimate,
    side_value,
    verdict,
)
from harness.errors import UsageError
from harness.records import Point

LABELS = ("base", "head")
FIXED, NEW, MISSING, NOT_MEASURED = "fixed", "new", "missing", "not measured"
DECIDED = (REGRESSED, IMPROVED, UNCHANGED, FIXED, NEW, MISSING, NOT_MEASURED)


@dataclass(frozen=True)
class Plan:
    sides: dict[str, Side]
    sweep_args: tuple[str, ...]        # grid and timing flags for each side's sweep
    impl_modules: tuple[str, ...]
    out: Path
    threshold: float = 0.10
    confidence: float = 0.95
    statistic: str = "min"
    clock: str = "wall"                # or "cpu": the worker's CPU time per sample, where recorded
    min_rounds: int = 4
    max_rounds: int = 16
    max_time_s: float = 240.0
    python: str = sys.executable


@dataclass
class History:
    """Everything measured for one point, round by round."""

    point: Point
    statuses: list[tuple[str | None, str | None]] = field(default_factory=list)  # (base, head)
    base_values: list[float] = field(default_factory=list)   # rounds where both were ok
    head_values: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    messages: dict[str, str] = field(default_factory=dict)   # last non-ok message per side
    wall_fallbacks: int = 0    # rounds judged on wall time although --clock cpu was asked for


@dataclass(frozen=True)
class Judgement:
    point: Point
    verdict: str
    estimate: PairedEstimate | None
    base_value: float | None
    head_value: float | None
    note: str = ""


@dataclass
class Outcome:
    judgements: list[Judgement]
    rounds: int
    elapsed_s: float
    stop_reason: str
    round_seconds: list[float]


# -- one side, one round ------------------------------------------------------------------------
def side_environment(root: Path, *, one_thread: bool = False) -> dict[str, str]:
    """This environment with ``root`` first on PYTHONPATH and no other attnbench checkout on it,
    so that the side imports its own harness and implementations. ``one_thread``: one thread
    per worker unless the caller chose otherwise (CPU time of a multi-threaded process counts
    its idle threads' spin-waiting)."""
    env = dict(os.environ)
    if one_thread:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(name, "1")
    keep = [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
            if p and not is_checkout(Path(p))]
    env["PYTHONPATH"] = os.pathsep.join([str(root), *keep])
    return env


def sweep_argv(plan: Plan, side: Side, out_dir: Path) -> list[str]:
    modules = [arg for m in plan.impl_modules for arg in ("--impl-module", m)]
    return [plan.python, str(side.root / ENTRY), *modules, "sweep", *plan.sweep_args,
            "--out", str(out_dir), "--no-report"]


def run_side(plan: Plan, side: Side, out_dir: Path) -> list[dict[str, Any]]:
    """One sweep of ``side`` into ``out_dir``; its raw records. Its output goes to a log beside
    the run directory. A sweep that refuses its input or fails is bad input: UsageError."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    log = out_dir.with_name(out_dir.name + ".log")
    with open(log, "w", encoding="utf-8") as handle:
        done = subprocess.run(sweep_argv(plan, side, out_dir), cwd=side.root,
                              env=side_environment(side.root, one_thread=plan.clock == "cpu"),
                              stdout=handle,
                              stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        lines = [x for x in log.read_text(errors="replace").splitlines() if x.strip()]
        last = lines[-1].strip() if lines else "(no output)"
        what = "refused the input" if done.returncode == 2 else f"failed (exit {done.returncode})"
        raise UsageError(f"{side.label.upper()} {side.describe()}: its sweep {what}: {last} "
                         f"(log: {log})")
    return read_raw_records(out_dir)


def read_raw_records(run_dir: Path) -> list[dict[str, Any]]:
    """The records of a run directory as plain dicts (a truncated last line is skipped)."""
    path = run_dir / "results.jsonl"
    records = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        if data.get("kind", "speed") == "speed" and "impl" in data:
            records.append(data)
    return records


def pool_round(pooled: Path, round_dir: Path, side: Side) -> None:
    """Append one round's records to the side's pooled run directory (created at round 1)."""
    pooled.mkdir(parents=True, exist_ok=True)
    run_json = pooled / "run.json"
    if not run_json.exists() and (round_dir / "run.json").exists():
        meta = json.loads((round_dir / "run.json").read_text())
        meta["ab"] = {"side": side.label, "spec": side.spec, "commit": side.commit,
                      "root": str(side.root), "note": "every round of a point is one record"}
        run_json.write_text(json.dumps(meta, indent=2, default=str) + "\n")
    text = (round_dir / "results.jsonl").read_text() if (round_dir / "results.jsonl").exists() \
        else ""
    with open(pooled / "results.jsonl", "a", encoding="utf-8") as handle:
        handle.write(text if not text or text.endswith("\n") else text + "\n")
        handle.flush()
        os.fsync(handle.fileno())


# -- judging ------------------------------------------------------------------------------------
def cpu_samples(data: dict[str, Any]) -> list[float]:
    """The CPU-time samples of a raw record (kept in ``extra``); empty for a side too old to
    record them."""
    values = data.get("cpu_time_samples_s") or (data.get("extra") or {}).get(
        "cpu_time_samples_s")
    return [float(x) for x in values] if values else []


def pair_samples(b: dict[str, Any], h: dict[str, Any],
                 clock: str) -> tuple[list[float], list[float], str]:
    """Both sides' samples on the same clock: CPU time when asked and both recorded it."""
    if clock == "cpu":
        bc, hc = cpu_samples(b), cpu_samples(h)
        if bc and hc:
            return bc, hc, "cpu"
    return (b.get("time_samples_s") or [b["time_s"]], h.get("time_samples_s") or [h["time_s"]],
            "wall")


def point_of(data: dict[str, Any]) -> Point:
    """The point a raw record measured (KeyError, TypeError or ValueError if it names none)."""
    return Point(impl=data["impl"], seq_len=int(data["seq_len"]),
                 head_dim=int(data["head_dim"]), batch=int(data["batch"]),
                 heads=int(data["heads"]), dtype=data["dtype"], causal=bool(data["causal"]),
                 pass_=data["pass"], device=data["device"])


def add_round(histories: dict[Point, History], records: dict[str, list[dict[str, Any]]],
              statistic: str, clock: str = "wall") -> None:
    """Fold one round (both sides' raw records) into the histories."""
    by_side: dict[str, dict[Point, dict[str, Any]]] = {}
    for label in LABELS:
        by_side[label] = {}
        for data in records[label]:
            try:
                by_side[label][point_of(data)] = data
            except (KeyError, TypeError, ValueError):
                continue
    for point in sorted(set(by_side["base"]) | set(by_side["head"])):
        history = histories.setdefault(point, History(point))
        b, h = by_side["base"].get(point), by_side["head"].get(point)
        statuses = (b.get("status") if b else None, h.get("status") if h else None)
        history.statuses.append(statuses)
        for label, data in (("base", b), ("head", h)):
            if data is not None and data.get("status") != "ok":
                history.messages[label] = str(data.get("message", ""))[:200]
        if statuses == ("ok", "ok"):
            try:
                b_samples, h_samples, used = pair_samples(b, h, clock)
                bv = side_value(b_samples, statistic)
                hv = side_value(h_samples, statistic)
            except (KeyError, TypeError, ValueError):
                continue
            history.wall_fallbacks += used != clock
            if bv > 0 and hv > 0:
                history.base_values.append(bv)
                history.head_values.append(hv)
                history.ratios.append(hv / bv)


def judge(history: History, threshold: float, confidence: float) -> Judgement:
    point = history.point
    broke = [(b, h) for b, h in history.statuses if b == "ok" and h not in ("ok", None)]
    if broke:
        message = history.messages.get("head", "")
        return Judgement(point, REGRESSED, None, None, None,
                         f"status ok -> {broke[-1][1]} in {len(broke)} round(s): {message}")
    if not history.ratios:
        bases = {b for b, _ in history.statuses}
        heads = {h for _, h in history.statuses}
        if heads == {None}:
            return Judgement(point, MISSING, None, None, None, "not in HEAD's grid")
        if bases == {None}:
            return Judgement(point, NEW, None, None, None, "not in BASE's grid")
        if "ok" in heads:
            return Judgement(point, FIXED, None, None, None,
                             f"BASE {'/'.join(sorted(b for b in bases if b))}: "
                             f"{history.messages.get('base', '')}")
        return Judgement(point, NOT_MEASURED, None, None, None,
                         f"{'/'.join(sorted(h for h in heads if h))} on both: "
                         f"{history.messages.get('head', '')}")
    estimate = paired_estimate(history.ratios, confidence)
    note = (f"wall time in {history.wall_fallbacks} round(s): a side recorded no CPU time"
            if history.wall_fallbacks else "")
    return Judgement(point, verdict(estimate, threshold), estimate,
                     statistics.median(history.base_values),
                     statistics.median(history.head_values), note)


def per_point_confidence(confidence: float, points: int) -> float:
    """Bonferroni: each of ``points`` intervals at this level, so that the chance of any of them
    missing (a false verdict anywhere in the table, which fails the gate) is at most
    1 - confidence."""
    return 1.0 - (1.0 - confidence) / max(1, points)


def judge_all(histories: dict[Point, History], threshold: float,
              confidence: float) -> list[Judgement]:
    judged = sum(1 for h in histories.values() if h.ratios)
    level = per_point_confidence(confidence, judged)
    return [judge(h, threshold, level)
            for h in sorted(histories.values(), key=lambda h: h.point)]


# -- the loop -----------------------------------------------------------------------------------
RoundListener = Callable[[int, list[Judgement], float], None]


def run_rounds(plan: Plan, listener: RoundListener | None = None) -> Outcome:
    """Rounds until every point is decided (checked after an even number of rounds, at least
    ``min_rounds``), ``max_rounds`` or the time budget (no round is started that would likely
    end beyond it)."""
    histories: dict[Point, History] = {}
    start = time.monotonic()
    durations: list[float] = []
    judgements: list[Judgement] = []
    reason = "round cap reached"
    for index in range(1, plan.max_rounds + 1):
        elapsed = time.monotonic() - start
        if durations and index > 2 and elapsed + max(durations[-2:]) > plan.max_time_s:
            reason = f"time budget ({plan.max_time_s:g} s) spent"
            break
        t0 = time.monotonic()
        order = LABELS if base_first(index) else tuple(reversed(LABELS))
        records: dict[str, list[dict[str, Any]]] = {}
        for label in order:
            side = plan.sides[label]
            round_dir = plan.out / "rounds" / f"{label}-{index:02d}"
            records[label] = run_side(plan, side, round_dir)
            pool_round(plan.out / label, round_dir, side)
        add_round(histories, records, plan.statistic, plan.clock)
        durations.append(time.monotonic() - t0)
        judgements = judge_all(histories, plan.threshold, plan.confidence)
        if listener is not None:
            listener(index, judgements, durations[-1])
        if not histories:
            raise UsageError("neither side measured any point (the grid is empty?)")
        if index >= plan.min_rounds and index % 2 == 0 and \
                all(j.verdict in DECIDED for j in judgements):
            reason = "every point decided"
            break
    return Outcome(judgements, len(durations), time.monotonic() - start, reason, durations)


def exit_status(judgements: Sequence[Judgement]) -> int:
    return 1 if any(j.verdict == REGRESSED for j in judgements) else 0


__all__ = ["Plan", "History", "Judgement", "Outcome", "run_rounds", "exit_status", "judge",
           "add_round", "UNDECIDED"]
