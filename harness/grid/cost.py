"""Expected cost of a point in seconds: what shards are balanced by. Pure functions.

cost = overhead + sampling + warm-up, where one call is expected to take work / rate:
- work: exact attention 4*B*H*T^2*D (halved when causal); HRR (GEMM formulation) 4*B*H*T*D^2;
  kernel methods (Performer) 4*B*H*T*D*M with M = 256 features; times 1 / 2.5 / 3.5 for
  forward / backward / forward+backward (harness.metrics.flops.PASS_FACTOR);
- rate: an assumed sustained rate per device kind (20 GFLOP/s CPU, 200 TFLOP/s CUDA);
- overhead: starting the memory and timing workers (1.5 s CPU, 3 s CUDA);
- sampling: max(min_time, 5 calls) plus 3 calls of warm-up and memory pass.
Only ratios matter for balancing; the absolute figure is a rough guide to a shard's length.
"""

from __future__ import annotations

from harness.metrics.flops import PASS_FACTOR, attention_flops
from harness.contract.records import Point

RATE_FLOPS = {"cpu": 2e10, "cuda": 2e14}
OVERHEAD_S = {"cpu": 1.5, "cuda": 3.0}
KERNEL_FEATURES = 256
MIN_TIME_S = 0.5


def expected_work(point: Point, family: str) -> float:
    """Floating-point operations one call is expected to do."""
    if family == "exact":
        return attention_flops(point)
    base = 4.0 * point.batch * point.heads * point.seq_len * point.head_dim
    width = point.head_dim if family == "hrr" else KERNEL_FEATURES
    return base * width * PASS_FACTOR[point.pass_]


def expected_cost_s(point: Point, family: str) -> float:
    kind = point.device.split(":", 1)[0]
    call = expected_work(point, family) / RATE_FLOPS.get(kind, RATE_FLOPS["cpu"])
    return OVERHEAD_S.get(kind, OVERHEAD_S["cpu"]) + max(MIN_TIME_S, 5 * call) + 3 * call
