#!/usr/bin/env python3
"""HRR forward time against the memory-bandwidth floor, on any device (issue 8's GPU target).

    floor = (bytes of q, k, v read + bytes of the output written) / copy bandwidth

where the copy bandwidth is measured on the same device in the same process: a tensor of
``--copy-mib`` MiB copied into another, (read + written bytes) / median time. Each method is
first checked against the float64 HRR reference at a small shape (harness.measure.gate, the
same gate as run_bench), then timed by the harness's own workloads and timers (CUDA events on
a GPU, with the L2 flush; perf_counter on the CPU; JAX: block_until_ready).

    python benchmarks/hrr/bandwidth_floor.py --device cuda              T=64K..1M, fp32 + bf16
    python benchmarks/hrr/bandwidth_floor.py --device cpu --seq-len 4K --dtypes float32
    python benchmarks/hrr/bandwidth_floor.py --device cuda --json out.json

Methods that cannot run (package missing, no CUDA, dtype) are listed with the reason.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_IMPLS = "hrr_torch,hrr_triton,hrr_jax"
from harness.metrics.traffic import DTYPE_BYTES


@dataclass
class FloorRow:
    impl: str
    dtype: str
    seq_len: int
    status: str                  # ok, unsupported, failed-gate, error
    time_s: float | None = None
    floor_s: float | None = None
    ratio: float | None = None   # time / floor
    message: str = ""


def io_bytes(batch: int, heads: int, tokens: int, dim: int, dtype: str) -> int:
    """Bytes of q, k, v read plus the output written: four (B, H, T, D) tensors (pure)."""
    return 4 * batch * heads * tokens * dim * DTYPE_BYTES[dtype]


def copy_bandwidth(device: str, mib: int, repeats: int = 10) -> float:
    """Bytes per second of dst.copy_(src): read + written bytes over the median time, timed by
    the harness's timers (CUDA events on a GPU, no L2 flush; perf_counter on the CPU)."""
    import torch

    from harness.contract.workload import Workload
    from harness.measure.timers import CudaEventTimer, WallClockTimer

    src = torch.empty(mib << 20, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    work = Workload(run=lambda: dst.copy_(src), block=lambda _: None, check=lambda _: True,
                    input_bytes=0)
    timer = CudaEventTimer(device, flush_l2=False) if device.startswith("cuda") \
        else WallClockTimer()
    times = [timer.time(work)[0] for _ in range(repeats + 2)][2:]   # two warm-up copies
    return 2 * src.numel() / statistics.median(times)


def row_order(names: list[str], dtypes: list[str], seq_lens: list[int]) -> list[tuple]:
    """(impl, dtype, T) in order of increasing T, every dtype and method at each T (pure): a
    run cut at its time limit has its smallest T measured in every dtype, not one dtype only."""
    return [(name, dtype, tokens) for tokens in sorted(seq_lens) for dtype in dtypes
            for name in names]


def admit(impl_name: str, dtype: str, device: str) -> tuple[str, str]:
    """("ok", "") or (row status, reason) for a method in a dtype: its capabilities, then the
    correctness gate at a small shape (harness.measure.gate; compiles the method once)."""
    from harness import get
    from harness.measure.gate import check

    impl = get(impl_name)
    verdict = impl.supports(device=device, dtype=dtype)
    if not verdict:
        return "unsupported", verdict.reason
    gate = check(impl, device=device, dtype=dtype)
    if not gate.passed:
        return "failed-gate", gate.message
    return "ok", ""


def measure(impl_name: str, dtype: str, tokens: int, args, bandwidth: float,
            admitted: dict[tuple[str, str], tuple[str, str]] | None = None) -> FloorRow:
    """One row; ``admitted`` caches ``admit`` per (impl, dtype): one gate per method and
    dtype, not one per row."""
    from harness.contract import frameworks
    from harness import get
    from harness.grid.settings import TimingSettings
    from harness.measure.timing import first_call, time_workload
    from harness.contract.records import Point

    row = FloorRow(impl_name, dtype, tokens, "unsupported")
    admitted = {} if admitted is None else admitted
    if (impl_name, dtype) not in admitted:
        admitted[impl_name, dtype] = admit(impl_name, dtype, args.device)
    status, reason = admitted[impl_name, dtype]
    if status != "ok":
        row.status, row.message = status, reason
        return row
    impl = get(impl_name)
    point = Point(impl_name, seq_len=tokens, head_dim=args.head_dim, heads=args.heads,
                  batch=args.batch, dtype=dtype, device=args.device)
    try:
        work = frameworks.get(impl.framework).make_workload(impl, point)
        warm = first_call(work)
        samples, _ = time_workload(work, TimingSettings(min_time_s=args.min_time,
                                                        max_repeats=args.repeats), warm)
    except Exception as exc:  # an OOM or a kernel that does not build: a row, not a crash
        row.status, row.message = "error", f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        return row
    row.status = "ok"
    row.time_s = statistics.median(samples)
    row.floor_s = io_bytes(args.batch, args.heads, tokens, args.head_dim, dtype) / bandwidth
    row.ratio = row.time_s / row.floor_s
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--impl", default=DEFAULT_IMPLS)
    parser.add_argument("--seq-len", default="64K,256K,1M", help="e.g. 64K,256K or 64K..1M")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="e.g. fp32,bf16")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--min-time", type=float, default=0.3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--copy-mib", type=int, default=1024)
    parser.add_argument("--json", type=Path, help="also write the rows and the bandwidth here")
    args = parser.parse_args(argv)
    from harness.errors import UsageError
    from harness.contract.registry import REGISTRY
    from harness.contract.parsers import parse_dtypes, parse_int_list

    try:   # the harness's own parsers and names: the same inputs and messages as run_bench
        args.seq_len = parse_int_list(args.seq_len, axis="seq_len")
        dtypes = parse_dtypes(args.dtypes)
        names = [impl.name for impl in REGISTRY.resolve(
            n.strip() for n in args.impl.split(",") if n.strip())]
    except UsageError as exc:
        print(f"bandwidth_floor: {exc}", file=sys.stderr)
        return 2
    if args.device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            print("bandwidth_floor: no CUDA device: torch.cuda.is_available() is False",
                  file=sys.stderr)
            return 2
    bandwidth = copy_bandwidth(args.device, args.copy_mib)
    print(f"# {args.device}: copy bandwidth {bandwidth / 1e9:.1f} GB/s (read + write, "
          f"{args.copy_mib} MiB); B={args.batch} H={args.heads} D={args.head_dim}, forward")
    print(f"{'impl':>12s} {'dtype':>9s} {'T':>8s} {'time ms':>9s} {'floor ms':>9s} "
          f"{'x floor':>8s}  note")
    rows: list[FloorRow] = []
    write_json(args.json, args.device, bandwidth, rows, complete=False)
    admitted: dict[tuple[str, str], tuple[str, str]] = {}
    for name, dtype, tokens in row_order(names, dtypes, args.seq_len):
        row = measure(name, dtype, tokens, args, bandwidth, admitted)
        rows.append(row)
        write_json(args.json, args.device, bandwidth, rows, complete=False)
        cells = ("-", "-", "-") if row.time_s is None else (
            f"{row.time_s * 1e3:.3f}", f"{row.floor_s * 1e3:.3f}", f"{row.ratio:.2f}")
        print(f"{name:>12s} {dtype:>9s} {tokens:>8d} {cells[0]:>9s} {cells[1]:>9s} "
              f"{cells[2]:>8s}  {row.status}{': ' + row.message if row.message else ''}",
              flush=True)
    write_json(args.json, args.device, bandwidth, rows, complete=True)
    return 0


def write_json(path: Path | None, device: str, bandwidth: float, rows: list,
               complete: bool) -> None:
    """The rows so far (rewritten after each row, atomically): a run killed at its time limit
    keeps what it measured; ``complete`` says whether every row was measured."""
    if path is None:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"device": device, "copy_bandwidth_bytes_s": bandwidth,
                               "complete": complete, "rows": [asdict(r) for r in rows]},
                              indent=1))
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
