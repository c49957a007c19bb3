"""xformers.ops.memory_efficient_attention (CUDA; xformers refuses CPU tensors).

Native paths only: GQA/MQA through xformers' 5-D layout (B, T, Hkv, group, D) with k and v
expanded along the group axis (a stride-0 view, no copy; xformers documents it as forward-only);
causal with Tq == Tk by ``LowerTriangularMask``, with Tq != Tk by
``LowerTriangularFromBottomRightMask``; causal windows by
``LowerTriangularFromBottomRightLocalAttentionMask(left + 1)``, two-sided windows by
``LocalAttentionFromBottomRightMask(left, right)`` (both bottom-right, as attnbench's windows);
packed documents by ``BlockDiagonalMask`` / ``BlockDiagonalCausalMask`` over the B * T tokens,
causal windows inside them by ``make_local_attention(left + 1)``. xformers has no ALiBi bias
type: ALiBi goes in as a dense tensor bias (B, Hkv, group, Tq, Tk) that carries the masks too.
Bias objects and tensors are built once per input by ``prepare`` (timed apart, mask_build_s).
"""

from __future__ import annotations

from harness.errors import UnsupportedError
from harness.contract.registry import Capabilities, Query, register
from harness.contract.traits import Traits
from harness.metrics.traffic import Traffic, element_bytes, tiled_exact

# cutlass' tensor-bias kernels need every stride but the last one aligned to 128 bits
BIAS_ALIGN = 16


def document_lengths(document_ids) -> list[int]:
    """(B, T) document ids -> the lengths of the B * T tokens' documents, in order. Raises
    UnsupportedError when a row's document id comes back after another one (attnbench puts
    those tokens in one document; a block-diagonal mask's blocks are contiguous)."""
    import torch

    ids = document_ids.to(torch.int64)
    starts = torch.ones_like(ids, dtype=torch.bool)
    starts[:, 1:] = ids[:, 1:] != ids[:, :-1]
    if int(starts.sum().item()) != sum(int(torch.unique(row).numel()) for row in ids):
        raise UnsupportedError("xformers: a document id reappears after another document in "
                               "its row; BlockDiagonalMask needs contiguous documents")
    flat = torch.nonzero(starts.reshape(-1), as_tuple=False).reshape(-1).tolist()
    flat.append(ids.numel())
    return [b - a for a, b in zip(flat[:-1], flat[1:])]


def attention_bias(xops, *, causal: bool, t_q: int, t_k: int, document_ids=None, window=None,
                   device=None):
    """The xformers attn_bias object for attnbench's conventions (None: no mask).
    ``window`` (left, right), -1 = unbounded; with causal only left matters. ``device``: where
    block-diagonal masks keep their sequence starts (xformers >= 0.0.27; default its "cuda")."""
    fmha_bias = xops.fmha.attn_bias
    left, right = (-1, -1) if window is None else (int(window[0]), int(window[1]))
    if document_ids is not None:
        lengths = document_lengths(document_ids)
        if not causal:
            if left >= 0 or right >= 0:
                raise UnsupportedError(WINDOWED_DOCUMENTS)
            return fmha_bias.BlockDiagonalMask.from_seqlens(lengths, device=device)
        bias = fmha_bias.BlockDiagonalCausalMask.from_seqlens(lengths, device=device)
        return bias if left < 0 else bias.make_local_attention(left + 1)
    if causal:
        # xformers' causal local mask keeps keys i' - W < j <= i': W = left + 1
        if left >= 0:
            return fmha_bias.LowerTriangularFromBottomRightLocalAttentionMask(left + 1)
        if t_q == t_k:
            return xops.LowerTriangularMask()
        return fmha_bias.LowerTriangularFromBottomRightMask()
    if left < 0 and right < 0:
        return None
    # i' - window_left <= j <= i' + window_right; an unbounded side reaches every key
    return fmha_bias.LocalAttentionFromBottomRightMask(
        window_left=left if left >= 0 else t_k, window_right=right if right >= 0 else t_k)


WINDOWED_DOCUMENTS = ("windows inside packed documents without causal: xformers has no "
                      "two-sided local block-diagonal mask for equal-length blocks (its causal "
                      "one is used with --causal)")


def dense_bias(q_heads: int, kv_heads: int, t_q: int, t_k: int, *, dtype, device, causal,
               window=None, alibi_slopes=None, document_ids=None):
    """ALiBi and the masks as one float tensor (B or 1, Hkv, group, Tq, Tk) for the 5-D layout,
    (B or 1, H, Tq, Tk) for the 4-D one: -slope_h * |i' - j| where allowed, -inf elsewhere;
    strides aligned for cutlass."""
    import torch

    rows = torch.arange(t_q, device=device)[:, None] + (t_k - t_q)       # i'
    cols = torch.arange(t_k, device=device)[None, :]
    allowed = torch.ones(t_q, t_k, dtype=torch.bool, device=device)[None]
    if causal:
        allowed = allowed & (cols <= rows)
    if window is not None:
        left, right = int(window[0]), int(window[1])
        if left >= 0:
            allowed = allowed & (cols >= rows - left)
        if right >= 0:
            allowed = allowed & (cols <= rows + right)
    if document_ids is not None:
        ids = document_ids.to(device)
        allowed = allowed & (ids[:, :, None] == ids[:, None, :])         # (B, T, T)
    if not bool(allowed.any(dim=-1).all()):
        raise UnsupportedError("xformers: ALiBi with a mask that leaves a query without keys; "
                               "the dense -inf bias would give NaN, not attnbench's zeros")
    slopes = alibi_slopes.to(device=device, dtype=torch.float32).reshape(kv_heads, -1)
    distance = (rows - cols).abs().to(torch.float32)
    values = -slopes[:, :, None, None] * distance                          # (Hkv, G, Tq, Tk)
    values = torch.where(allowed[:, None, None], values[None], float("-inf"))
    padded = -(-t_k // BIAS_ALIGN) * BIAS_ALIGN
    store = torch.empty(*values.shape[:-1], padded, dtype=dtype, device=device)
    store[..., :t_k] = values
    store = store[..., :t_k]
    return store[:, :, 0] if q_heads == kv_heads else store    # 4-D layout: (B, H, Tq, Tk)


def traffic(point) -> Traffic:
    """tiled_exact, plus the dense ALiBi bias when there is one: its distinct bytes (one copy,
    per batch row only with documents; the batch axis is a stride-0 view otherwise) read once
    by the forward and once more by the backward."""
    base = tiled_exact(point)
    if not getattr(point, "alibi", False):
        return base
    rows = point.batch if getattr(point, "documents", 0) else 1
    bias = float(rows * point.heads * getattr(point, "n_queries", point.seq_len)
                 * point.seq_len * element_bytes(point.dtype))
    reads = {"forward": 1, "backward": 1, "forward_backward": 2}[point.pass_]
    return Traffic(base.bytes_moved + reads * bias,
                   base.model + "; + the dense ALiBi bias (Hq x Tq x Tk, per batch row with "
                                "documents) read by each pass")


def five_d(q, k, v, *, packed: bool = False):
    """(B, H, T, D) -> xformers' layout: (B, T, Hkv, group, D) with k, v expanded as stride-0
    views when Hq > Hkv, plain (B, T, H, D) otherwise (the 5-D layout is forward-only).
    ``packed``: the B * T tokens as one row (1, B * T, ...), for block-diagonal masks."""
    batch, q_heads, t_q, dim = q.shape
    kv_heads, t_k = k.shape[1], k.shape[2]
    group = q_heads // kv_heads
    rows, t_q_r, t_k_r = (1, batch * t_q, batch * t_k) if packed else (batch, t_q, t_k)
    if group == 1:
        return tuple(x.transpose(1, 2).reshape(rows, t, q_heads, x.shape[-1])
                     for x, t in ((q, t_q_r), (k, t_k_r), (v, t_k_r)))
    q5 = q.transpose(1, 2).reshape(rows, t_q_r, kv_heads, group, dim)
    k5, v5 = (x.transpose(1, 2).reshape(rows, t_k_r, kv_heads, x.shape[-1])[:, :, :, None, :]
              .expand(rows, t_k_r, kv_heads, group, x.shape[-1]) for x in (k, v))
    return q5, k5, v5


def constraints(query: Query) -> list[str]:
    reasons = []
    if query.gqa and query.backward:
        reasons.append("xformers' 5-D GQA/MQA layout is forward-only (memory_efficient_attention's "
                       "documentation)")
    if query.window and query.documents and not query.causal and not query.alibi:
        reasons.append(WINDOWED_DOCUMENTS)
    if query.window and not query.causal and not query.alibi and query.head_dim_v:
        reasons.append("two-sided windows (LocalAttentionFromBottomRightMask) run on xformers' "
                       "flash operator only, which needs v's head dim equal to q's and k's")
    if query.window and not query.causal and not query.alibi and \
            query.dtype not in ("float16", "bfloat16"):
        reasons.append("two-sided windows (LocalAttentionFromBottomRightMask) run on xformers' "
                       f"flash operator only: float16/bfloat16, not {query.dtype}")
    return reasons


def prepare(q, k, v, *, causal=False, key_padding_mask=None, window=None, alibi_slopes=None,
            document_ids=None):
    """Build the bias once; returns the call (q, k, v) -> out."""
    import xformers.ops as xops

    batch, q_heads, t_q, dim = q.shape
    kv_heads, t_k = k.shape[1], k.shape[2]
    if alibi_slopes is not None:
        bias = dense_bias(q_heads, kv_heads, t_q, t_k, dtype=q.dtype, device=q.device,
                          causal=causal, window=window, alibi_slopes=alibi_slopes,
                          document_ids=document_ids)
        bias = bias.expand(batch, *bias.shape[1:])
        packed = False
    else:
        bias = attention_bias(xops, causal=causal, t_q=t_q, t_k=t_k,
                              document_ids=document_ids, window=window, device=q.device)
        packed = document_ids is not None   # block-diagonal: the B * T tokens as one row

    def call(q_, k_, v_):
        q5, k5, v5 = five_d(q_, k_, v_, packed=packed)
        out = xops.memory_efficient_attention(q5, k5, v5, attn_bias=bias)
        return out.reshape(batch, t_q, q_heads, v_.shape[-1]).transpose(1, 2)

    return call


@register("xformers", framework="torch", family="exact", requires=("xformers",),
          traits=Traits(memory="tiled"),
          prepare=prepare, constraints=constraints,
          capabilities=Capabilities(
              devices=("cuda",), dtypes=("float32", "float16", "bfloat16"), causal=True,
              key_padding_mask=False, backward=True, gqa=True, q_len=True, window=True,
              alibi=True, documents=True, head_dim_v=True,
              reasons=(("softcap", "memory_efficient_attention has no softcap: cap * "
                                   "tanh(s / cap) is no attn_bias"),
                       ("sinks", "memory_efficient_attention has no sink term; one extra zero "
                                 "key and value with a tensor attn_bias column of sink logits "
                                 "would be exact, but it copies K and V and materialises a "
                                 "Hq x Tq x (Tk + 1) bias in every call"),
                       ("fp8_kv", "xFormers' memory_efficient_attention takes no FP8 inputs")),
              paths=(("gqa", "5-D layout (B, T, Hkv, group, D), k and v expanded as views "
                             "(forward only)"),
                     ("head_dim_v", "v of its own head dim (Kv != K: xformers' cutlass "
                                    "operator; its flash operator refuses it)"),
                     ("causal Tq != Tk", "LowerTriangularFromBottomRightMask"),
                     ("window", "LowerTriangularFromBottomRightLocalAttentionMask (causal), "
                                "LocalAttentionFromBottomRightMask (two-sided, fp16/bf16)"),
                     ("documents", "BlockDiagonalMask / BlockDiagonalCausalMask "
                                   "(+ make_local_attention for causal windows)"),
                     ("alibi", "dense tensor attn_bias (ALiBi and the masks, "
                               "Hq * Tq * Tk values): xformers has no ALiBi bias type"))),
          traffic=traffic)
def xformers_attention(q, k, v, *, causal=False, key_padding_mask=None, window=None,
                       alibi_slopes=None, document_ids=None):
    """memory_efficient_attention with xformers' own bias objects."""
    return prepare(q, k, v, causal=causal, window=window, alibi_slopes=alibi_slopes,
                   document_ids=document_ids)(q, k, v)
