"""An implementation that fails on rank 1 only, registered by the distributed-training tests."""

from __future__ import annotations

import os

from harness import Capabilities, register

CAPS = Capabilities(devices=("cpu",), dtypes=("float32",), key_padding_mask=True, backward=True)


@register("test_fails_on_rank1", framework="torch", family="exact", capabilities=CAPS)
def fails_on_rank1(q, k, v, *, causal=False, key_padding_mask=None):
    """Exact attention that raises in training (masked calls) on the process with RANK=1."""
    import torch

    if key_padding_mask is not None and os.environ.get("RANK") == "1":
        raise RuntimeError("deliberate failure on rank 1")
    scores = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5
    if key_padding_mask is not None:
        scores = scores.masked_fill(~key_padding_mask[:, None, None, :], float("-inf"))
    return torch.softmax(scores, dim=-1) @ v
