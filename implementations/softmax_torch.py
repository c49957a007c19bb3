"""The vanilla baseline: materialises the full Tq x Tk score matrix (scale 1/sqrt(D)).

It is the naive baseline on purpose: for GQA/MQA it expands k and v to the query heads with
``repeat_interleave`` (a copy), windows, documents and bottom-right causal are one explicit
boolean mask, ALiBi one explicit bias, a softcap cap * tanh(s / cap) on the scaled scores (before
ALiBi and the mask), sinks one extra column of the softmax (dropped before the value matmul); a
paged cache is gathered to dense inside the call (timed), a ragged batch is padded to the
longest and masked (padded work). Methods with a native path (SDPA, flash_attn, xformers,
flex_attention) use it instead.
"""

from __future__ import annotations

from harness.contract.registry import Capabilities, register
from harness.contract.traits import Traits
from harness.metrics.traffic import dequant_copy, materialised
from implementations import _fp8 as fp8
from implementations._torch_masks import alibi_bias, allowed_keys, softmax_with_sinks
from implementations._torch_paging import PAGED_PATH, RAGGED_PATH, dense_kv


@register("softmax_torch", framework="torch", family="exact",
          traits=Traits(memory="scores", baseline=0),
          capabilities=Capabilities(
              devices=("cpu", "cuda"), dtypes=("float64", "float32", "float16", "bfloat16"),
              causal=True, key_padding_mask=True, backward=True, gqa=True, q_len=True,
              window=True, alibi=True, documents=True, softcap=True, sinks=True, paged=True,
              ragged=True, head_dim_v=True, fp8_kv=True,
              paths=(("gqa", "k, v expanded with repeat_interleave (naive baseline)"),
                     ("masks", "explicit boolean Tq x Tk mask"),
                     ("alibi", "explicit Tq x Tk bias"),
                     ("softcap", "cap * tanh(s / cap) on the Tq x Tk scores"),
                     ("sinks", "one sink column in the softmax, dropped before P V"),
                     ("paged", PAGED_PATH), ("ragged", RAGGED_PATH),
                     ("fp8_kv", fp8.PATH))),
          # k, v copied to the query heads; ALiBi one (1, Hq, Tq, Tk) bias tensor; FP8 k, v
          # dequantised into a copy
          traffic=dequant_copy(materialised(kv_copy=True, alibi_bias="heads")))
def softmax_torch(q, k, v, *, causal=False, key_padding_mask=None, window=None,
                  alibi_slopes=None, document_ids=None, softcap=None, sinks=None,
                  q_lengths=None, kv_lengths=None, page_table=None, kv_dtype="", k_scale=None,
                  v_scale=None):
    """Vanilla softmax(Q K^T / sqrt(D)) V with the Tq x Tk matrix in memory."""
    import torch

    k, v = dense_kv(k, v, page_table, kv_lengths, key_padding_mask)
    k, v = fp8.dequantised(q, k, v, k_scale, v_scale)
    if k.shape[1] != q.shape[1]:
        group = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = torch.matmul(q, k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
    if softcap:
        scores = softcap * torch.tanh(scores / softcap)
    if alibi_slopes is not None:
        scores = scores + alibi_bias(q, k, alibi_slopes)
    allowed = allowed_keys(q, k, causal=causal, key_padding_mask=key_padding_mask,
                           window=window, document_ids=document_ids, q_lengths=q_lengths,
                           kv_lengths=kv_lengths)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    if sinks is not None:
        return torch.matmul(softmax_with_sinks(scores, sinks).to(q.dtype), v)
    # softmax in float32 for half inputs, as common model code does
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32 if q.dtype in (
        torch.float16, torch.bfloat16) else None).to(q.dtype)
    if allowed is not None:  # fully masked rows are NaN after softmax: make them 0
        weights = weights.masked_fill(~allowed, 0.0)
    return torch.matmul(weights, v)
