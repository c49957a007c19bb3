"""FlashInfer (the ``flashinfer-python`` package, import ``flashinfer``): CUDA only, fp16/bf16.

Native paths only; which one a call takes depends on its workload (``path_for``):
- one sequence, one query: ``single_decode_with_kv_cache`` (q (Hq, D), k and v in the ``HND``
  layout (Hkv, Tk, D): attnbench's (B, Hkv, Tk, D) row, no copy);
- one sequence, several queries: ``single_prefill_with_kv_cache`` (q ``NHD``, k and v ``HND``);
- a batch (B > 1) or a paged cache: ``BatchDecodeWithPagedKVCacheWrapper`` (one query per
  sequence) or ``BatchPrefillWithPagedKVCacheWrapper``, ``plan()`` once then ``run()``. A dense
  cache (B, Hkv, Tk, D) is already a paged one in the ``HND`` layout with one page of Tk tokens
  per sequence (kv_indptr = 0..B, kv_indices = 0..B-1, kv_last_page_len = Tk), so no copy; a
  paged cache (``page_table``) passes its own pages;
- packed documents: ``BatchPrefillWithRaggedKVCacheWrapper``, one ragged sequence per
  (row, document), qo_indptr = kv_indptr = the documents' boundaries;
- absorbed MLA decode (one latent KV head, D = D_v + 64, v the first D_v of k):
  ``flashinfer.mla.BatchMLAPagedAttentionWrapper`` (``mla_prepare``).

GQA: k and v keep their Hkv heads. Causal: bottom-right (FlashInfer masks kv_idx + qo_len >
kv_len + qo_idx, attnbench's convention). Windows: ``window_left`` (keys i' - left .. i'), so
with causal only: FlashInfer has no right bound. Softcap: ``logits_soft_cap``. FP8 KV: k and v
stored as float8_e4m3fn with per-tensor scales (``k_scale``, ``v_scale``), q in fp16/bf16.

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

# the workspace FlashInfer's examples and docs recommend (split-k partial results)
WORKSPACE_BYTES = 128 * 1024 * 1024
FP8_E4M3_MAX = 448.0

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
             mla: bool = False) -> str:
    """Which FlashInfer entry a workload takes (a key of PATHS)."""
    if mla:
        return "mla"
    if documents:
        return "ragged_prefill"
    if batch == 1 and not paged:
        return "single_decode" if t_q == 1 else "single_prefill"
    return "batch_decode" if t_q == 1 else "batch_prefill"


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


def quantize_fp8(x):
    """Per-tensor float8_e4m3fn: (x / scale in fp8, scale), scale = amax / 448."""
    import torch

    amax = float(x.detach().abs().max().item()) if x.numel() else 0.0
    scale = amax / FP8_E4M3_MAX if amax > 0 else 1.0
    return (x / scale).to(torch.float8_e4m3fn), scale


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
            document_ids=None, softcap: float = 0.0, kv_dtype: str | None = None,
            page_table=None, kv_lens=None, k_pages=None, v_pages=None) -> Prepared:
    """Plan once; returns the run step (q, k, v) -> out (B, Hq, Tq, D_v).

    ``softcap`` > 0: logits_soft_cap. ``kv_dtype="float8_e4m3fn"``: k and v stored in FP8 with
    per-tensor scales (quantised here, once, as a cache is written), q keeps its dtype.
    Paged: ``page_table`` (B, P) int page ids, ``kv_lens`` (B,) key lengths and the page pools
    ``k_pages``/``v_pages`` (num_pages, Hkv, page_size, D), HND; k and v are then not read."""
    if key_padding_mask is not None or alibi_slopes is not None:
        raise UnsupportedError("flashinfer: key padding and ALiBi are not declared")
    import flashinfer
    import torch

    batch, q_heads, t_q, dim = q.shape
    kv_heads, t_k, dim_v = k.shape[1], k.shape[2], v.shape[-1]
    left = window_left(window, causal)
    cap = float(softcap or 0.0)
    out_dtype = q.dtype
    k_scale = v_scale = None
    mla = dim_v != dim and kv_heads == 1 and dim - dim_v == 64 and t_q == 1
    if mla:
        return mla_prepare(q, k, v, causal=causal, window=window, softcap=cap)
    paged = page_table is not None
    if kv_dtype not in (None, "", "float16", "bfloat16", "float32", "float64"):
        if kv_dtype != "float8_e4m3fn":
            raise UnsupportedError(f"flashinfer: kv_dtype {kv_dtype} (FP8 KV is float8_e4m3fn)")
        if document_ids is not None or (t_q > 1 and not paged and batch == 1):
            raise UnsupportedError(FP8_PREFILL)
        k_store, k_scale = quantize_fp8(k_pages if paged else k)
        v_store, v_scale = quantize_fp8(v_pages if paged else v)
    else:
        k_store, v_store = (k_pages, v_pages) if paged else (None, None)
    kv_type = k_store.dtype if k_store is not None else k.dtype
    scales = {} if k_scale is None else {"k_scale": k_scale, "v_scale": v_scale}
    path = path_for(batch=batch, t_q=t_q, documents=document_ids is not None, paged=paged)
    device = q.device

    if path == "single_decode":
        def single_decode(q_, k_, v_):
            k0, v0 = (k_store[0], v_store[0]) if k_store is not None else (k_[0], v_[0])
            out = flashinfer.single_decode_with_kv_cache(
                q_[0, :, 0, :], k0, v0, kv_layout="HND", window_left=left,
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

    # batch decode / prefill over a paged cache (a dense one: one page per sequence)
    if paged:
        page_size = int(k_pages.shape[2])
        kv_indptr, kv_indices, last_len = csr_page_table(page_table.to(device),
                                                         kv_lens, page_size)
    else:
        page_size = t_k
        kv_indptr, kv_indices, last_len = dense_page_table(batch, t_k, device)
    common = dict(q_data_type=q.dtype, kv_data_type=kv_type, window_left=left,
                  logits_soft_cap=cap)
    if path == "batch_decode":
        wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(_workspace(device), "HND")
        plan_s = _timed_plan(lambda: wrapper.plan(
            kv_indptr, kv_indices, last_len, q_heads, kv_heads, dim, page_size,
            o_data_type=out_dtype, **common), device)
    else:
        wrapper = flashinfer.BatchPrefillWithPagedKVCacheWrapper(_workspace(device), "HND")
        qo_indptr = torch.arange(batch + 1, dtype=torch.int32, device=device) * t_q
        plan_s = _timed_plan(lambda: wrapper.plan(
            qo_indptr, kv_indptr, kv_indices, last_len, q_heads, kv_heads, dim, page_size,
            head_dim_vo=dim_v, causal=causal, o_data_type=out_dtype, **common), device)

    def batch_run(q_, k_, v_):
        cache = (k_store, v_store) if k_store is not None else (k_, v_)
        q_p = q_.transpose(1, 2).reshape(batch * t_q, q_heads, dim)
        out = wrapper.run(q_p, cache, **scales)
        return out.reshape(batch, t_q, q_heads, dim_v).transpose(1, 2)
    return Prepared(batch_run, path, {"plan_s": plan_s})


FP8_PREFILL = ("flashinfer: FP8 KV with fp16/bf16 queries runs on the decode paths and the "
               "batch prefill wrapper (kv_data_type); single_prefill_with_kv_cache and the "
               "ragged wrapper need q in FP8 too")


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
              alibi=False, documents=True,
              reasons=(("cpu", "needs CUDA: FlashInfer's kernels are CUDA only"),
                       ("backward", "FlashInfer is inference-only: no backward pass"),
                       ("key_padding_mask", "not declared: FlashInfer expresses shorter "
                                            "sequences as per-request lengths (the lengths "
                                            "axis), not a key mask"),
                       ("alibi", "FlashInfer's ALIBI pos_encoding_mode uses its own slopes and "
                                 "the signed distance kv_idx - qo_idx, not attnbench's "
                                 "-slope * |i' - j|"),
                       ("sinks", "sinks on FlashInfer's paged run() are taken by its "
                                 "trtllm-gen and cute-dsl backends only, not the fa2/fa3 paths "
                                 "planned here")),
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
                     ("kv_dtype", "float8_e4m3fn k/v, per-tensor k_scale/v_scale (decode, "
                                  "batch prefill)"),
                     ("mla", PATHS["mla"] + " (absorbed decode, one latent KV head)"),
                     ("plan", "plan() in prepare: mask_build_s, plan_s"))),
          traffic=tiled_exact)
def flashinfer_attention(q, k, v, *, causal=False, key_padding_mask=None, window=None,
                         alibi_slopes=None, document_ids=None):
    """FlashInfer's single/batch prefill and decode kernels (plan() then run())."""
    return prepare(q, k, v, causal=causal, key_padding_mask=key_padding_mask, window=window,
                   alibi_slopes=alibi_slopes, document_ids=document_ids)(q, k, v)
