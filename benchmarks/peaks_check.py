"""Check a run's measured peaks against an independent measurement on the same machine.

Independent of harness.metrics.peaks: ``torch.utils.benchmark`` times a 2048 x 2048 float32 matmul
(the median of its blocked_autorange) and numpy a 2048 x 2048 float32 matmul (its own BLAS) and
a copy of 256 MiB (best of ``--repeats`` calls); the ratios to the run.json ``peaks`` are
printed. On a shared machine note the load average beside the figures.

    python benchmarks/peaks_check.py results/RUN [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def best(call, repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run directory whose run.json holds peaks")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    try:
        peaks = json.loads((Path(args.run) / "run.json").read_text())["peaks"]
    except (OSError, KeyError, json.JSONDecodeError) as exc:
        print(f"error: {args.run}: no readable peaks in run.json ({exc})", file=sys.stderr)
        return 2
    n = 2048
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    out = np.empty((n, n), dtype=np.float32)
    gemm = 2.0 * n ** 3 / best(lambda: np.matmul(a, b, out=out), args.repeats)
    src = np.ones(256 * 2 ** 20 // 4, dtype=np.float32)
    dst = np.zeros_like(src)
    copy = 2.0 * src.nbytes / best(lambda: np.copyto(dst, src), args.repeats)
    import torch
    import torch.utils.benchmark as benchmark

    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    timer = benchmark.Timer("torch.mm(a, b)", globals={"torch": torch, "a": ta, "b": tb},
                            num_threads=torch.get_num_threads())
    torch_gemm = 2.0 * n ** 3 / timer.blocked_autorange(min_run_time=2.0).median
    run_gemm = peaks["matmul_flops_per_s"]["float32"]["value"]
    run_copy = peaks["memory_bytes_per_s"]["value"]
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"GEMM float32: run {run_gemm / 1e9:.1f} GFLOP/s; torch.utils.benchmark 2048^3 "
          f"{torch_gemm / 1e9:.1f} GFLOP/s (ratio {run_gemm / torch_gemm:.2f}); numpy 2048^3 "
          f"{gemm / 1e9:.1f} GFLOP/s (ratio {run_gemm / gemm:.2f})")
    print(f"copy: run {run_copy / 1e9:.2f} GB/s, numpy 256 MiB {copy / 1e9:.2f} GB/s, "
          f"ratio {run_copy / copy:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
