"""Where a run's wall time went: timed samples, compilation, worker start-up, the rest of the
workers' time, and the parent.

    python benchmarks/harness_overhead.py results/RUN [results/RUN2 ...]
    python benchmarks/harness_overhead.py --run [--isolate worker,point] [-- SWEEP FLAGS]

For each run directory: run.json's ``overhead`` block (kept by the runner,
harness/measure/overhead.py), then per implementation the sums over results.jsonl of the points'
wall time (``wall_s``), their timed samples and their compilation (``compile_time_s``), with the
samples' share of the wall time without compilation (the issue's yardstick: at least 50% on
README's main job).

With ``--run``: runs README's main job itself (``run_bench.py sweep`` with the default preset,
``--no-report``) into a temporary directory, once per isolation mode of ``--isolate`` in turn,
prints each command's wall time (process start and imports included) and its breakdown. Flags
after ``--`` go to the sweep (``-- --impl softmax_torch --seq-len 256`` for a short check). On a
shared machine note the load average printed beside the figures.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.errors import UsageError  # noqa: E402
from harness.grid.settings import ISOLATION_MODES  # noqa: E402
from harness.measure.overhead import (  # noqa: E402
    OverheadSummary,
    breakdown_lines,
    impl_table,
    impl_times,
)
from harness.store.run_dir import open_run  # noqa: E402


def describe(path: Path) -> list[str]:
    """The breakdown of one run directory, as lines."""
    run = open_run(path)
    block = run.metadata().get("overhead")
    summary = OverheadSummary.from_dict(block) if isinstance(block, dict) else None
    return [f"== {path}", *breakdown_lines(summary), "", *impl_table(impl_times(run.raw_records()))]


def run_main_job(out: Path, isolate: str, sweep_args: list[str]) -> tuple[float, int]:
    """README's main job (sweep, default preset, no report) into ``out``: (wall s, exit status)."""
    command = [sys.executable, str(ROOT / "run_bench.py"), "sweep", "--out", str(out),
               "--no-report", "--isolate", isolate, *sweep_args]
    print("$ " + " ".join(command), flush=True)
    start = time.perf_counter()
    status = subprocess.call(command, cwd=ROOT)
    return time.perf_counter() - start, status


def load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    sweep_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, sweep_args = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help="run directories")
    parser.add_argument("--run", action="store_true",
                        help="run README's main job (sweep, default preset, --no-report) first")
    parser.add_argument("--isolate", default="worker",
                        help="with --run: isolation modes to run in turn, comma-separated "
                             f"({', '.join(ISOLATION_MODES)}; default worker)")
    parser.add_argument("--keep", metavar="DIR",
                        help="with --run: write the runs under DIR instead of a temporary folder")
    args = parser.parse_args(argv)
    if not args.run and not args.runs:
        parser.error("give run directories, or --run")
    modes = [m for m in args.isolate.split(",") if m]
    unknown = sorted(set(modes) - set(ISOLATION_MODES))
    if unknown:
        parser.error(f"--isolate: unknown mode(s) {', '.join(unknown)}")
    for path in args.runs:
        try:
            print("\n".join(describe(Path(path))) + "\n")
        except UsageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if not args.run:
        return 0
    status = 0
    with tempfile.TemporaryDirectory(prefix="attnbench-overhead-") as tmp:
        root = Path(args.keep) if args.keep else Path(tmp)
        totals = []
        for mode in modes:
            before = load()
            wall, code = run_main_job(root / f"main-{mode}", mode, sweep_args)
            status = status or code
            totals.append((mode, wall, code))
            print(f"\nmain job, --isolate {mode}: {wall:.1f} s (exit status {code}); load "
                  f"average before {before}, after {load()}")
            if (root / f"main-{mode}" / "run.json").exists():
                print("\n".join(describe(root / f"main-{mode}")) + "\n")
        if len(totals) > 1:
            print("; ".join(f"{mode}: {wall:.1f} s" for mode, wall, _ in totals))
    return status


if __name__ == "__main__":
    sys.exit(main())
