"""The vanilla baseline: materialises the full T x T score matrix (scale 1/sqrt(D))."""

from __future__ import annotations

from harness.registry import Capabilities, register
from harness.traffic import materialised_scores
from implementations._torch_masks import allowed_keys


@register("softmax_torch", framework="torch", family="exact",
          capabilities=Capabilities(devices=("cpu", "cuda"),
                                    dtypes=("float64", "float32", "float16", "bfloat16"),
                                    causal=True, key_padding_mask=True, backward=True),
          traffic=materialised_scores)
def softmax_torch(q, k, v, *, causal=False, key_padding_mask=None):
    """Vanilla softmax(Q K^T / sqrt(D)) V with the T x T matrix in memory."""
    import torch

    scores = torch.matmul(q, k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
    allowed = allowed_keys(q, k, causal=causal, key_padding_mask=key_padding_mask)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    # softmax in float32 for half inputs, as common model code does
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32 if q.dtype in (
        torch.float16, torch.bfloat16) else None).to(q.dtype)
    if allowed is not None:  # fully masked rows are NaN after softmax: make them 0
        weights = weights.masked_fill(~allowed, 0.0)
    return torch.matmul(weights, v)
