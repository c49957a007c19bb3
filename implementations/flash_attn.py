"""The FlashAttention package (flash_attn_func): CUDA only, fp16/bf16, layout (B, T, H, D).

Native paths only: GQA/MQA by passing k, v with fewer heads (num_heads_k < num_heads); causal
bottom-right (FlashAttention >= 2.1, attnbench's convention); ``window_size=(left, right)``;
``alibi_slopes`` (float32, one per query head); packed documents through
``flash_attn_varlen_func`` with ``cu_seqlens`` from the document boundaries.
"""

from __future__ import annotations

from harness.errors import UnsupportedError
from harness.registry import Capabilities, register
from harness.traffic import tiled_exact

# flash_attn's C++ entry (csrc/flash_attn/flash_api.cpp, mha_fwd) refuses larger head dims with
# "FlashAttention forward only supports head dimension at most 256"
MAX_HEAD_DIM = 256


def document_cu_seqlens(document_ids):
    """(B, T) document ids -> (int32 cumulative lengths of the B * T tokens as packed
    sequences, longest document). A document never spans two batch rows."""
    import torch

    batch, length = document_ids.shape
    ids = document_ids.to(torch.int64)
    starts = torch.ones_like(ids, dtype=torch.bool)
    starts[:, 1:] = ids[:, 1:] != ids[:, :-1]
    flat = torch.nonzero(starts.reshape(-1), as_tuple=False).reshape(-1)
    cu = torch.cat([flat, flat.new_tensor([batch * length])]).to(torch.int32)
    return cu, int((cu[1:] - cu[:-1]).max().item())


def flash_window(window) -> tuple[int, int]:
    return (-1, -1) if window is None else (int(window[0]), int(window[1]))


@register("flash_attn", framework="torch", family="exact", requires=("flash_attn",),
          capabilities=Capabilities(
              devices=("cuda",), dtypes=("float16", "bfloat16"), causal=True,
              key_padding_mask=False, backward=True, gqa=True, q_len=True, window=True,
              alibi=True, documents=True,
              reasons=(("key_padding_mask", "key-padding masks need the varlen API with "
                                            "per-row key lengths (not wired)"),),
              paths=(("gqa", "num_heads_k < num_heads"),
                     ("causal Tq != Tk", "bottom-right (FlashAttention >= 2.1)"),
                     ("window", "window_size=(left, right)"),
                     ("alibi", "alibi_slopes"),
                     ("documents", "flash_attn_varlen_func with cu_seqlens"))),
          traffic=tiled_exact)
def flash_attn(q, k, v, *, causal=False, key_padding_mask=None, window=None, alibi_slopes=None,
               document_ids=None):
    """flash_attn_func (flash_attn_varlen_func for packed documents)."""
    if q.shape[-1] > MAX_HEAD_DIM:
        raise UnsupportedError(f"flash_attn: head dim {q.shape[-1]} > {MAX_HEAD_DIM} "
                               "(FlashAttention's limit)")
    import torch
    from flash_attn import flash_attn_func, flash_attn_varlen_func

    kwargs = {"causal": causal, "window_size": flash_window(window)}
    if alibi_slopes is not None:
        kwargs["alibi_slopes"] = alibi_slopes.to(device=q.device, dtype=torch.float32)
    q_t, k_t, v_t = (x.transpose(1, 2) for x in (q, k, v))     # (B, T, H, D)
    if document_ids is None:
        return flash_attn_func(q_t, k_t, v_t, **kwargs).transpose(1, 2)
    batch, length = document_ids.shape
    cu, longest = document_cu_seqlens(document_ids.to(q.device))
    packed = [x.reshape(batch * length, x.shape[2], x.shape[3]) for x in (q_t, k_t, v_t)]
    out = flash_attn_varlen_func(*packed, cu, cu, longest, longest, **kwargs)
    return out.reshape(batch, length, q.shape[1], q.shape[3]).transpose(1, 2)
