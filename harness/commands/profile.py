"""``run_bench.py profile``: one point under torch.profiler (or jax.profiler for JAX methods).

Writes ``OUT/trace.json`` (Chrome trace format: open it in https://ui.perfetto.dev or
chrome://tracing) and ``OUT/ops.csv`` (per op: calls, self time, total time, share of the self
time), and prints the top ops. The point flags are sweep's, one value each.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.contract import frameworks
from harness.console import describe_point, make_console
from harness.errors import UsageError
from harness.contract.records import Point
from harness.contract.registry import REGISTRY
from harness.contract.frameworks import best_device
from harness.contract.registry import static_check
from harness.commands.sweep import add_axis_arguments
from harness.contract.axes import axes
from harness.contract.parsers import parse_names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--impl", required=True, help="the implementation to profile")
    point = parser.add_argument_group(
        "the point: sweep's axis flags, one value each (absent: the axis' default; device: "
        "cuda if present)")
    add_axis_arguments(point)
    parser.add_argument("--out", required=True, help="folder for trace.json and ops.csv")
    parser.add_argument("--calls", type=int, default=3, help="profiled calls (default 3)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untraced calls first (default 2; JAX: at least 1, it compiles)")
    parser.add_argument("--top", type=int, default=15, help="ops to print (default 15)")
    parser.add_argument("--seed", type=int, default=0, help="input seed (default 0)")


def one(values: tuple, flag: str):
    if len(values) != 1:
        raise UsageError(f"{flag}: profile takes one value, got {len(values)}")
    return values[0]


def point_from(args: argparse.Namespace) -> Point:
    """The one point of the flags: every axis of the table, one value each."""
    impl = REGISTRY.get(one(parse_names(args.impl), "--impl"))   # unknown name: exit 2 with the valid ones
    values: dict = {"impl": impl.name}
    for axis in axes():
        raw = getattr(args, axis.dest, None)
        if raw is None:
            values[axis.name] = best_device() if axis.name == "device" else axis.default
        else:
            values[axis.name] = one(axis.parse(raw), axis.flag)
    point = Point.from_dict(values)
    problem = point.workload_problem()
    if problem is not None:
        raise UsageError(f"profile: {problem}")
    return point


def run(args: argparse.Namespace) -> int:
    from rich.table import Table

    from harness.measure.profiling import OPS_FILE, TRACE_FILE, profile_point

    console = make_console()
    point = point_from(args)
    if args.calls < 1 or args.warmup < 0 or args.top < 0:
        raise UsageError("--calls must be >= 1, --warmup and --top >= 0")
    impl = REGISTRY.get(point.impl)
    reason = static_check(impl, point)
    verdict = impl.availability(point.device, point.dtype) if reason is None else None
    if reason is not None or not verdict:
        raise UsageError(f"cannot profile {impl.name} here: {reason or verdict.reason}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file; give a folder for {TRACE_FILE} and {OPS_FILE}")
    fw = frameworks.get(impl.framework)
    try:
        with fw.precision(point.dtype):
            rows = profile_point(impl, point, out, calls=args.calls, warmup=args.warmup,
                                 seed=args.seed)
    except (MemoryError, RuntimeError) as exc:   # in this process: out of memory, a failure
        kind = "out of memory" if isinstance(exc, MemoryError) or fw.is_oom(exc) else \
            type(exc).__name__
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise UsageError(f"cannot profile {impl.name} at {describe_point(point, markup=False)}: "
                         f"{kind}"
                         f"{': ' + first if first else ''} (profile runs in this process; "
                         f"a sweep measures the point in an isolated worker)") from None
    table = Table(title=f"top ops: {describe_point(point)}, {args.calls} call(s)",
                  title_justify="left")
    for column in ("op", "calls", "self ms", "share"):
        table.add_column(column, justify="left" if column == "op" else "right")
    for r in rows[:args.top]:
        table.add_row(r.name[:70], str(r.calls), f"{r.self_time_us / 1e3:.3f}",
                      f"{100 * r.share:.1f}%")
    console.print(table)
    console.print(f"wrote {out / TRACE_FILE} (Chrome trace: open in https://ui.perfetto.dev) "
                  f"and {out / OPS_FILE}")
    return 0
