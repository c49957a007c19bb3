"""Does attnbench's timer agree with torch.utils.benchmark? (CPU, thread count matched)

    python benchmarks/timer_agreement.py [--impl hrr_torch,softmax_torch,sdpa_flash]
                                         [--seq-len 1K,4K] [--threads 2] [--repeats 3]
                                         [--min-time 1.0] [--tolerance 0.10]
                                         [--reference-heap held|default]

For each implementation and T: the attnbench runner measures the point (its worker, warm-up,
samples, median) with ``--threads`` intra-op threads (OMP_NUM_THREADS/MKL_NUM_THREADS in the
workers' environment; the record's thread count is checked), then
torch.utils.benchmark.Timer(num_threads=--threads).blocked_autorange times the same call on
the same inputs in this process; the two alternate ``--repeats`` times. The reference runs
with glibc's malloc set as the harness's timing pass sets it (``--reference-heap held``, the
default: freed blocks up to 64 MiB stay in the heap, harness.measure.memory.hold_freed_memory),
as the thread count is matched: the check compares timers, not allocator policies. With
``--reference-heap default`` (glibc's own thresholds) a call whose temporaries exceed 32 MiB
gets fresh pages, and page faults, on every call: softmax_torch at T=1K (a 32 MiB score
matrix) then takes about 2.5x the harness's time on the 2-core CPU, and that is the allocator. Prints one row per
point: both medians (median over repeats), their ratio, the 1-minute load average when the
point was measured and whether the harness marked any of its measurements noisy (on a shared
machine the figures move with the load). Exits 1 when a ratio is off by more than
``--tolerance`` (10%): the harness's timer is then not measuring what torch.utils.benchmark
measures, and the harness is what to fix.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.utils.benchmark as tb  # noqa: E402

import harness  # noqa: E402
from harness.grid.settings import TimingSettings
from harness.contract.records import Point
from harness.contract.registry import REGISTRY
from harness.measure.memory import hold_freed_memory
from harness.measure.runner import Runner
from harness.grid.settings import RunSettings
from harness.store.run_dir import RunDir
from harness.contract.parsers import parse_int_list

DEFAULT_IMPLS = "hrr_torch,softmax_torch,sdpa_flash"


def harness_median(point: Point, min_time: float) -> tuple[float, int, bool]:
    """(median time in s, worker threads, marked noisy) of one point measured by the attnbench
    runner."""
    with tempfile.TemporaryDirectory() as tmp:
        run = RunDir.create(Path(tmp) / "run", {})
        try:
            runner = Runner(run, RunSettings(timing=TimingSettings(min_time_s=min_time)))
            record = runner.run([point]).records[0]
        finally:
            run.release()
    if record.status != "ok":
        raise SystemExit(f"{point.impl} T={point.seq_len}: {record.status}: {record.message}")
    return record.time_s, record.threads or torch.get_num_threads(), bool(record.noisy)


def reference_median(impl_name: str, shape: tuple[int, ...], threads: int,
                     min_time: float) -> float:
    gen = torch.Generator().manual_seed(0)   # the worker's inputs: q, k, v ~ N(0, 1), seed 0
    q, k, v = (torch.randn(shape, generator=gen) for _ in range(3))
    timer = tb.Timer("with torch.no_grad(): fn(q, k, v, causal=False, key_padding_mask=None)",
                     globals={"fn": harness.get(impl_name).fn, "q": q, "k": k, "v": v,
                              "torch": torch},
                     num_threads=threads)
    return timer.blocked_autorange(min_run_time=min_time).median


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", default=DEFAULT_IMPLS, help="comma-separated names")
    parser.add_argument("--seq-len", default="1K,4K", help="e.g. 1K,4K")
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2,
                        help="intra-op threads, the harness's workers and the reference")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tolerance", type=float, default=0.10,
                        help="largest |ratio - 1| accepted (exit 1 beyond)")
    parser.add_argument("--min-time", type=float, default=1.0,
                        help="seconds of samples per measurement, both timers")
    parser.add_argument("--reference-heap", choices=("held", "default"), default="held",
                        help="glibc malloc in the reference's process: held, as the harness's "
                             "timing pass (default), or glibc's default thresholds")
    args = parser.parse_args()
    if args.reference_heap == "held":
        hold_freed_memory()
    # the workers start after this (forkserver): they read their thread count from here
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(args.threads)
    import implementations  # noqa: F401  (registers the bundled implementations)

    names = [n for n in args.impl.split(",") if n]
    REGISTRY.resolve(names)
    lengths = parse_int_list(args.seq_len, axis="seq_len")
    load_before = os.getloadavg()
    rows = []
    for name in names:
        for seq_len in lengths:
            point = Point(impl=name, seq_len=seq_len, head_dim=args.head_dim, heads=args.heads)
            shape = (1, args.heads, seq_len, args.head_dim)
            ours, theirs, noisy = [], [], False
            load = os.getloadavg()[0]
            for _ in range(args.repeats):
                value, threads, marked = harness_median(point, args.min_time)
                if threads != args.threads:
                    raise SystemExit(f"{name} T={seq_len}: the worker ran {threads} threads, "
                                     f"not {args.threads}")
                ours.append(value)
                noisy |= marked
                theirs.append(reference_median(name, shape, args.threads, args.min_time))
            load = max(load, os.getloadavg()[0])
            a, b = statistics.median(ours), statistics.median(theirs)
            rows.append((name, seq_len, args.threads, a, b, load, noisy))
            print(f"{name:14s} T={seq_len:<6d} threads={args.threads}  attnbench "
                  f"{a * 1e3:8.2f} ms  torch.utils.benchmark {b * 1e3:8.2f} ms  ratio "
                  f"{a / b:.3f}  load {load:.2f}" + ("  (noisy)" if noisy else ""), flush=True)
    load_after = os.getloadavg()
    print(f"\nD={args.head_dim} H={args.heads} B=1 float32 forward, non-causal; median of "
          f"{args.repeats} alternating measurements of {args.min_time:g} s each; the "
          f"reference's heap: {args.reference_heap}")
    print(f"load average (1/5/15 min) before {', '.join(f'{x:.2f}' for x in load_before)}; "
          f"after {', '.join(f'{x:.2f}' for x in load_after)}")
    print("\n| impl | T | threads | attnbench median (ms) | torch.utils.benchmark (ms) | ratio "
          "| load (1 min) | harness noisy |")
    print("|---|---|---|---|---|---|---|---|")
    outside = []
    for name, seq_len, threads, a, b, load, noisy in rows:
        print(f"| {name} | {seq_len} | {threads} | {a * 1e3:.2f} | {b * 1e3:.2f} | {a / b:.3f} "
              f"| {load:.2f} | {'yes' if noisy else 'no'} |")
        if abs(a / b - 1) > args.tolerance:
            outside.append(f"{name} T={seq_len} ({a / b:.3f})")
    if outside:
        print(f"\nratio outside {args.tolerance:.0%}: {', '.join(outside)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
