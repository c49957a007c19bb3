"""Derived metrics: pure functions of a point and its measured time.

FLOPs follow the mask: the forward of exact attention is 2 * B * Hq * (D + D_v) * (allowed
(query, key) pairs) (QK^T over q's and k's head dim D, PV over v's D_v, 2 FLOPs per multiply-add
each; 4 * B * Hq * D * pairs when D_v = D), the pairs counted exactly for causal
(bottom-right), windows, packed documents, Tq != Tk and a ragged batch's real lengths
(harness.contract.ragged; tokens/s counts its real query tokens too). Causal Tq = Tk = T counts T(T+1)/2
pairs per head (FlashAttention's benchmarks use T^2/2). Backward 2.5x, forward+backward 3.5x
the forward (the convention of FlashAttention's benchmarks). Elementwise work is not counted:
the softmax's exp, ALiBi's bias, the softcap's tanh per score and the sinks' one extra term per
row (so a softcap or sinks point counts the FLOPs of the same point without them).
"""

from __future__ import annotations

from harness.contract.head_dims import value_dim
from harness.contract.masking import allowed_pairs
from harness.contract.point_masks import document_ids
from harness.contract.ragged import point_lengths
from harness.contract.records import Point

PASS_FACTOR = {"forward": 1.0, "backward": 2.5, "forward_backward": 3.5}
EXACT_FLOP_MODEL = ("4*B*Hq*D*(allowed query-key pairs) for the forward (two matmuls; "
                    "2*B*Hq*(D+D_v)*pairs when v's head dim D_v differs; the pairs "
                    "counted exactly for causal, windows, documents and Tq != Tk: causal "
                    "Tq=Tk=T gives T(T+1)/2); backward 2.5x, forward+backward 3.5x the forward")
NO_FLOP_MODEL = ("not computed: the method does not form QK^T, so the exact-attention FLOP "
                 "count would not describe its work; compare tokens/s instead")
def point_pairs(point: Point) -> int:
    """Allowed (query, key) pairs summed over the batch (one head); a ragged batch's summed
    over its sequences at their real lengths (padding is no work)."""
    lengths = point_lengths(point)
    if lengths is not None:
        return sum(allowed_pairs(int(t_q), int(t_k), causal=point.causal,
                                 window=point.window_pair)
                   for t_q, t_k in zip(lengths.q, lengths.kv))
    return allowed_pairs(point.n_queries, point.seq_len, causal=point.causal,
                         window=point.window_pair, document_ids=document_ids(point),
                         batch=point.batch)


def point_tokens(point: Point) -> int:
    """Query tokens processed: B * Tq, or a ragged batch's real query tokens."""
    lengths = point_lengths(point)
    return point.tokens if lengths is None else int(lengths.q.sum())


def attention_flops(point: Point) -> float:
    """FLOPs of exact attention at this point (mask-aware)."""
    forward = 2.0 * point.heads * (point.head_dim + value_dim(point)) * point_pairs(point)
    return forward * PASS_FACTOR[point.pass_]


def derived(point: Point, family: str, time_s: float | None) -> dict[str, object]:
    """tokens/s (query tokens) for all; FLOPs and TFLOP/s for exact attention only."""
    values: dict[str, object] = {"tokens_per_s": None, "flops": None, "tflops": None,
                                 "flop_model": EXACT_FLOP_MODEL if family == "exact"
                                 else NO_FLOP_MODEL}
    if time_s is None or time_s <= 0:
        return values
    values["tokens_per_s"] = point_tokens(point) / time_s
    if family == "exact":
        flops = attention_flops(point)
        values["flops"] = flops
        values["tflops"] = flops / time_s / 1e12
    return values
