"""Derived metrics: pure functions of a point and its measured time (FLOP model as in the FlashAttention papers)."""

from __future__ import annotations

from harness.records import Point

PASS_FACTOR = {"forward": 1.0, "backward": 2.5, "forward_backward": 3.5}
EXACT_FLOP_MODEL = ("4*B*H*T*T*D for the forward (two matmuls), halved when causal; "
                    "backward 2.5x, forward+backward 3.5x the forward")
NO_FLOP_MODEL = ("not computed: the method does not form QK^T, so the exact-attention FLOP "
                 "count would not describe its work; compare tokens/s instead")


def attention_flops(point: Point) -> float:
    """FLOPs of exact attention at this point."""
    forward = 4.0 * point.batch * point.heads * point.seq_len * point.seq_len * point.head_dim
    if point.causal:
        forward /= 2
    return forward * PASS_FACTOR[point.pass_]


def derived(point: Point, family: str, time_s: float | None) -> dict[str, object]:
    """tokens/s for all; FLOPs and TFLOP/s for exact attention only."""
    values: dict[str, object] = {"tokens_per_s": None, "flops": None, "tflops": None,
                                 "flop_model": EXACT_FLOP_MODEL if family == "exact"
                                 else NO_FLOP_MODEL}
    if time_s is None or time_s <= 0:
        return values
    values["tokens_per_s"] = point.tokens / time_s
    if family == "exact":
        flops = attention_flops(point)
        values["flops"] = flops
        values["tflops"] = flops / time_s / 1e12
    return values
