"""``run_bench.py ab BASE HEAD [sweep flags]``: interleaved A/B of two revisions in one job.

Exit status, as ``compare``'s (harness.verdicts.words): 0 no row fails, 1 a point is ``slower``,
``newly failing`` or of a class ``--fail-on`` added, 2 bad input (unknown revision, not a
checkout, bad flag, a side's sweep refusing the grid): one line on stderr. The rules are in
``harness/verdicts/ab/``; docs/regression.md explains them. In the outputs BASE is the baseline
side and HEAD the current one (harness.verdicts.words), the same words as ``compare``'s.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import os
import shutil
import signal
import sys
from pathlib import Path

from harness.contract.axes import axes
from harness.verdicts import writers
from harness.verdicts.ab.rounds import Plan, judged, per_point_confidence, run_rounds
from harness.verdicts.ab.defaults import Measuring, resolve
from harness.verdicts.ab.servers import can_pin
from harness.verdicts.ab.sides import checked_out
from harness.verdicts.row import VerdictRow
from harness.verdicts.words import (
    AMBIGUOUS,
    FAIL_ON_HELP,
    exit_status,
    parse_fail_on,
    rule_line,
    with_failures,
)
from harness.verdicts.compare import parse_threshold
from harness.metrics.stats import parse_statistic
from harness.console import make_console
from harness.errors import UsageError

# settings flags passed through to each side's sweep: (dest, flag)
SETTING_FLAGS = (("preset", "--preset"), ("config", "--config"), ("timeout", "--timeout"),
                 ("max_memory", "--max-memory"), ("min_time", "--min-time"),
                 ("max_repeats", "--max-repeats"), ("warmup", "--warmup"), ("seed", "--seed"))


def sweep_flags() -> tuple[tuple[str, str], ...]:
    """The sweep flags passed through to each side's sweep, (dest, flag): --impl, every axis
    of the table (harness.contract.axes) and the settings."""
    return (("impl", "--impl"), *((a.dest, a.flag) for a in axes()), *SETTING_FLAGS)
# more samples per round than a sweep's default: a round costs mostly process start-up
DEFAULT_MIN_TIME, DEFAULT_MAX_REPEATS = "0.5", "300"
# measured here (docs/regression.md, "Power"): on the wall clock the minimum of the samples
# varied least between rounds of an identical tree, on the CPU clock the median
DEFAULT_STATISTIC = {"wall": "min", "cpu": "median"}
# an instruction count is deterministic to 0.05% (harness.verdicts.ab.callgrind): a 3% change
# lies wholly beyond 2%
DEFAULT_THRESHOLD = {"time": "10%", "instructions": "2%"}
TITLE = "attnbench ab"
# --impl-module names modules of the sides (imported by each side's sweep, from its own tree),
# not of this process
LOADS_IMPL_MODULES = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("base", metavar="BASE",
                        help="a git revision of the repository here (checked out into a "
                             "temporary worktree) or the path of another checkout")
    parser.add_argument("head", metavar="HEAD", help="the same for the side under test "
                                                     "(. is this working tree as it is)")
    gate = parser.add_argument_group("gate")
    gate.add_argument("--threshold", default=None,
                      help="smallest slowdown that counts, e.g. 10%% or 0.1 (default 10%% of "
                           "time, 2%% of instructions)")
    gate.add_argument("--rounds", type=int, default=16, metavar="N",
                      help="most rounds (default 16); rounds stop earlier once every point is "
                           "decided")
    gate.add_argument("--min-rounds", type=int, default=4, metavar="N",
                      help="fewest rounds before stopping (default 4)")
    gate.add_argument("--max-time", type=float, default=240.0, metavar="SECONDS",
                      help="start no round likely to end after this (default 240)")
    gate.add_argument("--confidence", type=float, default=0.95,
                      help="level for the table as a whole (default 0.95): each of N points "
                           "gets a 1 - 0.05/N interval, so an identical tree fails at most 5%% "
                           "of the time however many points")
    gate.add_argument("--statistic", default=None,
                      help="each side's value in a round: min, p25, median, mean, pNN (default: "
                           "min on the wall clock, the least stretched sample; median on the CPU "
                           "clock, which descheduling does not stretch)")
    gate.add_argument("--clock", choices=("wall", "cpu"), default=None,
                      help="cpu (default on a CPU grid): the worker's CPU time per sample, which "
                           "other processes taking the CPU do not stretch (a side too old to "
                           "record it is judged on wall time, noted); wall (default on a CUDA "
                           "grid): elapsed time")
    gate.add_argument("--threads", type=int, default=None, metavar="N",
                      help="threads per worker, both sides (OMP_NUM_THREADS, MKL_NUM_THREADS; "
                           "default on a CPU grid: 1, or OMP_NUM_THREADS where set)")
    gate.add_argument("--pin", choices=("on", "off"), default=None,
                      help="on (default for one-thread CPU workers): both workers of a point "
                           "pinned to one CPU, a different one each round")
    gate.add_argument("--metric", choices=("time", "instructions"), default="time",
                      help="time (default), or instructions counted by valgrind's callgrind "
                           "(CPU only, one thread)")
    gate.add_argument("--fail-on", metavar="CLASSES", help=FAIL_ON_HELP)
    gate.add_argument("--same-harness", action="store_true",
                      help="measure BASE's implementations with HEAD's harness (for a change "
                           "of the measurement itself; only implementations/ then differs)")
    gate.add_argument("--out", help="directory for ab.md, ab.csv and both sides' run "
                                    "directories (default results/ab-<time>)")
    sweep = parser.add_argument_group("sweep flags (passed to each side's sweep; see sweep -h)")
    for dest, flag in sweep_flags():
        sweep.add_argument(flag, dest=dest, default=None, help=argparse.SUPPRESS)


def sweep_arguments(args: argparse.Namespace) -> tuple[str, ...]:
    given: list[str] = []
    for dest, flag in sweep_flags():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if dest == "config":
            path = Path(value)
            if not path.is_file():
                raise UsageError(f"--config {value}: no such file")
            value = str(path.resolve())
        given += [flag, str(value)]
    if args.min_time is None:
        given += ["--min-time", DEFAULT_MIN_TIME]
    if args.max_repeats is None:
        given += ["--max-repeats", DEFAULT_MAX_REPEATS]
    return tuple(given)


def validate(args: argparse.Namespace) -> tuple[float, str]:
    threshold = parse_threshold(args.threshold or DEFAULT_THRESHOLD[args.metric])
    parse_fail_on(args.fail_on)
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads: at least 1, got {args.threads}")
    statistic, _ = parse_statistic(args.statistic or DEFAULT_STATISTIC[args.clock or "cpu"])
    if args.rounds < 2 or args.min_rounds < 2:
        raise UsageError("--rounds and --min-rounds: at least 2 (one round per order, AB and BA)")
    if args.min_rounds > args.rounds:
        raise UsageError(f"--min-rounds {args.min_rounds} is more than --rounds {args.rounds}")
    if not (math.isfinite(args.max_time) and args.max_time > 0):
        raise UsageError(f"--max-time: must be a positive number of seconds, got {args.max_time}")
    if not 0.0 < args.confidence < 1.0:
        raise UsageError(f"--confidence: must lie between 0 and 1, got {args.confidence}")
    return threshold, statistic


def output_dir(args: argparse.Namespace) -> Path:
    if args.out:
        out = Path(args.out)
    else:
        out = Path("results") / f"ab-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    if out.exists() and unfinished(out):
        # an earlier ab that stopped before its table (a side refused the grid, Ctrl-C): its
        # logs told what went wrong; the corrected call takes the folder over
        shutil.rmtree(out)
        print(f"ab: {out} held an unfinished ab call (no ab.md); replaced", file=sys.stderr)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--out {out}: already exists and is not empty; choose another")
    return out.resolve()


def unfinished(out: Path) -> bool:
    """Whether ``out`` holds only what an ab call that ended before writing its table leaves
    (rounds/, base/, head/; no ab.md)."""
    if not out.is_dir() or (out / "ab.md").exists():
        return False
    names = {p.name for p in out.iterdir()}
    return bool(names) and "rounds" in names and names <= {"rounds", "base", "head"}


def load_text() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt   # so the running sweep is killed and the worktrees are removed


def cpu_grid(args: argparse.Namespace) -> bool:
    """Whether every point of the grid is on the CPU: --device, or where none is given the
    sweep's own default (CUDA where a GPU is visible)."""
    if args.device is not None:
        from harness.contract.parsers import parse_devices

        return all(d == "cpu" for d in parse_devices(args.device))
    from harness.contract.frameworks import best_device

    return best_device() == "cpu"


def run(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    if args.metric == "instructions":      # one thread, no clock: callgrind.py
        measuring = Measuring(clock=args.clock or "cpu", threads=1, pin=False)
    else:
        measuring = resolve(cpu_grid=cpu_grid(args), clock=args.clock, threads=args.threads,
                            pin=args.pin)
    args.clock = measuring.clock
    threshold, statistic = validate(args)
    sweep_args = sweep_arguments(args)
    out = output_dir(args)
    impl_modules = tuple(getattr(args, "impl_module", []) or [])
    console = make_console()
    if args.metric == "instructions":
        from harness.verdicts.ab.callgrind import require_valgrind

        require_valgrind(args.device)
    for line in measuring.warnings:
        console.print(f"[yellow]warning:[/] {line}", highlight=False)
    load_start = load_text()
    with checked_out({"base": args.base, "head": args.head}, Path.cwd(),
                     same_harness=args.same_harness) as sides:
        out.mkdir(parents=True, exist_ok=True)
        console.print(f"[bold]ab[/] baseline {sides['base'].describe()} vs current "
                      f"{sides['head'].describe()} -> {out}")
        pin = measuring.pin and all(can_pin(side) for side in sides.values())
        pin_note = ("both workers of a point pinned to one CPU" if pin else
                    "not pinned: a side's tree predates pinning" if measuring.pin else
                    "not pinned")
        if measuring.told:
            console.print("measuring with " + ", ".join(measuring.told), highlight=False)
        plan = Plan(sides=sides, sweep_args=sweep_args, impl_modules=impl_modules, out=out,
                    threshold=threshold, confidence=args.confidence, statistic=statistic,
                    min_rounds=args.min_rounds, max_rounds=args.rounds,
                    max_time_s=args.max_time, clock=args.clock, threads=measuring.threads,
                    pin=pin)
        if args.metric == "instructions":
            from harness.verdicts.ab.callgrind import run_instructions

            outcome = run_instructions(plan, grid_points(args, impl_modules,
                                                         sides["head"].root),
                                       seed=int(args.seed or 0))
            unit = "instructions"
        else:
            outcome = run_rounds(plan, listener=lambda i, rows, s, how: console.print(
                f"round {i} ({s:.0f} s: {how}): {progress_text(rows)}"))
            unit = "time"
        header = [f"baseline: BASE {sides['base'].describe()}",
                  f"current:  HEAD {sides['head'].describe()}",
                  f"metric: {unit}" + (f" ({args.clock} clock; {statistic} of each side's "
                                       f"samples per round; threads per worker: "
                                       f"{measuring.threads or 'as the environment has it'}; "
                                       f"{pin_note})" if unit == "time"
                                       else " (callgrind, one thread)"),
                  f"rounds: {outcome.rounds} ({outcome.stop_reason}), "
                  f"{outcome.elapsed_s:.0f} s; ABBA order"
                  + (f"; {outcome.mode}" if outcome.mode else ""),
                  f"ratio: geometric mean over rounds of current/baseline in the same round (a "
                  f"round timed in lockstep: the median over turns of the current side's call / "
                  f"the baseline's call next to it); "
                  f"interval: t interval, {args.confidence:.0%} for the table as a whole "
                  f"({per_point_confidence(args.confidence, judged(outcome.rows)):.2%} "
                  f"per point); noise: each side's t interval over rounds, relative",
                  rule_line(threshold, parse_fail_on(args.fail_on)),
                  f"sweep flags: {' '.join(sweep_args)}",
                  f"load average (1, 5, 15 min): {load_start} at start, {load_text()} at end",
                  *([f"defaults taken: {', '.join(measuring.told)} (the settings ab's power "
                       f"was measured with: docs/regression.md, 'Power of ab')"]
                    if measuring.told else []),
                  *(f"warning: {line}" for line in measuring.warnings)]
    rows = with_failures(outcome.rows, parse_fail_on(args.fail_on))
    console.print(writers.rich_table(rows, f"current/baseline ({unit}, threshold "
                                           f"{threshold:.1%})"))
    (out / "ab.md").write_text(writers.markdown(rows, TITLE, header))
    (out / "ab.csv").write_text(writers.csv_text(rows))
    console.print("\n".join(header), highlight=False)
    ambiguous = sum(row.verdict == AMBIGUOUS for row in rows)
    if ambiguous:
        console.print(f"[yellow]{ambiguous} point(s) ambiguous after {outcome.rounds} round(s)"
                      f"[/]: the rounds disagree too much for so few of them; more rounds "
                      f"(--max-time, --rounds) or a quieter machine would decide them")
    console.print(f"{writers.summary_line(rows)}  ->  {out / 'ab.md'}", highlight=False)
    return exit_status(row.fails for row in rows)


def grid_points(args: argparse.Namespace, impl_modules: tuple[str, ...], head_root: Path) -> list:
    """The grid's points, expanded by this tree's sweep planner (for --metric instructions,
    where no sweep runs); --impl-module modules are imported from HEAD's tree for their names."""
    import sys

    from harness.commands.sweep import request_from_args
    from harness.store.resume import plan_sweep as sweep_plan
    from harness.contract.registry import load_impl_modules

    sys.path.insert(0, str(head_root))
    try:
        load_impl_modules(impl_modules)
    finally:
        sys.path.remove(str(head_root))
    # only the flags passed through to the sides' sweeps: ab's own (--max-time, --out ...) share
    # names with sweep settings they do not mean
    passed = argparse.Namespace(**{dest: getattr(args, dest, None) for dest, _ in sweep_flags()},
                                impl_module=list(impl_modules))
    return sweep_plan(request_from_args(passed), check_devices=False).points


def progress_text(rows: list[VerdictRow]) -> str:
    return writers.counts_text(rows)
