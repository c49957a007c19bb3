"""FlashInfer (the ``flashinfer-python`` package, import ``flashinfer``): CUDA only, fp16/bf16.

Native paths only; which one a call takes depends on its workload (``path_for``):
- one sequence, one query: ``single_decode_with_kv_cache`` (q (Hq, D), k and v in the ``HND``
  layout (Hkv, Tk, D): attnbench's (B, Hkv, Tk, D) row, no copy);
- one sequence, several queries: ``single_prefill_with_kv_cache`` (q ``NHD``, k and v ``HND``);
- a batch (B > 1), a paged cache, D_v != D on one query (the decode kernels have one head dim)
  or FP8 k, v on several queries (single prefill takes FP8 only with q in FP8 too):
  ``BatchDecodeWithPagedKVCacheWrapper`` (one query per sequence, D_v == D) or
  ``BatchPrefillWithPagedKVCacheWrapper`` (``head_dim_vo``), ``plan()`` once then ``run()``. A
  dense cache (B, Hkv, Tk, D) is already a paged one in the ``HND`` layout with one page of Tk
  tokens per sequence (kv_indptr = 0..B, kv_indices = 0..B-1, kv_last_page_len = Tk), so no
  copy; a paged cache arrives as attnbench's pools (num_pages, page_size, Hkv, D), FlashInfer's
  ``NHD`` page layout, passed as they are with the page table in CSR form (kv_indptr,
  kv_indices, kv_last_page_len from ``page_table`` and ``kv_lengths``);
- packed documents: ``BatchPrefillWithRaggedKVCacheWrapper``, one ragged sequence per
  (row, document), qo_indptr = kv_indptr = the documents' boundaries;
- absorbed MLA decode (one latent KV head, D = D_v + 64, v the first D_v of k):
  ``flashinfer.mla.BatchMLAPagedAttentionWrapper`` (``mla_prepare``).

GQA: k and v keep their Hkv heads. Causal: bottom-right (FlashInfer masks kv_idx + qo_len >
kv_len + qo_idx, attnbench's convention, per request with its own kv_len). Windows:
``window_left`` (keys i' - left .. i'), so with causal only: FlashInfer has no right bound.
Softcap: ``logits_soft_cap``. FP8 KV: k and v arrive as float8 tensors with their per-tensor
``k_scale`` and ``v_scale`` (harness.contract.quant), which FlashInfer takes as they are
(k_scale folded into sm_scale, v_scale on the output); q stays fp16/bf16. Ragged batches: the
per-request key lengths of a paged cache (kv_last_page_len), every request with the same number
of queries (decode); a dense, right-aligned padded batch or varying query lengths have no
native form here (constraints).

The wrappers' ``plan()`` (page table to the GPU, work partition) is FlashInfer's per-batch
set-up that a server runs once per step for all layers: ``prepare`` does it, the runner times
it apart (mask_build_s), and the plan() call alone is reported as ``plan_s``
(``Prepared.prepare_timings``).
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from harness.errors import UnsupportedError
from harness.contract.registry import Capabilities, Query, register
from harness.contract.traits import Traits
from harness.metrics.traffic import tiled_exact
from implementations._torch_paging import refuse_ragged

# the workspace FlashInfer's examples and docs recommend (split-k partial results)
WORKSPACE_BYTES = 128 * 1024 * 1024

PATHS = {
    "single_decode": "flashinfer.single_decode_with_kv_cache",
    "single_prefill": "flashinfer.single_prefill_with_kv_cache",
    "batch_decode": "BatchDecodeWithPagedKVCacheWrapper.plan() / run()",
    "batch_prefill": "BatchPrefillWithPagedKVCacheWrapper.plan() / run()",
    "ragged_prefill": "BatchPrefillWithRaggedKVCacheWrapper.plan() / run()",
    "mla": "flashinfer.mla.BatchMLAPagedAttentionWrapper.plan() / run()",
}


@dataclass
class Prepared:
    """The run step of a prepared call: ``(q, k, v) -> out``; ``path`` names the FlashInfer
    entry (PATHS), ``prepare_timings`` the set-up's parts the record keeps (plan_s)."""

    run: Callable[..., Any]
    path: str
    prepare_timings: dict[str, float] = field(default_factory=dict)

    def __call__(self, q, k, v):
        return self.run(q, k, v)


def path_for(*, batch: int, t_q: int, documents: bool = False, paged: bool = False,
             mla: bool = False, fp8: bool = False, same_dims: bool = True) -> str:
    """Which FlashInfer entry a workload takes (a key of PATHS). ``same_dims``: D_v == D (the
    decode kernels have one head dim); ``fp8``: FP8 k, v (single prefill takes them only with
    an FP8 q)."""
    if mla:
        return "mla"
    if documents:
        return "ragged_prefill"
    decode = t_q == 1 and same_dims
    if batch == 1 and not paged and (decode or (t_q > 1 and not fp8)):
        return "single_decode" if decode else "single_prefill"
    return "batch_decode" if decode else "batch_prefill"


def window_left(window, causal: bool) -> int:
    """attnbench's (left, right) window as FlashInfer's window_left (-1: none). FlashInfer
    bounds the left side only; without causal a bounded right side cannot be expressed."""
    if window is None:
        return -1
    left, right = int(window[0]), int(window[1])
    if not causal and right >= 0:
        raise UnsupportedError(TWO_SIDED)
    return left


TWO_SIDED = ("flashinfer: windows without causal: FlashInfer's window_left bounds the left "
             "side only (no right bound)")


def document_indptr(document_ids):
    """(B, T) document ids -> int32 boundaries of the B * T tokens as ragged sequences. Raises
    UnsupportedError when a row's document id comes back after another one (a ragged
    sequence is contiguous)."""
    import torch

    ids = document_ids.to(torch.int64)
    starts = torch.ones_like(ids, dtype=torch.bool)
    starts[:, 1:] = ids[:, 1:] != ids[:, :-1]
    if int(starts.sum().item()) != sum(int(torch.unique(row).numel()) for row in ids):
        raise UnsupportedError("flashinfer: a document id reappears after another document in "
                               "its row; ragged sequences are contiguous")
    flat = torch.nonzero(starts.reshape(-1), as_tuple=False).reshape(-1)
    return torch.cat([flat, flat.new_tensor([ids.numel()])]).to(torch.int32)


def dense_page_table(batch: int, t_k: int, device):
    """A dense (B, Hkv, Tk, D) cache as FlashInfer's paged one (HND, one page of Tk tokens per
    sequence): (kv_indptr, kv_indices, kv_last_page_len), int32."""
    import torch

    indptr = torch.arange(batch + 1, dtype=torch.int32, device=device)
    return indptr, indptr[:-1].clone(), torch.full((batch,), t_k, dtype=torch.int32,
                                                   device=device)


def csr_page_table(page_table, kv_lens, page_size: int):
    """(B, P) page table (page ids, in each sequence's order) and the B key lengths ->
    FlashInfer's (kv_indptr, kv_indices, kv_last_page_len), int32: sequence b uses its first
    ceil(len_b / page_size) pages, the last one holding len_b - (n_b - 1) * page_size tokens."""
    import torch

    lens = [int(n) for n in kv_lens.tolist()]
    counts = [max(1, -(-n // page_size)) for n in lens]
    device = page_table.device
    indptr = torch.tensor([0] + list(itertools.accumulate(counts)),
                          dtype=torch.int32, device=device)
    indices = torch.cat([page_table[b, :c] for b, c in enumerate(counts)]).to(torch.int32)
    last = torch.tensor([n - (c - 1) * page_size for n, c in zip(lens, counts)],
                        dtype=torch.int32, device=device)
    return indptr, indices, last


def _workspace(device):
    import torch

    return torch.zeros(WORKSPACE_BYTES, dtype=torch.uint8, device=device)


def _synchronize(device) -> None:
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize(device)


def _timed_plan(plan: Callable[[], None], device) -> float:
    start = time.perf_counter()
    plan()
    _synchronize(device)
    return time.perf_counter() - start


def prepare(q, k, v, *, causal=False, key_padding_mask=None, window=None, alibi_slopes=None,
            document_ids=None, softcap=None, sinks=None, q_lengths=None, kv_lengths=None,
            page_table=None, kv_dtype="", k_scale=None, v_scale=None) -> Prepared:
    """Plan once; returns the run step (q, k, v) -> out (B, Hq, Tq, D_v).

    ``softcap`` > 0: logits_soft_cap. FP8: k and v float8 with ``k_scale``/``v_scale``
    (floats), q keeps its dtype. Paged: k and v are the pools (num_pages, page_size, Hkv, D)
    (NHD), ``page_table`` (B, P) int32 and ``kv_lengths`` (B,) int32. Ragged: ``q_lengths``
    and ``kv_lengths`` (B,) of a paged cache, every q_length = Tq."""
    if key_padding_mask is not None or alibi_slopes is not None:
        raise UnsupportedError("flashinfer: key padding and ALiBi are not declared")
    if sinks is not None:
        raise UnsupportedError(SINKS)
    import flashinfer
    import torch

    paged = page_table is not None
    batch, q_heads, t_q, dim = q.shape
    kv_heads = k.shape[2] if paged else k.shape[1]
    t_k, dim_v = (0 if paged else k.shape[2]), v.shape[-1]
    check_ragged(q_lengths, kv_lengths, t_q=t_q, paged=paged)
    left = window_left(window, causal)
    cap = float(softcap or 0.0)
    out_dtype = q.dtype
    fp8 = k_scale is not None or k.element_size() == 1
    scales = {} if not fp8 else {"k_scale": float(1.0 if k_scale is None else k_scale),
                                 "v_scale": float(1.0 if v_scale is None else v_scale)}
    mla = not paged and dim_v != dim and kv_heads == 1 and dim - dim_v == 64 and t_q == 1
    if mla:
        if fp8:
            raise UnsupportedError(MLA_FP8)
        return mla_prepare(q, k, v, causal=causal, window=window, softcap=cap)
    if fp8 and document_ids is not None:
        raise UnsupportedError(FP8_PREFILL)
    path = path_for(batch=batch, t_q=t_q, documents=document_ids is not None, paged=paged,
                    fp8=fp8, same_dims=dim_v == dim)
    device = q.device

    if path == "single_decode":
        def single_decode(q_, k_, v_):
            out = flashinfer.single_decode_with_kv_cache(
                q_[0, :, 0, :], k_[0], v_[0], kv_layout="HND", window_left=left,
                logits_soft_cap=cap, **scales)
            return out[None, :, None, :]                       # (Hq, D) -> (1, Hq, 1, D)
        return Prepared(single_decode, path)

    if path == "single_prefill":
        def single_prefill(q_, k_, v_):
            out = flashinfer.single_prefill_with_kv_cache(
                q_[0].transpose(0, 1), k_[0], v_[0], causal=causal, kv_layout="HND",
                window_left=left, logits_soft_cap=cap)
            return out.transpose(0, 1)[None]                   # (Tq, Hq, Dv) -> (1, Hq, Tq, Dv)
        return Prepared(single_prefill, path)

    if path == "ragged_prefill":
        indptr = document_indptr(document_ids.to(device))
        wrapper = flashinfer.BatchPrefillWithRaggedKVCacheWrapper(_workspace(device), "NHD")
        plan_s = _timed_plan(lambda: wrapper.plan(
            indptr, indptr, q_heads, kv_heads, dim, head_dim_vo=dim_v, causal=causal,
            window_left=left, logits_soft_cap=cap, q_data_type=q.dtype,
            kv_data_type=k.dtype), device)

        def ragged(q_, k_, v_):
            q_p = q_.transpose(1, 2).reshape(batch * t_q, q_heads, dim)
            k_p = k_.transpose(1, 2).reshape(batch * t_k, kv_heads, dim)
            v_p = v_.transpose(1, 2).reshape(batch * t_k, kv_heads, dim_v)
            out = wrapper.run(q_p, k_p, v_p)
            return out.reshape(batch, t_q, q_heads, dim_v).transpose(1, 2)
        return Prepared(ragged, path, {"plan_s": plan_s})

    # batch decode / prefill over a paged cache: attnbench's pools (NHD), or the dense cache
    # as one HND page of Tk tokens per sequence
    if paged:
        layout, page_size = "NHD", int(k.shape[1])
        kv_indptr, kv_indices, last_len = csr_page_table(page_table.to(device), kv_lengths,
                                                         page_size)
    else:
        layout, page_size = "HND", t_k
        kv_indptr, kv_indices, last_len = dense_page_table(batch, t_k, device)
    common = dict(q_data_type=q.dtype, kv_data_type=k.dtype, window_left=left,
                  logits_soft_cap=cap)
    if path == "batch_decode":
        wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(_workspace(device), layout)
        plan_s = _timed_plan(lambda: wrapper.plan(
            kv_indptr, kv_indices, last_len, q_heads, kv_heads, dim, page_size,
            o_data_type=out_dtype, **common), device)
    else:
        wrapper = flashinfer.BatchPrefillWithPagedKVCacheWrapper(_workspace(device), layout)
        qo_indptr = torch.arange(batch + 1, dtype=torch.int32, device=device) * t_q
        plan_s = _timed_plan(lambda: wrapper.plan(
            qo_indptr, kv_indptr, kv_indices, last_len, q_heads, kv_heads, dim, page_size,
            head_dim_vo=dim_v, causal=causal, o_data_type=out_dtype, **common), device)

    def batch_run(q_, k_, v_):
        q_p = q_.transpose(1, 2).reshape(batch * t_q, q_heads, dim)
        out = wrapper.run(q_p, (k_, v_), **scales)
        return out.reshape(batch, t_q, q_heads, dim_v).transpose(1, 2)
    return Prepared(batch_run, path, {"plan_s": plan_s})


def check_ragged(q_lengths, kv_lengths, *, t_q: int, paged: bool) -> None:
    """Raise UnsupportedError for a ragged batch FlashInfer does not take natively here (the
    constraints refuse the same statically; a point's own lengths are checked here)."""
    refuse_ragged(q_lengths, kv_lengths, t_q=t_q, paged=paged, dense_reason=RAGGED_DENSE,
                  queries_reason=RAGGED_QUERIES)


SINKS = ("sinks on FlashInfer's paged run() are taken by its trtllm-gen and cute-dsl backends "
         "only, not the fa2/fa3 paths planned here")
RAGGED_DENSE = ("flashinfer: a ragged batch on a dense cache: attnbench right-aligns each "
                "request's keys in its padded row and FlashInfer reads a request's keys from "
                "its first page slot on (per-request lengths are its paged cache's "
                "kv_last_page_len): run it with --page-size")
RAGGED_QUERIES = ("flashinfer: ragged query lengths (prefill or mixed batches): FlashInfer "
                  "takes them packed (qo_indptr) and attnbench's padded query rows would need "
                  "a copy; ragged batches run here as decode (every request Tq queries)")
MLA_FP8 = ("flashinfer: FP8 on the MLA wrapper (ckv_scale/kpe_scale of a compressed cache) is "
           "not the per-tensor k_scale/v_scale of the kv_dtype axis")


FP8_PREFILL = ("flashinfer: FP8 KV with fp16/bf16 queries runs on the decode paths and the "
               "paged prefill wrapper (kv_data_type); the ragged wrapper (packed documents) "
               "needs q in FP8 too")


def mla_prepare(q, k, v, *, causal=False, window=None, softcap: float = 0.0) -> Prepared:
    """Absorbed MLA decode: q (B, Hq, 1, D_v + 64), one latent KV head k (B, 1, Tk, D_v + 64)
    whose first D_v are the values (v must equal k[..., :D_v]: the kernel reads its values from
    the compressed cache). The cache is split into its ckv / kpe pages (one page of Tk tokens
    per sequence) once, here, as an MLA cache is stored; sm_scale 1/sqrt(D) as the reference."""
    import flashinfer
    import torch

    if window is not None or softcap:
        raise UnsupportedError("flashinfer: the MLA wrapper takes no window or softcap")
    batch, q_heads, t_q, dim = q.shape
    t_k, dim_v = k.shape[2], v.shape[-1]
    if not torch.equal(v[:, 0], k[:, 0, :, :dim_v]):
        raise UnsupportedError(MLA_VALUES)
    device = q.device
    ckv = k[:, 0, :, :dim_v].contiguous()              # (pages = B, page_size = Tk, D_v)
    kpe = k[:, 0, :, dim_v:].contiguous()              # (B, Tk, 64)
    wrapper = flashinfer.mla.BatchMLAPagedAttentionWrapper(_workspace(device))
    qo_indptr = torch.arange(batch + 1, dtype=torch.int32, device=device) * t_q
    kv_indptr = torch.arange(batch + 1, dtype=torch.int32, device=device)
    kv_lens = torch.full((batch,), t_k, dtype=torch.int32, device=device)
    plan_s = _timed_plan(lambda: wrapper.plan(
        qo_indptr, kv_indptr, kv_indptr[:-1].clone(), kv_lens, q_heads, dim_v, dim - dim_v,
        t_k, causal, 1.0 / math.sqrt(dim), q.dtype, k.dtype), device)

    def run(q_, k_, v_):
        q_p = q_.transpose(1, 2).reshape(batch * t_q, q_heads, dim)
        out = wrapper.run(q_p[..., :dim_v], q_p[..., dim_v:], ckv, kpe)
        return out.reshape(batch, t_q, q_heads, dim_v).transpose(1, 2)
    return Prepared(run, "mla", {"plan_s": plan_s})


MLA_VALUES = ("flashinfer: MLA (BatchMLAPagedAttentionWrapper) reads the values from the "
              "latent cache: v must be k[..., :D_v]")


def constraints(query: Query) -> list[str]:
    reasons = []
    if query.window and not query.causal:
        reasons.append(TWO_SIDED)
    if query.documents and query.q_len:
        reasons.append("flashinfer: packed documents need Tq == Tk")
    if query.documents and query.paged:
        reasons.append("flashinfer: packed documents run on the ragged wrapper, which takes "
                       "contiguous k, v, not a paged cache")
    if query.documents and query.has("fp8_kv"):
        reasons.append(FP8_PREFILL)
    if query.ragged and not query.paged:
        reasons.append(RAGGED_DENSE)
    if query.ragged and not query.q_len:
        reasons.append(RAGGED_QUERIES)
    return reasons


def probe(device: str, dtype: str):
    """FlashInfer's kernels need compute capability >= 7.5 (sm75: its JIT targets)."""
    from harness.contract.probe import Availability

    major, minor = device_capability(device)
    if (major, minor) < (7, 5):
        return Availability(False, f"flashinfer: compute capability {major}.{minor}; "
                                   "FlashInfer needs >= 7.5")
    return Availability(True)


def device_capability(device: str) -> tuple[int, int]:
    import torch

    return tuple(torch.cuda.get_device_capability(device))  # type: ignore[return-value]


@register("flashinfer", framework="torch", family="exact", requires=("flashinfer",),
          traits=Traits(memory="tiled"), prepare=prepare, constraints=constraints,
          probe=probe,
          capabilities=Capabilities(
              devices=("cuda",), dtypes=("float16", "bfloat16"), causal=True,
              key_padding_mask=False, backward=False, gqa=True, q_len=True, window=True,
              alibi=False, documents=True, softcap=True, sinks=False, paged=True, ragged=True,
              head_dim_v=True, fp8_kv=True,
              reasons=(("cpu", "needs CUDA: FlashInfer's kernels are CUDA only"),
                       ("backward", "FlashInfer is inference-only: no backward pass"),
                       ("key_padding_mask", "not declared: FlashInfer expresses shorter "
                                            "sequences as per-request lengths (the lengths "
                                            "axis), not a key mask"),
                       ("alibi", "FlashInfer's ALIBI pos_encoding_mode uses its own slopes and "
                                 "the signed distance kv_idx - qo_idx, not attnbench's "
                                 "-slope * |i' - j|"),
                       ("sinks", SINKS)),
              paths=(("decode, B = 1", PATHS["single_decode"]),
                     ("prefill, B = 1", PATHS["single_prefill"]),
                     ("decode, B > 1 or paged", PATHS["batch_decode"]
                      + " (dense cache: HND, one page of Tk tokens per sequence, no copy)"),
                     ("prefill, B > 1 or paged", PATHS["batch_prefill"]),
                     ("documents", PATHS["ragged_prefill"] + ", one sequence per (row, "
                                   "document)"),
                     ("gqa", "num_kv_heads < num_qo_heads"),
                     ("causal Tq != Tk", "bottom-right (FlashInfer's causal mask)"),
                     ("window", "window_left (with causal)"),
                     ("softcap", "logits_soft_cap"),
                     ("head_dim_v", "head_dim_vo of the prefill kernels (one query with "
                                    "D_v != D: " + PATHS["batch_prefill"] + ")"),
                     ("paged", "attnbench's pools as FlashInfer's NHD paged cache (no copy), "
                               "page table as kv_indptr / kv_indices / kv_last_page_len"),
                     ("ragged", "per-request key lengths of the paged cache "
                                "(kv_last_page_len); decode: every request Tq queries"),
                     ("fp8_kv", "float8 k/v with per-tensor k_scale/v_scale (decode paths "
                                "and " + PATHS["batch_prefill"] + ")"),
                     ("mla", PATHS["mla"] + " (absorbed decode, one latent KV head)"),
                     ("plan", "plan() in prepare: mask_build_s, plan_s"))),
          traffic=tiled_exact)
def flashinfer_attention(q, k, v, *, causal=False, key_padding_mask=None, window=None,
                         alibi_slopes=None, document_ids=None, softcap=None, sinks=None,
                         q_lengths=None, kv_lengths=None, page_table=None, kv_dtype="",
                         k_scale=None, v_scale=None):
    """FlashInfer's single/batch prefill and decode kernels (plan() then run())."""
    return prepare(q, k, v, causal=causal, key_padding_mask=key_padding_mask, window=window,
                   alibi_slopes=alibi_slopes, document_ids=document_ids, softcap=softcap,
                   sinks=sinks, q_lengths=q_lengths, kv_lengths=kv_lengths,
                   page_table=page_table, kv_dtype=kv_dtype, k_scale=k_scale,
                   v_scale=v_scale)(q, k, v)
