#!/usr/bin/env python3
"""Measure the power of ``run_bench.py ab``: how often it flags an injected slowdown of
hrr_torch, and how often it flags an identical tree against itself (docs/regression.md).

    python scripts/ab_power.py --out /tmp/ab-power --runs 10 --conditions same,15,10,5 \\
        --busy both --deadline 22:30

For each condition it makes copies of the committed tree (``git archive HEAD``): ``base``, a
second identical copy ``same``, and ``slowX`` where hrr_torch, after computing its real result,
runs a fixed pure-Python loop whose length is calibrated once (OUT/calibration.json: per T, how
many iterations cost as much CPU time as one real call, measured in turn with real calls, one
thread, in a fresh process) to cost X% of the real call (so it passes the correctness gate and does X% more CPU
work, as measured at calibration). Runs alternate between the conditions (and between
"with a busy core" and "without" when --busy both), so that the machine's load, which changes
over the session, falls on every condition alike. With a busy core, ``python -c "while True:
pass"`` runs beside the ab call for the whole call. One line of JSON per ab call goes to
OUT/power.jsonl; ``--summary`` prints the table from it.
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
GRID = ["--impl", "hrr_torch,sdpa_math", "--seq-len", "128,256", "--head-dim", "64",
        "--pass", "fwd", "--device", "cpu"]


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


def calibrate_in_ab(trees: Path, out: Path, busy: bool, seq_lens: list[int]) -> dict:
    """The loop length as ab measures it: a plain calibration (calibrate) underestimates what
    a call costs in ab's lockstep, where each call follows the other side's call on the same
    core and starts with caches it did not fill (the loop does not care; the real call does:
    calibrated in a plain process, "+15%" measured 1.11 to 1.12). So: a provisional +15% tree
    from the plain calibration, one ab call of 6 rounds against BASE in the same condition (not
    one of the counted calls; kept in OUT/calibration-runs/), and per T the loop iterations that
    cost one real call there = provisional iterations / (measured ratio - 1)."""
    mode = "busy" if busy else "quiet"
    plain = calibrate(trees, seq_lens, busy)
    provisional = trees / f"provisional15-{mode}"
    make_tree(provisional, 15, plain)
    run_out = out / "calibration-runs" / mode
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "PYTHONPATH": str(ROOT)}
        subprocess.run([sys.executable, str(ROOT / "run_bench.py"), "ab", str(trees / "base"),
                        str(provisional), "--impl", "hrr_torch", "--seq-len",
                        ",".join(map(str, seq_lens)), *GRID[4:], "--clock", "cpu",
                        "--rounds", "6", "--min-rounds", "6", "--max-time", "600",
                        "--out", str(run_out)], capture_output=True, text=True, env=env,
                       cwd=ROOT, check=True)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    with open(run_out / "ab.csv") as handle:
        ratios = {int(r["seq_len"]): float(r["ratio"]) for r in csv.DictReader(handle)}
    return {str(T): round(0.15 * float(plain[str(T)]) / (ratios[T] - 1.0))
            for T in seq_lens} | {"note": {"plain": plain, "measured_ratio_of_provisional_15":
                                           ratios}}


def make_tree(where: Path, slowdown_pct: int | None, calibration: dict | None = None) -> None:
    if where.exists():
        return
    where.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "HEAD"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive, check=True)
    if slowdown_pct:
        assert calibration is not None
        iterations = {int(t): round(slowdown_pct / 100.0 * float(n))
                      for t, n in calibration.items() if t != "note"}
        path = where / "implementations" / "hrr_torch.py"
        path.write_text(path.read_text() + INJECTED.format(iterations=iterations))


def one_run(trees: Path, condition: str, busy: bool, out: Path, index: int,
            extra: list[str]) -> dict:
    head = trees / ("same" if condition == "same"
                    else f"slow{condition}-{'busy' if busy else 'quiet'}")
    run_out = out / "runs" / f"{index:03d}-{condition}-{'busy' if busy else 'nobusy'}"
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    load_before = os.getloadavg()
    start = time.monotonic()
    try:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "PYTHONPATH": str(ROOT)}
        done = subprocess.run([sys.executable, str(ROOT / "run_bench.py"), "ab",
                               str(trees / "base"), str(head), *GRID, "--out", str(run_out),
                               *extra], capture_output=True, text=True, env=env, cwd=ROOT)
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
    return {"index": index, "condition": condition, "busy": busy, "exit": done.returncode,
            "ab_flags": extra,
            "wall_s": round(wall, 1), "load_before": load_before,
            "load_after": os.getloadavg(), "at": dt.datetime.now().isoformat(timespec="seconds"),
            "points": rows, "stderr_tail": done.stderr.strip().splitlines()[-1:]}


def summary(out: Path) -> None:
    runs = [json.loads(x) for x in (out / "power.jsonl").read_text().splitlines() if x.strip()]
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault((run["busy"], run["condition"]), []).append(run)
    print("| background | HEAD | calls | flagged (exit 1 at the time) | flagged by the final "
          "rule | hrr_torch ratio T=128 / T=256 (median over calls) | rounds (median) | "
          "wall s (max) | load avg 1 min (range) |")
    print("|---|---|---|---|---|---|---|---|---|")
    order = {"same": 0, "15": 1, "10": 2, "5": 3}
    for (busy, cond), items in sorted(groups.items(), key=lambda kv: (not kv[0][0],
                                                                     order.get(kv[0][1], 9))):
        flagged = sum(r["exit"] == 1 for r in items)
        bad = sum(r["exit"] not in (0, 1) for r in items)
        refl = sum(rejudge(call_rounds(out, r, "cpu", "median")) for r in items)
        ratios = {}
        rounds = []
        for r in items:
            for p in r["points"]:
                if p["impl"] == "hrr_torch" and p["ratio"]:
                    ratios.setdefault(p["seq_len"], []).append(float(p["ratio"]))
                if p["rounds"]:
                    rounds.append(int(p["rounds"]))
        med = lambda xs: statistics.median(xs) if xs else float("nan")  # noqa: E731
        loads = [x for r in items for x in (r["load_before"][0], r["load_after"][0])]
        label = "one busy core" if busy else "none added"
        head = "identical" if cond == "same" else f"+{cond}% hrr_torch"
        print(f"| {label} | {head} | {len(items)} | {flagged}/{len(items)}"
              f"{f' ({bad} failed)' if bad else ''} | {refl}/{len(items)} | "
              f"{med(ratios.get('128', [])):.3f} / {med(ratios.get('256', [])):.3f} | "
              f"{med(rounds)} | {max(r['wall_s'] for r in items):.0f} | "
              f"{min(loads):.1f}-{max(loads):.1f} |")


def round_noise(out: Path) -> None:
    """Per-round log ratios HEAD/BASE re-read from every call's round directories, for each clock
    and statistic: their spread in the identical-tree calls and their mean in the slowed ones."""
    import math
    import statistics

    sys.path.insert(0, str(ROOT))
    from harness.verdicts.ab.rounds import read_raw_records
    from harness.verdicts.ab.paired_stats import side_value

    runs = [json.loads(x) for x in (out / "power.jsonl").read_text().splitlines() if x.strip()]
    logs: dict[tuple, list[float]] = {}
    for run in runs:
        rounds = out / "runs" / f"{run['index']:03d}-{run['condition']}-" \
                                f"{'busy' if run['busy'] else 'nobusy'}" / "rounds"
        n = 1
        while (rounds / f"base-{n:02d}").exists() and (rounds / f"head-{n:02d}").exists():
            sides = {s: {(r["impl"], r["seq_len"]): r for r in
                         read_raw_records(rounds / f"{s}-{n:02d}") if r.get("status") == "ok"}
                     for s in ("base", "head")}
            for key in sides["base"].keys() & sides["head"].keys():
                b, h = sides["base"][key], sides["head"][key]
                for clock in ("wall", "cpu"):
                    field = "time_samples_s"
                    bs = b[field] if clock == "wall" else b["extra"]["cpu_time_samples_s"]
                    hs = h[field] if clock == "wall" else h["extra"]["cpu_time_samples_s"]
                    for stat in ("min", "p25", "median"):
                        r = side_value(hs, stat) / side_value(bs, stat)
                        logs.setdefault((run["condition"], run["busy"], key, clock, stat),
                                        []).append(math.log(r))
            n += 1
    print("| HEAD | background | point | clock | statistic | rounds | mean ratio | "
          "sd of log ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for (cond, busy, key, clock, stat), xs in sorted(logs.items(), key=str):
        sd = statistics.stdev(xs) if len(xs) > 1 else float("nan")
        print(f"| {cond} | {'busy core' if busy else 'none'} | {key[0]} T={key[1]} | {clock} | "
              f"{stat} | {len(xs)} | {math.exp(statistics.fmean(xs)):.3f} | {sd:.3f} |")


def call_rounds(out: Path, run: dict, clock: str, statistic: str) -> list[dict]:
    """The rounds of one ab call, each {(impl, seq_len): HEAD/BASE ratio}, re-read from its
    round directories."""
    sys.path.insert(0, str(ROOT))
    from harness.verdicts.ab.rounds import pair_samples, read_raw_records, turn_ratio
    from harness.verdicts.ab.paired_stats import side_value

    rounds = out / "runs" / f"{run['index']:03d}-{run['condition']}-" \
                            f"{'busy' if run['busy'] else 'nobusy'}" / "rounds"
    found, n = [], 1
    while (rounds / f"base-{n:02d}").exists() and (rounds / f"head-{n:02d}").exists():
        sides = {s: {(r["impl"], r["seq_len"]): r for r in
                     read_raw_records(rounds / f"{s}-{n:02d}") if r.get("status") == "ok"}
                 for s in ("base", "head")}
        ratios = {}
        for key in sides["base"].keys() & sides["head"].keys():
            rb, rh = sides["base"][key], sides["head"][key]
            b, h, _ = pair_samples(rb, rh, clock)
            turns = turn_ratio(rb, rh, b, h)
            ratios[key] = turns if turns is not None else \
                side_value(h, statistic) / side_value(b, statistic)
        if ratios:
            found.append(ratios)
        n += 1
    return found


def rejudge(rounds: list[dict], threshold: float = 0.10) -> bool:
    """Whether ab's final rule (t interval, Bonferroni over the points) flags these rounds."""
    from harness.verdicts.ab.rounds import per_point_confidence
    from harness.verdicts.ab.paired_stats import paired_decision, paired_estimate
    from harness.verdicts.words import SLOWER

    if not rounds:
        return False
    keys = sorted(set.intersection(*(set(r) for r in rounds)))
    level = per_point_confidence(0.95, len(keys))
    return any(paired_decision(paired_estimate([r[k] for r in rounds], level), threshold).verdict
               == SLOWER for k in keys)


def measured_rounds(out: Path, clock: str, statistic: str) -> dict[tuple, list[dict]]:
    """(condition, busy) -> every round measured under it, in any call."""
    runs = [json.loads(x) for x in (out / "power.jsonl").read_text().splitlines() if x.strip()]
    found: dict[tuple, list[dict]] = {}
    for run in runs:
        found.setdefault((run["condition"], run["busy"]), []).extend(
            call_rounds(out, run, clock, statistic))
    return found


def simulate(out: Path, rounds: int, clock: str, statistic: str, threshold: float,
             trials: int = 2000) -> None:
    """Power by subsampling measured rounds: each simulated call draws ``rounds`` distinct whole
    rounds (all points of a round together, without replacement: a repeated round would fake
    agreement) from the rounds measured under one condition in any call, and is judged by ab's
    own rule (t interval, Bonferroni over the points). Needs at least 2 x ROUNDS measured rounds
    of a condition; says so otherwise."""
    import random

    from harness.verdicts.ab.rounds import per_point_confidence
    from harness.verdicts.ab.paired_stats import paired_decision, paired_estimate
    from harness.verdicts.words import SLOWER

    rng = random.Random(0)
    print(f"| HEAD | background | measured rounds | simulated calls of {rounds} rounds "
          f"flagged | {clock} clock, {statistic} |")
    print("|---|---|---|---|---|")
    for (cond, busy), pool in sorted(measured_rounds(out, clock, statistic).items(), key=str):
        if len(pool) < 2 * rounds:
            print(f"| {cond} | {'busy core' if busy else 'none'} | {len(pool)} | too few "
                  f"measured rounds to subsample {rounds} |  |")
            continue
        keys = sorted(set.intersection(*(set(r) for r in pool)))
        level = per_point_confidence(0.95, len(keys))
        flagged = 0
        for _ in range(trials):
            draw = rng.sample(pool, rounds)
            flagged += any(paired_decision(paired_estimate([r[k] for r in draw], level),
                                           threshold).verdict == SLOWER for k in keys)
        print(f"| {'identical' if cond == 'same' else '+' + cond + '% hrr_torch'} | "
              f"{'busy core' if busy else 'none'} | {len(pool)} | "
              f"{flagged / trials:.0%} |  |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--runs", type=int, default=10, help="runs per condition")
    parser.add_argument("--conditions", default="same,15,10,5")
    parser.add_argument("--busy", choices=("yes", "no", "both"), default="yes")
    parser.add_argument("--deadline", help="HH:MM (UTC): start no ab call after this")
    parser.add_argument("--summary", action="store_true", help="print the table and stop")
    parser.add_argument("--round-noise", action="store_true",
                        help="print the per-round ratios' spread by clock and statistic, stop")
    parser.add_argument("--simulate", type=int, metavar="ROUNDS",
                        help="print the power of calls of ROUNDS rounds estimated by resampling "
                             "the measured rounds, and stop")
    parser.add_argument("--sim-clock", default="cpu")
    parser.add_argument("--sim-statistic", default="median")
    args, extra = parser.parse_known_args()
    if args.simulate:
        simulate(args.out, args.simulate, args.sim_clock, args.sim_statistic, 0.10)
        return 0
    if args.summary:
        summary(args.out)
        return 0
    if args.round_noise:
        round_noise(args.out)
        return 0
    conditions = args.conditions.split(",")
    trees = args.out / "trees"
    make_tree(trees / "base", None)
    make_tree(trees / "same", None)
    busy_modes = {"yes": [True], "no": [False], "both": [True, False]}[args.busy]
    for busy in busy_modes:
        mode = "busy" if busy else "quiet"
        calibration_path = args.out / f"calibration-{mode}.json"
        if not calibration_path.exists():
            calibration_path.write_text(json.dumps(
                calibrate_in_ab(trees, args.out, busy, [128, 256])) + "\n")
        calibration = json.loads(calibration_path.read_text())
        print(f"calibration ({mode}): {calibration}", flush=True)
        for c in conditions:
            if c != "same":
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
    for _ in range(args.runs):
        for busy in busy_modes:
            for condition in conditions:
                if deadline and dt.datetime.now(dt.timezone.utc) >= deadline:
                    print("deadline reached", flush=True)
                    return 0
                index += 1
                result = one_run(trees, condition, busy, args.out, index, extra)
                with open(log, "a") as handle:
                    handle.write(json.dumps(result) + "\n")
                print(json.dumps({k: result[k] for k in ("index", "condition", "busy", "exit",
                                                        "wall_s", "load_before")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
