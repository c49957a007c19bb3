#!/usr/bin/env python3
"""Measure the power of ``run_bench.py ab``: how often it flags an injected slowdown of
hrr_torch, and how often it flags an identical tree against itself (docs/regression.md, "Power
of ab").

    python scripts/ab_power.py --out /tmp/ab-power \
        --plan "busy:same,10,5;quiet:same,10;instructions:same,3" \
        --runs busy=10,quiet=5,instructions=5 --deadline 23:15
    python scripts/ab_power.py --out /tmp/ab-power --summary        # the table
    python scripts/ab_power.py --out /tmp/ab-power --round-noise    # per-round spread per call

Modes: ``busy`` (``python -c "while True: pass"`` beside the whole call), ``quiet`` (nothing
added), ``instructions`` (``--metric instructions``). Every call is ``ab`` with its defaults and
only the points (GRID), the threshold (5% of time, 2% of instructions) and --out given, run
from a snapshot of the committed tree. The trees are copies of the committed tree (``git
archive HEAD``): ``base``, a second identical copy ``same``, and ``slowX-MODE`` where
hrr_torch, after computing its real result, runs a fixed pure-Python loop calibrated per mode
to cost X% of a real call as ``ab`` measures it (calibrate_in_ab: so it passes the correctness
gate and does X% more work). Calls interleave over conditions and modes, so that the machine's
drift falls on all alike. One line of JSON per call goes to OUT/power.jsonl.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import subprocess
import sys
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# appended to implementations/hrr_torch.py of a slowed tree: the registered hrr_torch computes
# its real result, then runs a fixed number of iterations of a pure-Python loop, chosen per
# sequence length by calibrate() so that they cost PCT% of the real call's CPU time. A fixed
# amount of work, no clock read while it runs: the extra time is what the work costs.
INJECTED = """

# --- injected slowdown (scripts/ab_power.py; power measurement only) ---
def _with_injected_work(impl, iterations):
    import dataclasses
    import functools

    real = impl.fn

    @functools.wraps(real)
    def slowed(q, k, v, **kwargs):
        out = real(q, k, v, **kwargs)
        x = 0
        for i in range(iterations.get(int(q.shape[-2]), 0)):
            x += i
        return out

    return dataclasses.replace(impl, fn=slowed, _probe_cache={{}})


from harness.contract.registry import REGISTRY  # noqa: E402

REGISTRY.add(_with_injected_work(REGISTRY.get("hrr_torch"), {iterations!r}), replace=True)
"""
# the points (every other flag at ab's default: B=1, H=8, D=64, float32, on the CPU of a
# machine without a GPU; one thread per worker, CPU clock, pinned: ab's own defaults)
GRID = ["--impl", "hrr_torch,sdpa_math", "--seq-len", "128,256", "--pass", "fwd"]
# how each kind of call is made: a spinning core beside it or not, the metric and threshold
# flags (time: 5%, so that +10% lies wholly beyond it; instructions: 2%, for +3%)
MODES = {"busy": (True, ["--threshold", "5%"]), "quiet": (False, ["--threshold", "5%"]),
         "instructions": (False, ["--metric", "instructions", "--threshold", "2%"])}


def ab_argv(trees: Path, base: Path, head: Path, out: Path, *flags: str) -> list[str]:
    """``run_bench.py ab`` run from the BASE tree's harness (a snapshot of the commit under
    test, so that the working tree can change while calls run)."""
    return [sys.executable, str(trees / "base" / "run_bench.py"), "ab", str(base), str(head),
            *flags, "--out", str(out)]


def ab_env(trees: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}   # ab's defaults decide
    env["PYTHONPATH"] = str(trees / "base")
    return env


def calibrate(trees: Path, seq_lens: list[int], busy: bool, samples: int = 400) -> dict:
    """Per T, how many iterations of the injected loop cost as much CPU time as one hrr_torch
    call (B=1 H=8 D=64 float32 forward, one thread): the median over calls of a real call's
    thread time over the loop's time per iteration measured right after it (in turn, so that
    both see the same machine state); in a fresh process from the identical tree, with a core
    kept busy beside it when the calls will have one (a busy core slows the real call and the
    loop by different factors: calibrated on a quiet machine, "+15%" measured 1.11 beside a
    busy core)."""
    code = f"""
import json, statistics, sys, time, torch
torch.set_num_threads(1)
sys.path.insert(0, {str(trees / 'base')!r})
from harness.contract.registry import REGISTRY
fn = REGISTRY.get("hrr_torch").fn
out = {{}}
n = 2000
def loop():
    x = 0
    for i in range(n):
        x += i
for T in {seq_lens!r}:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 8, T, 64, generator=g) for _ in range(3))
    for _ in range(20):
        fn(q, k, v)
    # a real call and a chunk of the loop in turn, so that both see the same machine state
    iterations = []
    for _ in range({samples}):
        t0 = time.thread_time(); fn(q, k, v); t1 = time.thread_time(); loop()
        t2 = time.thread_time()
        iterations.append((t1 - t0) / ((t2 - t1) / n))
    out[T] = statistics.median(iterations)     # loop iterations that cost one real call
print(json.dumps(out))
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=env, cwd=trees / "base", check=True)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    return json.loads(done.stdout.strip().splitlines()[-1])


def calibrate_in_ab(trees: Path, out: Path, mode: str, seq_lens: list[int]) -> dict:
    """The loop length as ab measures it: a plain calibration (calibrate) underestimates what
    a call costs in ab's lockstep, where each call follows the other side's call on the same
    core and starts with caches it did not fill (the loop does not care; the real call does:
    calibrated in a plain process, "+15%" measured 1.11 to 1.12). So: a provisional +15% tree
    from the plain calibration, one ab call against BASE in the same mode (6 rounds of time, or
    the instruction counts; not one of the counted calls; kept in OUT/calibration-runs/), and
    per T the loop iterations that cost one real call there = provisional iterations /
    (measured ratio - 1)."""
    busy, metric = MODES[mode]
    plain = calibrate(trees, seq_lens, busy)
    provisional = trees / f"provisional15-{mode}"
    make_tree(provisional, 15, plain)
    run_out = out / "calibration-runs" / mode
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        rounds = [] if "instructions" in metric else ["--rounds", "6", "--min-rounds", "6",
                                                      "--max-time", "600"]
        subprocess.run(ab_argv(trees, trees / "base", provisional, run_out, "--impl",
                               "hrr_torch", "--seq-len", ",".join(map(str, seq_lens)), "--pass",
                               "fwd", *metric, *rounds),
                       capture_output=True, text=True, env=ab_env(trees), cwd=ROOT)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    if not (run_out / "ab.csv").exists():     # exit 1 (flagged) is expected; 2 is not
        raise SystemExit(f"calibration call failed; see {run_out}")
    with open(run_out / "ab.csv") as handle:
        ratios = {int(r["seq_len"]): float(r["ratio"]) for r in csv.DictReader(handle)}
    return {str(T): round(0.15 * float(plain[str(T)]) / (ratios[T] - 1.0))
            for T in seq_lens} | {"note": {"plain": plain, "measured_ratio_of_provisional_15":
                                           ratios}}


def tree_commit(trees: Path) -> str:
    """The commit every tree of OUT is made from: HEAD when the first tree was made (kept in
    OUT/trees/COMMIT, so that trees made later, e.g. for another mode, match BASE)."""
    marker = trees / "COMMIT"
    if not marker.exists():
        trees.mkdir(parents=True, exist_ok=True)
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()
        marker.write_text(head + "\n")
    return marker.read_text().strip()


def make_tree(where: Path, slowdown_pct: int | None, calibration: dict | None = None) -> None:
    if where.exists():
        return
    commit = tree_commit(where.parent)
    where.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
    if slowdown_pct:
        assert calibration is not None
        iterations = {int(t): round(slowdown_pct / 100.0 * float(n))
                      for t, n in calibration.items() if t != "note"}
        path = where / "implementations" / "hrr_torch.py"
        path.write_text(path.read_text() + INJECTED.format(iterations=iterations))


def run_dir(out: Path, run: dict) -> Path:
    return out / "runs" / f"{run['index']:03d}-{run['condition']}-{run_mode(run)}"


def run_mode(run: dict) -> str:
    """A logged call's mode (calls logged before modes: busy true/false)."""
    return run.get("mode") or ("busy" if run["busy"] else "nobusy")


def one_run(trees: Path, condition: str, mode: str, out: Path, index: int,
            extra: list[str]) -> dict:
    busy, metric = MODES[mode]
    head = trees / ("same" if condition == "same" else f"slow{condition}-{mode}")
    run_out = run_dir(out, {"index": index, "condition": condition, "mode": mode})
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    load_before = os.getloadavg()
    start = time.monotonic()
    try:
        done = subprocess.run(ab_argv(trees, trees / "base", head, run_out, *GRID, *metric,
                                      *extra), capture_output=True, text=True,
                              env=ab_env(trees), cwd=ROOT)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    wall = time.monotonic() - start
    rows = []
    csv_path = run_out / "ab.csv"
    if csv_path.exists():
        with open(csv_path) as handle:
            rows = [{k: r[k] for k in ("impl", "seq_len", "ratio", "lo", "hi", "rounds",
                                       "verdict")} for r in csv.DictReader(handle)]
    return {"index": index, "condition": condition, "busy": busy, "mode": mode,
            "exit": done.returncode, "ab_flags": [*GRID, *metric, *extra],
            "wall_s": round(wall, 1), "load_before": load_before,
            "load_after": os.getloadavg(), "at": dt.datetime.now().isoformat(timespec="seconds"),
            "points": rows, "stderr_tail": done.stderr.strip().splitlines()[-1:]}


MODE_LABEL = {"busy": "one busy core", "nobusy": "none added", "quiet": "none added",
              "instructions": "instructions"}
ORDER = {"busy": 0, "nobusy": 1, "quiet": 1, "instructions": 2}


def logged_runs(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "power.jsonl").read_text().splitlines() if x.strip()]


def summary(out: Path) -> None:
    """The power table: per mode and HEAD, how many calls exited 1 (flagged), the measured
    ratios of hrr_torch, rounds and wall time."""
    groups: dict[tuple, list[dict]] = {}
    for run in logged_runs(out):
        groups.setdefault((run_mode(run), run["condition"]), []).append(run)
    print("| condition | HEAD | calls | flagged (exit 1) | hrr_torch ratio T=128 / T=256 "
          "(median over calls; range) | rounds (median) | wall s (median, max) | "
          "load avg 1 min (range) |")
    print("|---|---|---|---|---|---|---|---|")
    for (mode, cond), items in sorted(groups.items(), key=lambda kv: (
            ORDER.get(kv[0][0], 9), kv[0][1] != "same", -float(kv[0][1])
            if kv[0][1] != "same" else 0)):
        flagged = sum(r["exit"] == 1 for r in items)
        bad = sum(r["exit"] not in (0, 1) for r in items)
        ratios: dict[str, list[float]] = {}
        rounds = []
        for r in items:
            for p in r["points"]:
                if p["impl"] == "hrr_torch" and p["ratio"]:
                    ratios.setdefault(p["seq_len"], []).append(float(p["ratio"]))
                if p["rounds"]:
                    rounds.append(int(p["rounds"]))

        def spread(xs: list[float]) -> str:
            return (f"{statistics.median(xs):.3f} ({min(xs):.3f}-{max(xs):.3f})" if xs
                    else "-")
        loads = [x for r in items for x in (r["load_before"][0], r["load_after"][0])]
        walls = [r["wall_s"] for r in items]
        head = "unchanged" if cond == "same" else f"+{cond}% hrr_torch"
        print(f"| {MODE_LABEL.get(mode, mode)} | {head} | {len(items)} | {flagged}/{len(items)}"
              f"{f' ({bad} failed)' if bad else ''} | {spread(ratios.get('128', []))} / "
              f"{spread(ratios.get('256', []))} | "
              f"{statistics.median(rounds) if rounds else '-'} | "
              f"{statistics.median(walls):.0f}, {max(walls):.0f} | "
              f"{min(loads):.1f}-{max(loads):.1f} |")


def round_logs(out: Path, run: dict) -> list[dict]:
    """Per round of one call: {(impl, seq_len): HEAD/BASE ratio as ab judged it} (the median
    over turns of lockstep pairs, CPU clock where both sides recorded it), re-read from its
    round directories."""
    sys.path.insert(0, str(ROOT))
    from harness.verdicts.ab.rounds import pair_samples, read_raw_records, turn_ratio
    from harness.verdicts.ab.paired_stats import side_value

    rounds = run_dir(out, run) / "rounds"
    found, n = [], 1
    while (rounds / f"base-{n:02d}").exists() and (rounds / f"head-{n:02d}").exists():
        sides = {s: {(r["impl"], r["seq_len"]): r for r in
                     read_raw_records(rounds / f"{s}-{n:02d}") if r.get("status") == "ok"}
                 for s in ("base", "head")}
        ratios = {}
        for key in sides["base"].keys() & sides["head"].keys():
            rb, rh = sides["base"][key], sides["head"][key]
            b, h, _ = pair_samples(rb, rh, "cpu")
            turns = turn_ratio(rb, rh, b, h)
            ratios[key] = turns if turns is not None else \
                side_value(h, "median") / side_value(b, "median")
        if ratios:
            found.append(ratios)
        n += 1
    return found


def round_noise(out: Path) -> None:
    """Per call and point, the sd over rounds of the log ratio HEAD/BASE (as ab judged each
    round): the figure a call's interval is made of. Median and max over the calls of a mode
    and HEAD."""
    import math

    table: dict[tuple, list[float]] = {}
    for run in logged_runs(out):
        rounds = round_logs(out, run)
        for key in sorted(set().union(*rounds)) if rounds else []:
            logs = [math.log(r[key]) for r in rounds if key in r]
            if len(logs) > 1:
                table.setdefault((run_mode(run), run["condition"], key), []).append(
                    statistics.stdev(logs))
    print("| condition | HEAD | point | calls | sd of the per-round log ratio (median; max) |")
    print("|---|---|---|---|---|")
    for (mode, cond, key), sds in sorted(table.items(), key=str):
        print(f"| {MODE_LABEL.get(mode, mode)} | {cond} | {key[0]} T={key[1]} | {len(sds)} | "
              f"{statistics.median(sds):.4f}; {max(sds):.4f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--plan", default="busy:same,10,5;quiet:same,10;instructions:same,3",
                        help="MODE:CONDITIONS;... (modes: busy, quiet, instructions; "
                             "conditions: same or a slowdown in percent)")
    parser.add_argument("--runs", default="busy=10,quiet=5,instructions=5",
                        help="calls per condition of each mode, MODE=N,... (the calls of all "
                             "conditions and modes interleave, so that the machine's drift falls "
                             "on all alike)")
    parser.add_argument("--deadline", help="HH:MM (UTC): start no ab call after this")
    parser.add_argument("--summary", action="store_true", help="print the table and stop")
    parser.add_argument("--round-noise", action="store_true",
                        help="print the per-round ratios' spread per call, stop")
    args, extra = parser.parse_known_args()
    if args.summary:
        summary(args.out)
        return 0
    if args.round_noise:
        round_noise(args.out)
        return 0
    plan = []
    for part in args.plan.split(";"):
        mode, _, conditions = part.partition(":")
        if mode not in MODES or not conditions:
            parser.error(f"--plan: {part!r} is not MODE:CONDITIONS with a mode of "
                         f"{', '.join(MODES)}")
        plan += [(mode, c) for c in conditions.split(",")]
    trees = args.out / "trees"
    make_tree(trees / "base", None)
    make_tree(trees / "same", None)
    for mode in dict.fromkeys(m for m, c in plan if c != "same"):
        calibration_path = args.out / f"calibration-{mode}.json"
        if not calibration_path.exists():
            calibration_path.write_text(json.dumps(
                calibrate_in_ab(trees, args.out, mode, [128, 256])) + "\n")
        calibration = json.loads(calibration_path.read_text())
        print(f"calibration ({mode}): {calibration}", flush=True)
        for m, c in plan:
            if m == mode and c != "same":
                make_tree(trees / f"slow{c}-{mode}", int(c), calibration)
    deadline = None
    if args.deadline:
        hh, mm = (int(x) for x in args.deadline.split(":"))
        now = dt.datetime.now(dt.timezone.utc)
        deadline = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
    log = args.out / "power.jsonl"
    index = max((json.loads(x)["index"] for x in open(log) if x.strip()), default=0) \
        if log.exists() else 0
    index = max([index, *(int(p.name[:3]) for p in (args.out / "runs").glob("[0-9][0-9][0-9]-*"))]
                if (args.out / "runs").exists() else [index])
    runs = {}
    for part in args.runs.split(","):
        mode, _, count = part.partition("=")
        if mode not in MODES or not count.isdigit():
            parser.error(f"--runs: {part!r} is not MODE=N")
        runs[mode] = int(count)
    for turn in range(max(runs.values(), default=0)):
        for mode, condition in plan:
            if turn >= runs.get(mode, 0):
                continue
            if deadline and dt.datetime.now(dt.timezone.utc) >= deadline:
                print("deadline reached", flush=True)
                return 0
            index += 1
            result = one_run(trees, condition, mode, args.out, index, extra)
            with open(log, "a") as handle:
                handle.write(json.dumps(result) + "\n")
            print(json.dumps({k: result[k] for k in ("index", "condition", "mode", "exit",
                                                    "wall_s", "load_before")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
