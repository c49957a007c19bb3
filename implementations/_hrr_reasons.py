"""Why HRR attention (hrr_torch, hrr_jax, hrr_triton) takes no workload but key padding and
GQA: one reason per capability feature, shared by the three implementations."""

from __future__ import annotations

from harness.contract.head_dims import HRR_HEAD_DIMS

HRR_REASONS = (
    ("q_len", "HRR's output w_t * v_t needs a value at every query position, so Tq != Tk is "
              "unsupported"),
    ("window", "HRR attention has no mask but key padding (beta sums every key)"),
    ("alibi", "HRR attention has no positional bias"),
    ("documents", "HRR attention has no mask but key padding (beta sums every key)"),
    ("softcap", "HRR attention has no query-key logit to cap (its softmax is over "
                "cosines of v_t with the unbound vector, in [-1, 1])"),
    ("sinks", "HRR attention's softmax is over cosines in [-1, 1], not query-key "
              "logits: a sink logit there is another model, and HRR's reference has none"),
    ("paged", "HRR keeps no per-key cache to page: it reduces the keys to beta = sum "
              "bind(k_t, v_t)"),
    ("ragged", "HRR needs Tq == Tk per sequence; ragged lengths (per-row beta over each "
               "sequence's keys) not written"),
    ("head_dim_v", HRR_HEAD_DIMS),
    ("fp8_kv", "HRR binds k and v with FFTs in float32 or wider: no FP8 key/value path"),
)
