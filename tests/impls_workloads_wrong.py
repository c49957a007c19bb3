"""An implementation that claims GQA and gets the head mapping wrong (query head h reads key/value
head h % Hkv instead of h // (Hq / Hkv)): right on every other workload; and one that claims
softcap and sinks and ignores both. Registered only by tests/test_check_workloads.py, through
--impl-module."""

from __future__ import annotations

from harness import Capabilities, register


@register("wrong_gqa_order", framework="torch", family="exact",
          capabilities=Capabilities(devices=("cpu",), dtypes=("float32",), causal=True,
                                    key_padding_mask=False, gqa=True, q_len=True))
def wrong_gqa_order(q, k, v, *, causal=False, key_padding_mask=None, window=None,
                    alibi_slopes=None, document_ids=None):
    import torch

    if k.shape[1] != q.shape[1]:
        group = q.shape[1] // k.shape[1]
        k, v = k.repeat(1, group, 1, 1), v.repeat(1, group, 1, 1)   # h % Hkv: wrong
    t_q, t_k = q.shape[-2], k.shape[-2]
    scores = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5
    if causal:
        rows = torch.arange(t_q)[:, None] + (t_k - t_q)
        scores = scores.masked_fill(torch.arange(t_k)[None, :] > rows, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


@register("ignores_score_mods", framework="torch", family="exact",
          capabilities=Capabilities(devices=("cpu",), dtypes=("float32",), causal=True,
                                    key_padding_mask=True, gqa=True, q_len=True, window=True,
                                    softcap=True, sinks=True))
def ignores_score_mods(q, k, v, *, causal=False, key_padding_mask=None, window=None,
                       softcap=None, sinks=None):
    from implementations.softmax_torch import softmax_torch

    return softmax_torch(q, k, v, causal=causal, key_padding_mask=key_padding_mask,
                         window=window)


@register("refuses_wide_values", framework="torch", family="exact",
          capabilities=Capabilities(devices=("cpu",), dtypes=("float32",), causal=True,
                                    key_padding_mask=True, gqa=True, q_len=True,
                                    head_dim_v=True))
def refuses_wide_values(q, k, v, *, causal=False, key_padding_mask=None):
    """Claims D_v != D, and refuses when called with D_v above 64 (a kernel limit only the
    shapes show, as FlashInfer's and FA-4's head-dim checks are)."""
    from harness.errors import UnsupportedError
    from implementations.softmax_torch import softmax_torch

    if v.shape[-1] > 64:
        raise UnsupportedError("refuses_wide_values: D_v above 64 (a kernel limit)")
    return softmax_torch(q, k, v, causal=causal, key_padding_mask=key_padding_mask)
