"""xformers.ops.memory_efficient_attention (CUDA; xformers refuses CPU tensors).

Native paths only: GQA/MQA through xformers' 5-D layout (B, T, Hkv, group, D) with k and v
expanded along the group axis (a stride-0 view, no copy); causal with Tq == Tk by
``LowerTriangularMask``, with Tq != Tk by ``LowerTriangularFromBottomRightMask``; packed
documents by ``BlockDiagonalMask`` / ``BlockDiagonalCausalMask`` over the B * T tokens.
"""

from __future__ import annotations

from harness.registry import Capabilities, register
from harness.traffic import tiled_exact


def document_lengths(document_ids) -> list[int]:
    """(B, T) document ids -> the lengths of the B * T tokens' documents, in order."""
    import torch

    ids = document_ids.to(torch.int64)
    starts = torch.ones_like(ids, dtype=torch.bool)
    starts[:, 1:] = ids[:, 1:] != ids[:, :-1]
    flat = torch.nonzero(starts.reshape(-1), as_tuple=False).reshape(-1).tolist()
    flat.append(ids.numel())
    return [b - a for a, b in zip(flat[:-1], flat[1:])]


def attention_bias(xops, *, causal: bool, t_q: int, t_k: int, document_ids=None):
    """The xformers attn_bias object for attnbench's conventions (None: no mask)."""
    if document_ids is not None:
        lengths = document_lengths(document_ids)
        kind = xops.fmha.attn_bias.BlockDiagonalCausalMask if causal else \
            xops.fmha.attn_bias.BlockDiagonalMask
        return kind.from_seqlens(lengths)
    if not causal:
        return None
    if t_q == t_k:
        return xops.LowerTriangularMask()
    return xops.fmha.attn_bias.LowerTriangularFromBottomRightMask()


def five_d(q, k, v, *, packed: bool = False):
    """(B, H, T, D) -> xformers' (B, T, Hkv, group, D); k, v expanded as stride-0 views.
    ``packed``: the B * T tokens as one row (1, B * T, ...), for block-diagonal masks."""
    batch, q_heads, t_q, dim = q.shape
    kv_heads, t_k = k.shape[1], k.shape[2]
    group = q_heads // kv_heads
    rows, t_q_r, t_k_r = (1, batch * t_q, batch * t_k) if packed else (batch, t_q, t_k)
    q5 = q.transpose(1, 2).reshape(rows, t_q_r, kv_heads, group, dim)
    k5, v5 = (x.transpose(1, 2).reshape(rows, t_k_r, kv_heads, dim)[:, :, :, None, :]
              .expand(rows, t_k_r, kv_heads, group, dim) for x in (k, v))
    return q5, k5, v5


@register("xformers", framework="torch", family="exact", requires=("xformers",),
          capabilities=Capabilities(
              devices=("cuda",), dtypes=("float32", "float16", "bfloat16"), causal=True,
              key_padding_mask=False, backward=True, gqa=True, q_len=True, documents=True,
              reasons=(("window", "xformers' local-attention biases are not wired (their "
                                  "window convention is not verified against the reference "
                                  "without a GPU)"),
                       ("alibi", "xformers has no ALiBi bias type (a dense bias tensor would "
                                 "not be its native path)")),
              paths=(("gqa", "5-D layout (B, T, Hkv, group, D), k and v expanded as views"),
                     ("causal Tq != Tk", "LowerTriangularFromBottomRightMask"),
                     ("documents", "BlockDiagonalMask / BlockDiagonalCausalMask"))),
          traffic=tiled_exact)
def xformers_attention(q, k, v, *, causal=False, key_padding_mask=None, document_ids=None):
    """memory_efficient_attention with xformers' own bias objects."""
    import xformers.ops as xops

    batch, q_heads, t_q, dim = q.shape
    bias = attention_bias(xops, causal=causal, t_q=t_q, t_k=k.shape[2],
                          document_ids=document_ids)
    # block-diagonal masks take the B * T tokens as one batch row
    q5, k5, v5 = five_d(q, k, v, packed=document_ids is not None)
    out = xops.memory_efficient_attention(q5, k5, v5, attn_bias=bias)
    return out.reshape(batch, t_q, q_heads, dim).transpose(1, 2)
