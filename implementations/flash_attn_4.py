"""FlashAttention-4 (the ``flash-attn-4`` package, ``flash_attn.cute``: CuTe DSL kernels for
Hopper and Blackwell). CUDA only, fp16/bf16, layout (B, T, H, D); ``flash_attn`` (FA2) stays
its own method.

Native paths only: ``flash_attn.cute.flash_attn_func`` for a dense cache and
``flash_attn.cute.flash_attn_varlen_func`` for packed documents (``cu_seqlens_q/k``, one
sequence per (row, document)) and a paged cache (``page_table`` (B, pages) int32 with
``seqused_k`` = the key lengths; attnbench's pools (num_pages, page_size, Hkv, D) are FA-4's
page layout, passed as they are). Both return ``(out, lse)``. GQA: k, v with fewer heads
(``pack_gqa`` left to FA-4's heuristic). Causal: bottom-right (per sequence, against its
seqused_k). Windows: ``window_size=(left, right)`` with None for an unbounded side. Softcap:
``softcap``. Sinks: ``learnable_sink`` (float32, one logit per query head, added to each row's
denominator). D_v != D: v of its own head dim (``head_dim_reason``). Ragged batches: the key
lengths of a paged cache (``seqused_k``), every sequence with Tq queries (decode); FP8: not
taken (``FP8_KV``).

Devices: compute capability 9.x (Hopper, SM90) and 10.x / 11.x / 12.x (Blackwell: SM100,
SM103, SM110, SM120), the families ``flash_attn.cute`` writes kernels for; an older device is
refused (its SM8x path is a fallback; FA2 is ``flash_attn``). Head dims per family as
``_validate_head_dims`` checks them (``head_dim_limits``). The kernels are compiled by the CuTe
DSL at the first call of each configuration: ``compiles`` (compile_time_s recorded apart).
"""

from __future__ import annotations

import importlib.util

from harness.errors import UnsupportedError
from harness.contract.probe import Availability
from harness.contract.registry import Capabilities, Query, register
from harness.contract.traits import Traits
from harness.metrics.traffic import tiled_exact
from implementations._torch_paging import refuse_ragged

SUPPORTED_MAJORS = (9, 10, 11, 12)
COMPILE_MODE = ("CuTe DSL JIT: one compilation per kernel configuration (head dims, dtype, "
                "causal/local, softcap, sinks, GQA packing), cached in the process")


def device_capability(device: str) -> tuple[int, int]:
    import torch

    return tuple(torch.cuda.get_device_capability(device))  # type: ignore[return-value]


def capability_reason(major: int, minor: int) -> str | None:
    """Why FA-4 does not run on this compute capability (None: it does)."""
    if major in SUPPORTED_MAJORS:
        return None
    return (f"flash_attn_4: compute capability {major}.{minor}; FlashAttention-4's CuTe DSL "
            "kernels target Hopper (9.x) and Blackwell (10.x, 11.x, 12.x) (FA2 is flash_attn)")


def head_dim_reason(major: int, dim: int, dim_v: int) -> str | None:
    """The head dims FA-4's interface accepts per family (_validate_head_dims), fp16/bf16
    (alignment 8): SM90 8..256; SM100/SM110 8..128, (192, 128), (256, 256) or D_v = 512 with
    D = 64 or D = D_v. SM12x: not validated by the interface."""
    aligned = dim % 8 == 0 and dim_v % 8 == 0
    if major == 9:
        ok = 8 <= dim <= 256 and 8 <= dim_v <= 256
    elif major in (10, 11):
        ok = ((8 <= dim <= 128 and 8 <= dim_v <= 128) or (dim, dim_v) in ((192, 128), (256, 256))
              or (dim_v == 512 and dim in (64, dim_v)))
    else:
        ok = True
    if ok and aligned:
        return None
    return (f"flash_attn_4: head dims (D={dim}, D_v={dim_v}) not supported on compute "
            f"capability {major}.x")


def fa4_window(window) -> tuple[int | None, int | None]:
    """attnbench's (left, right), -1 unbounded -> FA-4's (left, right), None unbounded."""
    if window is None:
        return None, None
    left, right = int(window[0]), int(window[1])
    return (left if left >= 0 else None, right if right >= 0 else None)


def document_cu_seqlens(document_ids):
    """(B, T) document ids -> (int32 boundaries of the B * T tokens as packed sequences,
    longest). Raises UnsupportedError for a document id that comes back in its row."""
    import torch

    ids = document_ids.to(torch.int64)
    starts = torch.ones_like(ids, dtype=torch.bool)
    starts[:, 1:] = ids[:, 1:] != ids[:, :-1]
    if int(starts.sum().item()) != sum(int(torch.unique(row).numel()) for row in ids):
        raise UnsupportedError("flash_attn_4: a document id reappears after another document "
                               "in its row; varlen sequences are contiguous")
    flat = torch.nonzero(starts.reshape(-1), as_tuple=False).reshape(-1)
    cu = torch.cat([flat, flat.new_tensor([ids.numel()])]).to(torch.int32)
    return cu, int((cu[1:] - cu[:-1]).max().item())


def prepare(q, k, v, *, causal=False, key_padding_mask=None, window=None, alibi_slopes=None,
            document_ids=None, softcap=None, sinks=None, q_lengths=None, kv_lengths=None,
            page_table=None, kv_dtype="", k_scale=None, v_scale=None):
    """Check the device and head dims, build the varlen boundaries, the sink logits and the
    keywords once; returns the call (q, k, v) -> out (B, Hq, Tq, D_v).
    ``sinks``: (Hq,) logits. Paged: k and v are the pools (num_pages, page_size, Hkv, D),
    ``page_table`` (B, P) int32, ``kv_lengths`` (B,) int32. Ragged: ``q_lengths`` and
    ``kv_lengths`` of a paged cache, every q_length = Tq."""
    if key_padding_mask is not None or alibi_slopes is not None:
        raise UnsupportedError("flash_attn_4: key padding and ALiBi are not declared")
    if k_scale is not None or k.element_size() == 1:
        raise UnsupportedError(FP8_KV)
    import torch

    if q.is_cuda:
        major, minor = device_capability(str(q.device))
        for reason in (capability_reason(major, minor),
                       head_dim_reason(major, q.shape[-1], v.shape[-1])):
            if reason:
                raise UnsupportedError(reason)
    from flash_attn.cute import flash_attn_func, flash_attn_varlen_func

    paged = page_table is not None
    check_ragged(q_lengths, kv_lengths, t_q=q.shape[2], paged=paged)
    batch, q_heads, t_q, dim = q.shape
    dim_v = v.shape[-1]
    kwargs = {"causal": causal, "window_size": fa4_window(window),
              "softcap": float(softcap or 0.0)}
    if sinks is not None:
        kwargs["learnable_sink"] = torch.as_tensor(sinks).to(device=q.device,
                                                             dtype=torch.float32).contiguous()
    if paged:
        table = page_table.to(device=q.device, dtype=torch.int32).contiguous()
        used = kv_lengths.to(device=q.device, dtype=torch.int32).contiguous()

        def paged_call(q_, k_, v_):          # k_, v_: the pools, FA-4's page layout
            out, _ = flash_attn_varlen_func(q_.transpose(1, 2), k_, v_, seqused_k=used,
                                            page_table=table, **kwargs)
            return out.transpose(1, 2)
        return paged_call
    if document_ids is None:
        def dense(q_, k_, v_):
            out, _ = flash_attn_func(*(x.transpose(1, 2) for x in (q_, k_, v_)), **kwargs)
            return out.transpose(1, 2)                     # (B, T, H, D) -> (B, H, T, D)
        return dense
    t_k = k.shape[2]
    cu, longest = document_cu_seqlens(document_ids.to(q.device))

    def varlen(q_, k_, v_):
        q_p = q_.transpose(1, 2).reshape(batch * t_q, q_heads, dim)
        k_p = k_.transpose(1, 2).reshape(batch * t_k, k_.shape[1], dim)
        v_p = v_.transpose(1, 2).reshape(batch * t_k, v_.shape[1], dim_v)
        out, _ = flash_attn_varlen_func(q_p, k_p, v_p, cu_seqlens_q=cu, cu_seqlens_k=cu,
                                        max_seqlen_q=longest, max_seqlen_k=longest, **kwargs)
        return out.reshape(batch, t_q, q_heads, dim_v).transpose(1, 2)
    return varlen


def check_ragged(q_lengths, kv_lengths, *, t_q: int, paged: bool) -> None:
    """Raise UnsupportedError for a ragged batch FA-4 does not take natively here (the
    constraints refuse the same statically; a point's own lengths are checked here)."""
    refuse_ragged(q_lengths, kv_lengths, t_q=t_q, paged=paged, dense_reason=RAGGED_DENSE,
                  queries_reason=RAGGED_QUERIES)


FP8_KV = ("flash_attn_4: FA-4's FP8 path takes q, k and v all in one FP8 dtype (SM100 only, "
          "descale tensors per (batch, kv head)); the kv_dtype axis keeps q in fp16/bf16")
RAGGED_DENSE = ("flash_attn_4: a ragged batch on a dense cache: attnbench right-aligns each "
                "sequence's keys in its padded row and FA-4's seqused_k uses the first keys of "
                "a row: run it with --page-size (page_table + seqused_k)")
RAGGED_QUERIES = ("flash_attn_4: ragged query lengths (prefill or mixed batches): FA-4 takes "
                  "them packed (cu_seqlens_q) and attnbench's padded query rows would need a "
                  "copy; ragged batches run here as decode (every sequence Tq queries)")


def probe(device: str, dtype: str) -> Availability:
    """flash_attn.cute importable (flash-attn-4, not only FA2's flash_attn) and a Hopper or
    Blackwell device."""
    try:
        found = importlib.util.find_spec("flash_attn.cute") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        return Availability(False, "flash_attn_4: package flash-attn-4 (flash_attn.cute) not "
                                   "installed")
    reason = capability_reason(*device_capability(device))
    return Availability(False, reason) if reason else Availability(True)


def constraints(query: Query) -> list[str]:
    reasons = []
    if query.documents and query.q_len:
        reasons.append("flash_attn_4: packed documents need Tq == Tk")
    if query.documents and query.paged:
        reasons.append("flash_attn_4: page_table is not supported with cu_seqlens_k (FA-4's "
                       "interface): packed documents take a contiguous cache")
    if query.ragged and not query.paged:
        reasons.append(RAGGED_DENSE)
    if query.ragged and not query.q_len:
        reasons.append(RAGGED_QUERIES)
    return reasons


@register("flash_attn_4", framework="torch", family="exact", requires=("flash_attn",),
          traits=Traits(memory="tiled", compile_scope="config"), prepare=prepare,
          constraints=constraints,
          probe=probe, compiles=True, compile_mode=COMPILE_MODE,
          capabilities=Capabilities(
              devices=("cuda",), dtypes=("float16", "bfloat16"), causal=True,
              key_padding_mask=False, backward=True, gqa=True, q_len=True, window=True,
              alibi=False, documents=True, softcap=True, sinks=True, paged=True,
              ragged=True, head_dim_v=True, fp8_kv=False,
              reasons=(("cpu", "needs CUDA: FlashAttention-4's CuTe DSL kernels run on Hopper "
                               "and Blackwell GPUs"),
                       ("fp8_kv", FP8_KV),
                       ("key_padding_mask", "not declared: FA-4 takes per-sequence key lengths "
                                            "(seqused_k, the lengths axis) and aligns causal "
                                            "and windows to them, not to Tk"),
                       ("alibi", "FA-4 has no ALiBi argument (only a CuTe DSL score_mod)")),
              paths=(("dense", "flash_attn.cute.flash_attn_func"),
                     ("gqa", "num_heads_k < num_heads (pack_gqa: FA-4's heuristic)"),
                     ("causal Tq != Tk", "bottom-right"),
                     ("window", "window_size=(left, right), None = unbounded"),
                     ("documents", "flash_attn.cute.flash_attn_varlen_func, cu_seqlens, one "
                                   "sequence per (row, document)"),
                     ("softcap", "softcap"),
                     ("sinks", "learnable_sink (float32, one per query head)"),
                     ("head_dim_v", "v of its own head dim (per family: head_dim_reason)"),
                     ("paged", "flash_attn_varlen_func page_table + seqused_k, attnbench's "
                               "pools (num_pages, page_size, Hkv, D) as they are"),
                     ("ragged", "seqused_k of a paged cache; decode: every sequence Tq "
                                "queries"))),
          traffic=tiled_exact)
def flash_attn_4(q, k, v, *, causal=False, key_padding_mask=None, window=None,
                 alibi_slopes=None, document_ids=None, softcap=None, sinks=None,
                 q_lengths=None, kv_lengths=None, page_table=None, kv_dtype="", k_scale=None,
                 v_scale=None):
    """flash_attn.cute.flash_attn_func (flash_attn_varlen_func for documents and pages)."""
    return prepare(q, k, v, causal=causal, key_padding_mask=key_padding_mask, window=window,
                   alibi_slopes=alibi_slopes, document_ids=document_ids, softcap=softcap,
                   sinks=sinks, q_lengths=q_lengths, kv_lengths=kv_lengths,
                   page_table=page_table, kv_dtype=kv_dtype, k_scale=k_scale,
                   v_scale=v_scale)(q, k, v)
