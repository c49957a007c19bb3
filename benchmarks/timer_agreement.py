"""Does attnbench's timer agree with torch.utils.benchmark? (issue 3's sanity check)

    python benchmarks/timer_agreement.py [--impl sdpa_math] [--seq-len 2048] [--repeats 3]

Measures one point with the attnbench runner (isolated worker, warm-up, samples, median) and the
same call with torch.utils.benchmark.Timer.blocked_autorange in this process, alternating
`--repeats` times, and prints both medians and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.utils.benchmark as tb  # noqa: E402

import harness  # noqa: E402
from harness.measure import TimingSettings  # noqa: E402
from harness.records import Point  # noqa: E402
from harness.runner import Runner, RunSettings  # noqa: E402
from harness.store import RunDir  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", default="sdpa_math")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    point = Point(impl=args.impl, seq_len=args.seq_len, head_dim=args.head_dim, heads=args.heads)
    impl = harness.get(args.impl)
    shape = (1, args.heads, args.seq_len, args.head_dim)
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(shape, generator=gen) for _ in range(3))

    ours, theirs = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            runner = Runner(RunDir.create(Path(tmp) / "run", {}),
                            RunSettings(timing=TimingSettings(min_time_s=1.0)))
            record = runner.run([point]).records[0]
        assert record.status == "ok", record.message
        ours.append(record.time_s)
        timer = tb.Timer("with torch.no_grad(): fn(q, k, v, causal=False, key_padding_mask=None)",
                         globals={"fn": impl.fn, "q": q, "k": k, "v": v, "torch": torch},
                         num_threads=torch.get_num_threads())
        theirs.append(timer.blocked_autorange(min_run_time=1.0).median)
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"{args.impl} T={args.seq_len} D={args.head_dim} H={args.heads} float32 forward, "
          f"{torch.get_num_threads()} threads")
    print(f"attnbench runner      : median {a * 1e3:.2f} ms  (runs: "
          f"{', '.join(f'{x * 1e3:.2f}' for x in ours)})")
    print(f"torch.utils.benchmark : median {b * 1e3:.2f} ms  (runs: "
          f"{', '.join(f'{x * 1e3:.2f}' for x in theirs)})")
    print(f"ratio attnbench / torch.utils.benchmark = {a / b:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
