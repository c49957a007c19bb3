"""Interleaved rounds, until every point is decided, the round cap or the time budget.

Each round starts a fresh round server per side (``run_bench.py sweep --serve-rounds`` of that
side's own tree: planned and gated, harness.verdicts.ab.servers), both at once, and then measures the
grid point by point, both sides of a point back to back, alternating which side goes first
(ABBA over points and rounds). Fresh processes every round: a process's address-space layout
can make the same code faster or slower for the whole life of the process, so rounds measured
in one long-lived process per side would share that side's luck and no longer be independent
draws. A side from a revision without a round server runs one whole sweep per round instead.

Every point is measured with the normal sweep's worker isolation and correctness gate; each
round's records land in a run directory of their own (``OUT/rounds/base-01`` ...) and are
appended to the side's pooled run directory (``OUT/base``, ``OUT/head``: every round of a point
is one record there, so ``run_bench.py compare`` reads them as rounds too). Records are read as
plain JSON, so a side from an older revision only needs the record fields every revision has
written (point fields, status, message, time_samples_s).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from harness.verdicts.ab.servers import Batons, SideServer, has_round_server, side_sweep_argv
from harness.verdicts.ab.sides import Side, is_checkout
from harness.verdicts.ab.paired_stats import (
    base_first,
    paired_decision,
    paired_estimate,
    side_noise,
    side_value,
)
from harness.verdicts.row import STATUS, VerdictRow
from harness.verdicts.words import (
    AMBIGUOUS,
    NOT_COMPARABLE,
    NOT_MEASURED,
    ONLY_BASELINE,
    ONLY_CURRENT,
    status_verdict,
)
from harness.errors import UsageError
from harness.contract.records import Point, implied_timing_basis

LABELS = ("base", "head")    # the sides' internal labels: their run directories OUT/base, OUT/head


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
    # threads per worker: OMP_NUM_THREADS and MKL_NUM_THREADS of both sides' processes (None:
    # this environment's)
    threads: int | None = None
    # pin both lockstep workers of a point to one CPU (single-threaded workers only), a
    # different CPU each round (pinned_cpu)
    pin: bool = False


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
    paired: int = 0            # rounds judged call by call (timed in lockstep)


@dataclass
class Outcome:
    rows: list[VerdictRow]       # one a point, BASE the baseline and HEAD the current side
    rounds: int
    elapsed_s: float
    stop_reason: str
    round_seconds: list[float]
    mode: str = ""               # how the rounds were measured


# -- one side, one round ------------------------------------------------------------------------
def side_environment(root: Path, *, threads: int | None = None) -> dict[str, str]:
    """This environment with ``root`` first on PYTHONPATH and no other attnbench checkout on it,
    so that the side imports its own harness and implementations. ``threads``: that many threads
    per worker (OMP_NUM_THREADS, MKL_NUM_THREADS; None: as this environment has it)."""
    env = dict(os.environ)
    if threads is not None:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = str(threads)
    keep = [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
            if p and not is_checkout(Path(p))]
    env["PYTHONPATH"] = os.pathsep.join([str(root), *keep])
    return env


def sweep_argv(plan: Plan, side: Side, out_dir: Path) -> list[str]:
    """One whole sweep of the grid (a side without a round server)."""
    return side_sweep_argv(plan.python, side, plan.impl_modules, plan.sweep_args,
                           "--out", str(out_dir), "--no-report")


def run_side(plan: Plan, side: Side, out_dir: Path) -> list[dict[str, Any]]:
    """One sweep of ``side`` into ``out_dir``; its raw records. Its output goes to a log beside
    the run directory. A sweep that refuses its input or fails is bad input: UsageError."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    log = out_dir.with_name(out_dir.name + ".log")
    with open(log, "w", encoding="utf-8") as handle:
        done = subprocess.run(sweep_argv(plan, side, out_dir), cwd=side.root,
                              env=side_environment(side.root, threads=plan.threads),
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


def request_timeout(plan: Plan) -> float:
    """How long to wait for one point: its two worker tasks (memory, timing) with the sweep's
    --timeout each, plus the compile allowance, plus slack."""
    args = list(plan.sweep_args)
    timeout = float(args[args.index("--timeout") + 1]) if "--timeout" in args else 120.0
    return 2 * (timeout + 600.0) + 60.0


def served_round(plan: Plan, index: int) -> tuple[dict[str, list[dict[str, Any]]], str]:
    """One round by fresh round servers, both started at once, point by point, both sides of a
    point timed in lockstep (their calls taking turns); the records and how long starting and
    measuring took."""
    servers: dict[str, SideServer] = {}
    round_dirs = {label: plan.out / "rounds" / f"{label}-{index:02d}" for label in LABELS}
    records: dict[str, list[dict[str, Any]]] = {label: [] for label in LABELS}
    wait = request_timeout(plan)
    batons = Batons(plan.out / "rounds" / ".batons", LABELS)
    t0 = time.monotonic()
    ready_s = 0.0
    try:
        for label in LABELS:
            side = plan.sides[label]
            servers[label] = SideServer(
                side_sweep_argv(plan.python, side, plan.impl_modules, plan.sweep_args,
                                "--serve-rounds"), side,
                side_environment(side.root, threads=plan.threads),
                round_dirs[label].with_name(round_dirs[label].name + ".log"))
        grids = {label: {point_of(p["point"]): p["point_id"]
                         for p in servers[label].ready(wait)} for label in LABELS}
        ready_s = time.monotonic() - t0
        for position, point in enumerate(sorted(set(grids["base"]) | set(grids["head"]))):
            present = [label for label in LABELS if point in grids[label]]
            if len(present) == 1:
                label = present[0]
                records[label].append(servers[label].measure(grids[label][point],
                                                             round_dirs[label], wait))
                continue
            leader = "base" if base_first(index + position) else "head"
            for label, record in lockstep_pair(servers, grids, point, round_dirs, batons,
                                               leader, wait,
                                               pinned_cpu(index) if plan.pin else None).items():
                records[label].append(record)
        for label in LABELS:
            servers[label].close(round_dirs[label])
    finally:
        for server in servers.values():
            server.stop()
        batons.close()
    for label in LABELS:
        pool_round(plan.out / label, round_dirs[label], plan.sides[label])
    return records, (f"servers ready in {ready_s:.0f} s, points measured in "
                     f"{time.monotonic() - t0 - ready_s:.0f} s")


def pinned_cpu(round_index: int) -> int | None:
    """The CPU both lockstep workers of every point of round ``round_index`` are pinned to: the
    CPUs this process may use, in turn round by round (so that no one CPU's neighbours weigh
    on every round); None where affinity is not available."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    return cpus[round_index % len(cpus)] if cpus else None


def lockstep_pair(servers: dict[str, SideServer], grids: dict[str, dict[Point, str]],
                  point: Point, round_dirs: dict[str, Path], batons: Batons, leader: str,
                  wait: float, cpu: int | None = None) -> dict[str, dict[str, Any]]:
    """Both sides measure ``point`` at once, their timing workers taking turns (``leader``
    first; both pinned to ``cpu`` when given). A side whose record comes back not ok while the
    other still waits for its turn: the other is told to stop, so it does not wait out its
    timeout."""
    batons.drain()
    batons.start(leader)
    for label in LABELS:
        turns = batons.lockstep(label, leader)
        if cpu is not None:
            turns["cpu"] = cpu
        servers[label].ask_measure(grids[label][point], round_dirs[label], turns)
    got: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + wait
    while len(got) < len(LABELS):
        for label in LABELS:
            if label in got or not servers[label].has_reply():
                continue
            got[label] = servers[label].record(wait, grids[label][point])
            other = next(x for x in LABELS if x != label)
            if got[label].get("status") != "ok" and other not in got:
                batons.stop(other)
        if len(got) < len(LABELS):
            if time.monotonic() > deadline:
                for label in LABELS:
                    if label not in got:
                        got[label] = servers[label].record(1.0, grids[label][point])
            time.sleep(0.01)
    return got


def whole_sweeps_round(plan: Plan, index: int) -> tuple[dict[str, list[dict[str, Any]]], str]:
    """One round as one whole sweep per side, BASE first in odd rounds."""
    order = LABELS if base_first(index) else tuple(reversed(LABELS))
    records: dict[str, list[dict[str, Any]]] = {}
    for label in order:
        side = plan.sides[label]
        round_dir = plan.out / "rounds" / f"{label}-{index:02d}"
        records[label] = run_side(plan, side, round_dir)
        pool_round(plan.out / label, round_dir, side)
    return records, f"{'BASE' if base_first(index) else 'HEAD'} first, one sweep per side"


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
    """The point a raw record (or a point's dict) measured: every axis of the table (absent
    workload axes: the defaults); KeyError, TypeError or ValueError if it names none. This is
    ab's point key: sides pair on it."""
    return Point.from_dict(data)


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
            bases = (record_basis(b), record_basis(h))
            if bases[0] and bases[1] and bases[0] != bases[1]:
                # CUDA events against the host's clock: a difference of method, not of speed
                history.messages["basis"] = (f"timing basis differs: {bases[0]} (baseline) vs "
                                             f"{bases[1]} (current)")
                continue
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
                paired = turn_ratio(b, h, b_samples, h_samples)
                history.paired += paired is not None
                history.ratios.append(hv / bv if paired is None else paired)


def record_basis(data: dict[str, Any]) -> str:
    """A raw record's timing basis (inferred from its timer where it predates the field)."""
    return str(data.get("timing_basis") or implied_timing_basis(data.get("timer")))


def turn_ratio(b: dict[str, Any], h: dict[str, Any], b_samples: list[float],
               h_samples: list[float]) -> float | None:
    """For two records timed in lockstep (their calls taking turns), the median over turns of
    HEAD's call / BASE's call next to it: each pair shares the machine's state of that moment,
    so a burst that slows a few consecutive calls moves a few pairs, not a side's median.
    None when the records were not timed in lockstep (a side without it, unequal counts)."""
    if not ((b.get("extra") or {}).get("lockstep") and (h.get("extra") or {}).get("lockstep")):
        return None
    if len(b_samples) != len(h_samples) or not b_samples or \
            min(b_samples) <= 0 or min(h_samples) <= 0:
        return None
    return math.exp(statistics.median(math.log(y / x) for x, y in zip(b_samples, h_samples)))


def judge(history: History, threshold: float, confidence: float,
          metric: str = "time") -> VerdictRow:
    """One point's row: BASE is the baseline side, HEAD the current one. A round in which BASE
    was ok and HEAD not makes the point newly failing, whatever the other rounds say."""
    point = history.point
    broke = [(b, h) for b, h in history.statuses if b == "ok" and h not in ("ok", None)]
    if broke:
        after = broke[-1][1]
        return VerdictRow(point, STATUS, status_verdict("ok", after), baseline_status="ok",
                          current_status=after,
                          note=f"in {len(broke)} round(s): {history.messages.get('head', '')}")
    if not history.ratios:
        bases = sorted({b for b, _ in history.statuses if b})
        heads = sorted({h for _, h in history.statuses if h})
        statuses = dict(baseline_status="/".join(bases), current_status="/".join(heads))
        if not heads:
            return VerdictRow(point, STATUS, ONLY_BASELINE, note="not in the current side's grid",
                              **statuses)
        if not bases:
            return VerdictRow(point, STATUS, ONLY_CURRENT,
                              note="not in the baseline side's grid", **statuses)
        if history.messages.get("basis"):
            return VerdictRow(point, STATUS, NOT_COMPARABLE, note=history.messages["basis"],
                              **statuses)
        # no round judged: not ok on BASE and ok on HEAD is newly running; anything else
        # (not ok on both, or no value recorded) is not measured
        if "ok" in heads and bases != ["ok"]:
            before = next(b for b in bases if b != "ok")
            return VerdictRow(point, STATUS, status_verdict(before, "ok"),
                              note=history.messages.get("base", ""), **statuses)
        return VerdictRow(point, STATUS, NOT_MEASURED,
                          note=history.messages.get("head", "") or "no value recorded",
                          **statuses)
    estimate = paired_estimate(history.ratios, confidence)
    decision = paired_decision(estimate, threshold,
                               side_noise(history.base_values, confidence),
                               side_noise(history.head_values, confidence))
    notes = [decision.reason if decision.verdict == AMBIGUOUS else ""]
    if history.wall_fallbacks:
        notes.append(f"wall time in {history.wall_fallbacks} round(s): a side recorded no CPU "
                     f"time")
    if 0 < history.paired < len(history.ratios):
        notes.append(f"{len(history.ratios) - history.paired} round(s) not timed in lockstep: "
                     f"ratio of the sides' values")
    return VerdictRow(point, metric, decision.verdict,
                      baseline=statistics.median(history.base_values),
                      current=statistics.median(history.head_values), ratio=decision.ratio,
                      lo=decision.lo, hi=decision.hi, baseline_noise=decision.baseline_noise,
                      current_noise=decision.current_noise, baseline_status="ok",
                      current_status="ok", rounds=str(estimate.rounds),
                      round_ratios=estimate.ratios, note="; ".join(filter(None, notes)))


def per_point_confidence(confidence: float, points: int) -> float:
    """Bonferroni: each of ``points`` intervals at this level, so that the chance of any of them
    missing (a false verdict anywhere in the table, which fails the gate) is at most
    1 - confidence."""
    return 1.0 - (1.0 - confidence) / max(1, points)


def judge_all(histories: dict[Point, History], threshold: float, confidence: float,
              metric: str = "time") -> list[VerdictRow]:
    level = per_point_confidence(confidence, sum(1 for h in histories.values() if h.ratios))
    return [judge(h, threshold, level, metric)
            for h in sorted(histories.values(), key=lambda h: h.point)]


# -- the loop -----------------------------------------------------------------------------------
RoundListener = Callable[[int, list[VerdictRow], float, str], None]  # index, rows, s, how


def run_rounds(plan: Plan, listener: RoundListener | None = None) -> Outcome:
    """Rounds until every point is decided (checked after an even number of rounds, at least
    ``min_rounds``), ``max_rounds`` or the time budget (no round is started that would likely
    end beyond it)."""
    histories: dict[Point, History] = {}
    served = all(has_round_server(side) for side in plan.sides.values())
    measure_round = served_round if served else whole_sweeps_round
    start = time.monotonic()
    durations: list[float] = []
    rows: list[VerdictRow] = []
    reason = "round cap reached"
    for index in range(1, plan.max_rounds + 1):
        elapsed = time.monotonic() - start
        if durations and index > 2 and elapsed + max(durations[-2:]) > plan.max_time_s:
            reason = f"time budget ({plan.max_time_s:g} s) spent"
            break
        t0 = time.monotonic()
        records, detail = measure_round(plan, index)
        add_round(histories, records, plan.statistic, plan.clock)
        durations.append(time.monotonic() - t0)
        rows = judge_all(histories, plan.threshold, plan.confidence)
        if listener is not None:
            listener(index, rows, durations[-1], detail)
        if not histories:
            raise UsageError("neither side measured any point (the grid is empty?)")
        if index >= plan.min_rounds and index % 2 == 0 and \
                all(decided(row) for row in rows):
            reason = "every point decided"
            break
    return Outcome(rows, len(durations), time.monotonic() - start, reason, durations,
                   "round servers, point by point" if served else "one sweep per side per round")


def decided(row: VerdictRow) -> bool:
    """More rounds could not decide the row otherwise: every class but ambiguous."""
    return row.verdict != AMBIGUOUS


def judged(rows: Sequence[VerdictRow]) -> int:
    """How many rows have an interval (the points the table's confidence is shared among)."""
    return sum(1 for row in rows if row.ratio is not None)


__all__ = ["Plan", "History", "Outcome", "run_rounds", "judge", "judge_all", "add_round"]
