"""``run_bench.py profile``: one point under torch.profiler (or jax.profiler for JAX methods).

Writes ``OUT/trace.json`` (Chrome trace format: open it in https://ui.perfetto.dev or
chrome://tracing) and ``OUT/ops.csv`` (per op: calls, self time, total time, share of the self
time), and prints the top ops. The point flags are sweep's, one value each.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.contract import frameworks
from harness.console import make_console
from harness.errors import UsageError
from harness.contract.records import Point
from harness.contract.registry import REGISTRY
from harness.contract.frameworks import best_device
from harness.contract.registry import static_check
from harness.grid.spec import (
    parse_bools,
    parse_devices,
    parse_dtypes,
    parse_int_list,
    parse_passes,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--impl", required=True, help="the implementation to profile")
    parser.add_argument("--seq-len", default="1024", help="sequence length (default 1024)")
    parser.add_argument("--head-dim", default="64", help="head dimension (default 64)")
    parser.add_argument("--batch", default="1", help="batch size (default 1)")
    parser.add_argument("--heads", default="8", help="heads (default 8)")
    parser.add_argument("--dtype", default="float32", help="dtype (default float32)")
    parser.add_argument("--causal", default="false", help="true or false (default false)")
    parser.add_argument("--pass", dest="pass_", default="forward", metavar="PASS",
                        help="forward, backward or forward_backward (default forward)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda if present)")
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
    impl = REGISTRY.get(args.impl)   # unknown name: exit 2 with the valid ones
    return Point(impl=impl.name,
                 seq_len=one(parse_int_list(args.seq_len, axis="seq_len"), "--seq-len"),
                 head_dim=one(parse_int_list(args.head_dim, axis="head_dim"), "--head-dim"),
                 batch=one(parse_int_list(args.batch, axis="batch"), "--batch"),
                 heads=one(parse_int_list(args.heads, axis="heads"), "--heads"),
                 dtype=one(parse_dtypes(args.dtype), "--dtype"),
                 causal=one(parse_bools(args.causal), "--causal"),
                 pass_=one(parse_passes(args.pass_), "--pass"),
                 device=one(parse_devices(args.device or best_device()), "--device"))


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
    fw = frameworks.get(impl.framework)
    with fw.precision(point.dtype):
        rows = profile_point(impl, point, out, calls=args.calls, warmup=args.warmup,
                             seed=args.seed)
    table = Table(title=f"top ops: {impl.name} T={point.seq_len} D={point.head_dim} "
                        f"B={point.batch} H={point.heads} {point.dtype} {point.pass_} "
                        f"{point.device}, {args.calls} call(s)", title_justify="left")
    for column in ("op", "calls", "self ms", "share"):
        table.add_column(column, justify="left" if column == "op" else "right")
    for r in rows[:args.top]:
        table.add_row(r.name[:70], str(r.calls), f"{r.self_time_us / 1e3:.3f}",
                      f"{100 * r.share:.1f}%")
    console.print(table)
    console.print(f"wrote {out / TRACE_FILE} (Chrome trace: open in https://ui.perfetto.dev) "
                  f"and {out / OPS_FILE}")
    return 0
