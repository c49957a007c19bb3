"""The FlashAttention package (flash_attn_func): CUDA only, fp16/bf16, layout (B, T, H, D).

Native paths only: GQA/MQA by passing k, v with fewer heads (num_heads_k < num_heads); causal
bottom-right (FlashAttention >= 2.1, attnbench's convention); ``window_size=(left, right)``;
``alibi_slopes`` (float32, one per query head); ``softcap`` (applied to the scaled scores
before ALiBi, attnbench's order); packed documents and key padding through
``flash_attn_varlen_func`` with ``cu_seqlens``, built once per input by ``prepare`` (timed apart
as mask_build_s, as a model builds them once per batch).

Packed documents: each (row, document) is one varlen sequence with as many queries as keys, so
FlashAttention's causal, window and ALiBi positions (relative to the sequence) differ from
attnbench's (absolute in the row) by the same offset on both sides: the allowed pairs and the
distances are the same. Key padding: each row is one sequence of Tq queries and its n kept keys,
which must be a prefix of the row (checked per input). FlashAttention then aligns causal, window
and ALiBi to n, attnbench to Tk, so padding runs without them (a constraint says so).
"""

from __future__ import annotations

from harness.errors import UnsupportedError
from harness.contract.registry import Capabilities, Query, register
from harness.contract.traits import Traits
from harness.metrics.traffic import tiled_exact

# flash_attn's C++ entry (csrc/flash_attn/flash_api.cpp, mha_fwd) refuses larger head dims with
# "FlashAttention forward only supports head dimension at most 256"
MAX_HEAD_DIM = 256


def document_cu_seqlens(document_ids):
    """(B, T) document ids -> (int32 cumulative lengths of the B * T tokens as packed
    sequences, longest document). A document never spans two batch rows. Raises
    UnsupportedError when a row's document id comes back after another one (attnbench puts
    those tokens in one document; varlen sequences are contiguous)."""
    import torch

    batch, length = document_ids.shape
    ids = document_ids.to(torch.int64)
    starts = torch.ones_like(ids, dtype=torch.bool)
    starts[:, 1:] = ids[:, 1:] != ids[:, :-1]
    runs = int(starts.sum().item())
    distinct = sum(int(torch.unique(row).numel()) for row in ids)
    if runs != distinct:
        raise UnsupportedError("flash_attn: a document id reappears after another document in "
                               "its row; flash_attn_varlen_func needs contiguous documents")
    flat = torch.nonzero(starts.reshape(-1), as_tuple=False).reshape(-1)
    cu = torch.cat([flat, flat.new_tensor([batch * length])]).to(torch.int32)
    return cu, int((cu[1:] - cu[:-1]).max().item())


def padding_cu_seqlens(key_padding_mask, t_q: int):
    """(B, Tk) keep mask (True = keep) -> (cu_seqlens_q, cu_seqlens_k, max_seqlen_k): row b
    is one sequence of Tq queries and its n_b kept keys. Raises UnsupportedError unless each
    row's kept keys are a prefix (keys 0..n_b-1), the only padding varlen can express."""
    import torch

    keep = key_padding_mask.to(torch.bool)
    batch, t_k = keep.shape
    kept = keep.sum(dim=1)
    prefix = torch.arange(t_k, device=keep.device)[None, :] < kept[:, None]
    if not bool(torch.equal(prefix, keep)):
        raise UnsupportedError("flash_attn: key_padding_mask keeps keys that are not a prefix "
                               "of their row; flash_attn_varlen_func can drop trailing keys only")
    zero = kept.new_zeros(1)
    cu_k = torch.cat([zero, kept.cumsum(0)]).to(torch.int32)
    cu_q = (torch.arange(batch + 1, device=keep.device) * t_q).to(torch.int32)
    return cu_q, cu_k, int(kept.max().item()) if batch else 0


def flash_window(window) -> tuple[int, int]:
    return (-1, -1) if window is None else (int(window[0]), int(window[1]))


def padding_constraint(query: Query) -> list[str]:
    """Key padding goes through varlen with per-row key lengths n_b, to which FlashAttention
    aligns causal, window and ALiBi positions (attnbench aligns them to Tk)."""
    if not query.key_padding_mask:
        return []
    reasons = []
    for asked, name in ((query.causal, "causal"), (query.window, "window"),
                        (query.alibi, "ALiBi")):
        if asked:
            reasons.append(f"key padding with {name}: flash_attn_varlen_func aligns {name} "
                           "positions to each row's kept-key count, attnbench to Tk")
    if query.documents:
        reasons.append("key padding with packed documents: one varlen sequence per document "
                       "cannot also drop keys inside it")
    return reasons


def prepare(q, k, v, *, causal=False, key_padding_mask=None, window=None, alibi_slopes=None,
            document_ids=None, softcap=None):
    """Build the varlen boundaries and the keywords once; returns the call (q, k, v) -> out."""
    if q.shape[-1] > MAX_HEAD_DIM:
        raise UnsupportedError(f"flash_attn: head dim {q.shape[-1]} > {MAX_HEAD_DIM} "
                               "(FlashAttention's limit)")
    import torch
    from flash_attn import flash_attn_func, flash_attn_varlen_func

    kwargs = {"causal": causal, "window_size": flash_window(window)}
    if softcap:
        kwargs["softcap"] = float(softcap)
    if alibi_slopes is not None:
        kwargs["alibi_slopes"] = alibi_slopes.to(device=q.device, dtype=torch.float32)
    if document_ids is not None and key_padding_mask is not None:
        raise UnsupportedError(padding_constraint(Query(key_padding_mask=True,
                                                        documents=True))[0])
    if key_padding_mask is not None and (causal or window is not None
                                         or alibi_slopes is not None):
        raise UnsupportedError("flash_attn: " + "; ".join(padding_constraint(Query(
            causal=causal, key_padding_mask=True, window=window is not None,
            alibi=alibi_slopes is not None))))
    batch, q_heads, t_q, dim = q.shape
    t_k = k.shape[2]
    if document_ids is None and key_padding_mask is None:
        def dense(q_, k_, v_):
            out = flash_attn_func(*(x.transpose(1, 2) for x in (q_, k_, v_)), **kwargs)
            return out.transpose(1, 2)                      # (B, T, H, D) -> (B, H, T, D)
        return dense
    if document_ids is not None:
        cu_q, longest = document_cu_seqlens(document_ids.to(q.device))
        cu_k, longest_k = cu_q, longest
    else:
        cu_q, cu_k, longest_k = padding_cu_seqlens(key_padding_mask.to(q.device), t_q)
        longest = t_q
    kept_rows = None if key_padding_mask is None else torch.nonzero(   # once, here
        key_padding_mask.to(q.device).bool().reshape(-1), as_tuple=False).reshape(-1)

    def varlen(q_, k_, v_):
        q_p = q_.transpose(1, 2).reshape(batch * t_q, q_heads, dim)
        k_p, v_p = (x.transpose(1, 2).reshape(batch * t_k, x.shape[1], dim) for x in (k_, v_))
        if kept_rows is not None:   # the kept keys, packed (a copy, as unpad_input makes)
            k_p, v_p = k_p.index_select(0, kept_rows), v_p.index_select(0, kept_rows)
        out = flash_attn_varlen_func(q_p, k_p, v_p, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k,
                                     max_seqlen_q=longest, max_seqlen_k=longest_k, **kwargs)
        return out.reshape(batch, t_q, q_heads, dim).transpose(1, 2)

    return varlen


@register("flash_attn", framework="torch", family="exact", requires=("flash_attn",),
          traits=Traits(memory="tiled"),
          prepare=prepare, constraints=padding_constraint,
          capabilities=Capabilities(
              devices=("cuda",), dtypes=("float16", "bfloat16"), causal=True,
              key_padding_mask=True, backward=True, gqa=True, q_len=True, window=True,
              alibi=True, documents=True, softcap=True,
              reasons=(("sinks", "FlashAttention 2 has no sink term (its softmax_lse comes "
                                 "back only with return_attn_probs, which also returns the "
                                 "Tq x Tk probabilities)"),
                       ("paged", "flash_attn_with_kvcache's block_table is not wired here "
                                 "(FA2 needs page_block_size divisible by 256)"),
                       ("ragged", "flash_attn_varlen_func needs packed (total_tokens, H, D) "
                                  "inputs with cu_seqlens; ragged batches reach methods "
                                  "padded, and packing inside the call is not wired"),
                       ("head_dim_v", "FlashAttention 2 needs v's head dim equal to q's and "
                                      "k's (mha_fwd checks v's shape against q's head size)"),
                       ("fp8_kv", "FlashAttention-2 takes float16/bfloat16 only: no FP8 "
                                  "inputs (FP8 forward is FlashAttention-3's, Hopper)")),
              paths=(("gqa", "num_heads_k < num_heads"),
                     ("causal Tq != Tk", "bottom-right (FlashAttention >= 2.1)"),
                     ("window", "window_size=(left, right)"),
                     ("alibi", "alibi_slopes"),
                     ("softcap", "softcap=cap (flash_attn_func and flash_attn_varlen_func)"),
                     ("documents", "flash_attn_varlen_func, one sequence per (row, document), "
                                   "int32 cu_seqlens built once (contiguous documents only)"),
                     ("key_padding_mask", "flash_attn_varlen_func, per-row key lengths "
                                          "(kept keys a prefix of the row, gathered in the call; "
                                          "no causal, window or ALiBi with it)"))),
          traffic=tiled_exact)
def flash_attn(q, k, v, *, causal=False, key_padding_mask=None, window=None, alibi_slopes=None,
               document_ids=None, softcap=None):
    """flash_attn_func (flash_attn_varlen_func for packed documents and key padding)."""
    return prepare(q, k, v, causal=causal, key_padding_mask=key_padding_mask, window=window,
                   alibi_slopes=alibi_slopes, document_ids=document_ids,
                   softcap=softcap)(q, k, v)
