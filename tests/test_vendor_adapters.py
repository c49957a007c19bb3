"""FlashInfer and FlashAttention-4 adapters (CUDA only) checked on the CPU with fake packages.

The fakes take the real packages' signatures (flashinfer 0.6.18: flashinfer/prefill.py,
decode.py, mla/_core.py; flash-attention's flash_attn/cute/interface.py) and compute the
float64 answer from exactly the native arguments the adapter passes, with each library's own
semantics read from its source: FlashInfer masks ``kv_idx + qo_len > kv_len + qo_idx``
(causal) and ``kv_idx + qo_len + window_left < kv_len + qo_idx`` (window, include/flashinfer/
attention/variants.cuh), softcap ``cap * tanh(sm_scale * s / cap)``, k_scale folded into
sm_scale and v_scale on the output, pages gathered through kv_indptr / kv_indices /
kv_last_page_len in the HND or NHD layout; FA-4's window (left, right) with None unbounded
and causal setting right to 0 (_resolve_causal_local_window), learnable_sink adding
exp(sink) to each row's denominator, and both entry points returning (out, lse). A wrong
layout, boundary or argument shows as a wrong output against attnbench's reference.
"""

from __future__ import annotations

import itertools
import sys
import types

import numpy as np
import pytest
import torch

import harness
from harness.contract.masking import packed_document_ids
from harness.contract.reference import exact_attention
from harness.contract.registry import Query
from harness.errors import UnsupportedError
from implementations import flash_attn_4 as fa4
from implementations import flashinfer as fi


def _f64(x):
    return x.detach().to(torch.float64)


def _attend(q, k, v, allowed, *, sm_scale, cap=0.0, sinks=None):
    """q (Tq, Hq, D), k (Tk, Hkv, D), v (Tk, Hkv, Dv), allowed (Tq, Tk) bool -> (Tq, Hq, Dv),
    float64; GQA by sharing; a row without keys (and without a sink) is zeros."""
    q, k, v = _f64(q), _f64(k), _f64(v)
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q, k) * sm_scale
    if cap > 0:
        scores = cap * torch.tanh(scores / cap)
    scores = scores.masked_fill(~allowed[None], float("-inf"))
    if sinks is not None:
        sink = _f64(sinks)[:, None, None].expand(-1, scores.shape[1], 1)
        scores = torch.cat([scores, sink], dim=-1)
        v = torch.cat([v, torch.zeros_like(v[:1])], dim=0)
    top = scores.amax(dim=-1, keepdim=True)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    weights = torch.exp(scores - top)
    total = weights.sum(dim=-1, keepdim=True)
    weights = torch.where(total > 0, weights / total.clamp_min(1e-300), weights)
    return torch.einsum("hqk,khd->qhd", weights, v)


# ---- FlashInfer -----------------------------------------------------------------------------

def _fi_allowed(qo_len, kv_len, causal, window_left):
    qo = torch.arange(qo_len)[:, None]
    kv = torch.arange(kv_len)[None, :]
    allowed = torch.ones(qo_len, kv_len, dtype=torch.bool)
    if causal:
        allowed &= ~(kv + qo_len > kv_len + qo)
    if window_left >= 0:
        allowed &= kv + qo_len + window_left >= kv_len + qo
    return allowed


def _fi_scales(sm_scale, head_dim, k_scale, v_scale):
    scale = (1.0 / np.sqrt(head_dim) if sm_scale is None else sm_scale)
    return scale * (1.0 if k_scale is None else k_scale), (1.0 if v_scale is None else v_scale)


def _nhd(x, layout):
    return x if layout == "NHD" else x.transpose(0, 1)     # HND (H, N, D) -> (N, H, D)


def _gather_pages(cache, indptr, indices, last_len, page_size, layout, b):
    """One request's tokens (len, H, D) from a page pool (pages, page_size, H, D) (NHD) or
    (pages, H, page_size, D) (HND)."""
    pages = indices[int(indptr[b]):int(indptr[b + 1])].tolist()
    tokens = [(cache[p] if layout == "NHD" else cache[p].transpose(0, 1)) for p in pages]
    whole = torch.cat(tokens)
    return whole[:(len(pages) - 1) * page_size + int(last_len[b])]


def _fake_flashinfer(calls):
    module = types.ModuleType("flashinfer")

    def single_prefill_with_kv_cache(q, k, v, scale_q=None, scale_k=None, scale_v=None,
                                     o_dtype=None, custom_mask=None, packed_custom_mask=None,
                                     causal=False, kv_layout="NHD", pos_encoding_mode="NONE",
                                     use_fp16_qk_reduction=False, sm_scale=None,
                                     window_left=-1, logits_soft_cap=None, rope_scale=None,
                                     rope_theta=None, backend="auto", return_lse=False,
                                     kv_cache_sf=None, k_scale=None, v_scale=None):
        # FP8 k, v only with an FP8 q (its scale_q/k/v path): the adapter's assumption
        assert k.dtype == q.dtype or q.element_size() == 1
        calls.append({"fn": "single_prefill", "kv_layout": kv_layout, "k": k.shape,
                      "window_left": window_left, "cap": logits_soft_cap, "causal": causal})
        k, v = _nhd(k, kv_layout), _nhd(v, kv_layout)
        scale, out_scale = _fi_scales(sm_scale, q.shape[-1], k_scale, v_scale)
        out = _attend(q, k, v, _fi_allowed(q.shape[0], k.shape[0], causal, window_left),
                      sm_scale=scale, cap=logits_soft_cap or 0.0) * out_scale
        return out.to(o_dtype or q.dtype)

    def single_decode_with_kv_cache(q, k, v, kv_layout="NHD", pos_encoding_mode="NONE",
                                    use_tensor_cores=False, q_scale=None, k_scale=None,
                                    v_scale=None, window_left=-1, logits_soft_cap=None,
                                    sm_scale=None, rope_scale=None, rope_theta=None,
                                    return_lse=False):
        assert v.shape[-1] == q.shape[-1]      # head_dim_vo = head_dim (out = empty_like(q))
        calls.append({"fn": "single_decode", "kv_layout": kv_layout, "k": k.shape,
                      "k_dtype": k.dtype, "window_left": window_left, "cap": logits_soft_cap})
        k, v = _nhd(k, kv_layout), _nhd(v, kv_layout)
        scale, out_scale = _fi_scales(sm_scale, q.shape[-1], k_scale, v_scale)
        out = _attend(q[None], k, v, _fi_allowed(1, k.shape[0], False, window_left),
                      sm_scale=scale, cap=logits_soft_cap or 0.0)[0] * out_scale
        return out.to(q.dtype)

    class _Paged:
        """What both paged wrappers share: the pages of each request, gathered."""

        def __init__(self, float_workspace_buffer, kv_layout="NHD", *args, **kwargs):
            assert float_workspace_buffer.dtype == torch.uint8
            self._kv_layout = kv_layout

        def _run(self, q, paged_kv_cache, q_lens, k_scale, v_scale, sinks):
            k_cache, v_cache = paged_kv_cache
            p = self._plan
            scale, out_scale = _fi_scales(p["sm_scale"], p["head_dim"], k_scale, v_scale)
            outs, start = [], 0
            for b, q_len in enumerate(q_lens):
                k = _gather_pages(k_cache, p["indptr"], p["indices"], p["last"],
                                  p["page_size"], self._kv_layout, b)
                v = _gather_pages(v_cache, p["indptr"], p["indices"], p["last"],
                                  p["page_size"], self._kv_layout, b)
                allowed = _fi_allowed(q_len, k.shape[0], p["causal"], p["window_left"])
                outs.append(_attend(q[start:start + q_len], k, v, allowed, sm_scale=scale,
                                    cap=p["cap"] or 0.0, sinks=sinks) * out_scale)
                start += q_len
            return torch.cat(outs).to(p["o_dtype"] or q.dtype)

    class BatchDecodeWithPagedKVCacheWrapper(_Paged):
        def __init__(self, float_workspace_buffer, kv_layout="NHD", use_cuda_graph=False,
                     use_tensor_cores=False, paged_kv_indptr_buffer=None,
                     paged_kv_indices_buffer=None, paged_kv_last_page_len_buffer=None,
                     backend="auto", jit_args=None):
            super().__init__(float_workspace_buffer, kv_layout)

        def plan(self, indptr, indices, last_page_len, num_qo_heads, num_kv_heads, head_dim,
                 page_size, *deprecated_positional_args, pos_encoding_mode="NONE",
                 window_left=-1, window_right=0, logits_soft_cap=None, q_data_type="float16",
                 kv_data_type=None, o_data_type=None, data_type=None, sm_scale=None,
                 rope_scale=None, rope_theta=None, non_blocking=True, block_tables=None,
                 seq_lens=None, fixed_split_size=None, disable_split_kv=False,
                 q_len_per_req=1):
            assert not deprecated_positional_args
            assert indptr.dtype == indices.dtype == last_page_len.dtype == torch.int32
            self._plan = dict(indptr=indptr, indices=indices, last=last_page_len,
                              head_dim=head_dim, page_size=page_size, causal=False,
                              window_left=window_left, cap=logits_soft_cap,
                              sm_scale=sm_scale, o_dtype=o_data_type, kv_dtype=kv_data_type)
            calls.append({"fn": "batch_decode.plan", "page_size": page_size,
                          "kv_layout": self._kv_layout, "kv_data_type": kv_data_type,
                          "num_kv_heads": num_kv_heads, "window_left": window_left,
                          "cap": logits_soft_cap})

        def run(self, q, paged_kv_cache, *args, q_scale=None, k_scale=None, v_scale=None,
                out=None, lse=None, return_lse=False, enable_pdl=None, window_left=None,
                sinks=None, q_len_per_req=None, skip_softmax_threshold_scale_factor=None,
                kv_cache_sf=None):
            assert paged_kv_cache[0].dtype == (self._plan["kv_dtype"] or q.dtype)
            assert paged_kv_cache[1].shape[-1] == self._plan["head_dim"]   # one head dim
            calls.append({"fn": "batch_decode.run"})
            return self._run(q, paged_kv_cache, [1] * q.shape[0], k_scale, v_scale, sinks)

    class BatchPrefillWithPagedKVCacheWrapper(_Paged):
        def __init__(self, float_workspace_buffer, kv_layout="NHD", use_cuda_graph=False,
                     qo_indptr_buf=None, paged_kv_indptr_buf=None, paged_kv_indices_buf=None,
                     paged_kv_last_page_len_buf=None, custom_mask_buf=None,
                     mask_indptr_buf=None, backend="auto", jit_args=None, jit_kwargs=None):
            super().__init__(float_workspace_buffer, kv_layout)

        def plan(self, qo_indptr, paged_kv_indptr, paged_kv_indices, paged_kv_last_page_len,
                 num_qo_heads, num_kv_heads, head_dim_qk, page_size, head_dim_vo=None,
                 custom_mask=None, packed_custom_mask=None, causal=False,
                 pos_encoding_mode="NONE", use_fp16_qk_reduction=False, sm_scale=None,
                 window_left=-1, logits_soft_cap=None, rope_scale=None, rope_theta=None,
                 q_data_type="float16", kv_data_type=None, o_data_type=None,
                 non_blocking=True, prefix_len_ptr=None, token_pos_in_items_ptr=None,
                 token_pos_in_items_len=0, max_item_len_ptr=None, seq_lens=None,
                 seq_lens_q=None, block_tables=None, max_token_per_sequence=None,
                 max_sequence_kv=None, fixed_split_size=None, disable_split_kv=False):
            assert qo_indptr.dtype == paged_kv_indptr.dtype == torch.int32
            self._qo_indptr = qo_indptr
            self._plan = dict(indptr=paged_kv_indptr, indices=paged_kv_indices,
                              last=paged_kv_last_page_len, head_dim=head_dim_qk,
                              page_size=page_size, causal=causal, window_left=window_left,
                              cap=logits_soft_cap, sm_scale=sm_scale, o_dtype=o_data_type,
                              kv_dtype=kv_data_type)
            calls.append({"fn": "batch_prefill.plan", "page_size": page_size,
                          "kv_layout": self._kv_layout, "causal": causal,
                          "num_kv_heads": num_kv_heads, "kv_data_type": kv_data_type})

        def run(self, q, paged_kv_cache, *args, q_scale=None, k_scale=None, v_scale=None,
                out=None, lse=None, return_lse=False, enable_pdl=None, window_left=None,
                sinks=None, kv_cache_sf=None, skip_softmax_threshold_scale_factor=None,
                use_fp16_softmax=None, uses_spcompress=None):
            calls.append({"fn": "batch_prefill.run"})
            lens = (self._qo_indptr[1:] - self._qo_indptr[:-1]).tolist()
            return self._run(q, paged_kv_cache, lens, k_scale, v_scale, sinks)

    class BatchPrefillWithRaggedKVCacheWrapper:
        def __init__(self, float_workspace_buffer, kv_layout="NHD", use_cuda_graph=False,
                     qo_indptr_buf=None, kv_indptr_buf=None, custom_mask_buf=None,
                     mask_indptr_buf=None, backend="auto", jit_args=None, jit_kwargs=None):
            self._kv_layout = kv_layout

        def plan(self, qo_indptr, kv_indptr, num_qo_heads, num_kv_heads, head_dim_qk,
                 head_dim_vo=None, custom_mask=None, packed_custom_mask=None, causal=False,
                 pos_encoding_mode="NONE", use_fp16_qk_reduction=False, window_left=-1,
                 logits_soft_cap=None, sm_scale=None, rope_scale=None, rope_theta=None,
                 q_data_type="float16", kv_data_type=None, o_data_type=None,
                 non_blocking=True, prefix_len_ptr=None, token_pos_in_items_ptr=None,
                 token_pos_in_items_len=0, max_item_len_ptr=None, fixed_split_size=None,
                 disable_split_kv=False, seq_lens=None, seq_lens_q=None,
                 max_token_per_sequence=None, max_sequence_kv=None, v_indptr=None):
            assert qo_indptr.dtype == kv_indptr.dtype == torch.int32
            self._p = dict(qo=qo_indptr.tolist(), kv=kv_indptr.tolist(), causal=causal,
                           window_left=window_left, cap=logits_soft_cap or 0.0,
                           sm_scale=sm_scale)
            calls.append({"fn": "ragged.plan", "qo_indptr": qo_indptr.tolist(),
                          "causal": causal, "window_left": window_left})

        def run(self, q, k, v, *args, q_scale=None, k_scale=None, v_scale=None, o_scale=None,
                out=None, lse=None, return_lse=False, enable_pdl=None, kv_cache_sf=None):
            p = self._p
            assert self._kv_layout == "NHD" and q.shape[0] == p["qo"][-1] == k.shape[0]
            scale = p["sm_scale"] or 1.0 / np.sqrt(q.shape[-1])
            pieces = []
            for qa, qb, ka, kb in zip(p["qo"][:-1], p["qo"][1:], p["kv"][:-1], p["kv"][1:]):
                allowed = _fi_allowed(qb - qa, kb - ka, p["causal"], p["window_left"])
                pieces.append(_attend(q[qa:qb], k[ka:kb], v[ka:kb], allowed, sm_scale=scale,
                                      cap=p["cap"]))
            calls.append({"fn": "ragged.run"})
            return torch.cat(pieces).to(q.dtype)

    class BatchMLAPagedAttentionWrapper:
        def __init__(self, float_workspace_buffer, use_cuda_graph=False, qo_indptr=None,
                     kv_indptr=None, kv_indices=None, kv_len_arr=None, backend="auto"):
            pass

        def plan(self, qo_indptr, kv_indptr, kv_indices, kv_len_arr, num_heads, head_dim_ckv,
                 head_dim_kpe, page_size, causal, sm_scale, q_data_type, kv_data_type,
                 use_profiler=False):
            self._p = dict(qo=qo_indptr.tolist(), indptr=kv_indptr, indices=kv_indices,
                           lens=kv_len_arr.tolist(), page_size=page_size, causal=causal,
                           sm_scale=sm_scale, ckv=head_dim_ckv, kpe=head_dim_kpe)
            calls.append({"fn": "mla.plan", "head_dim_ckv": head_dim_ckv,
                          "head_dim_kpe": head_dim_kpe, "num_heads": num_heads})

        def run(self, q_nope, q_pe, ckv_cache, kpe_cache, out=None, lse=None,
                return_lse=False, profiler_buffer=None, kv_len=None, page_table=None,
                return_lse_base_on_e=False, o_scale=None, *, ckv_scale=None,
                ckv_scale_arr=None, kpe_scale=None):
            p = self._p
            assert q_nope.shape[-1] == ckv_cache.shape[-1] == p["ckv"]
            assert q_pe.shape[-1] == kpe_cache.shape[-1] == p["kpe"]
            outs = []
            for b, (qa, qb) in enumerate(zip(p["qo"][:-1], p["qo"][1:])):
                pages = p["indices"][int(p["indptr"][b]):int(p["indptr"][b + 1])].tolist()
                ckv = torch.cat([ckv_cache[i] for i in pages])[:p["lens"][b]]
                kpe = torch.cat([kpe_cache[i] for i in pages])[:p["lens"][b]]
                q = torch.cat([q_nope[qa:qb], q_pe[qa:qb]], dim=-1)
                k = torch.cat([ckv, kpe], dim=-1)[:, None]
                allowed = _fi_allowed(qb - qa, k.shape[0], p["causal"], -1)
                outs.append(_attend(q, k, ckv[:, None], allowed, sm_scale=p["sm_scale"]))
            calls.append({"fn": "mla.run"})
            return torch.cat(outs).to(q_nope.dtype)

    for obj in (single_prefill_with_kv_cache, single_decode_with_kv_cache,
                BatchDecodeWithPagedKVCacheWrapper, BatchPrefillWithPagedKVCacheWrapper,
                BatchPrefillWithRaggedKVCacheWrapper):
        setattr(module, obj.__name__, obj)
    module.mla = types.SimpleNamespace(BatchMLAPagedAttentionWrapper=BatchMLAPagedAttentionWrapper)
    return module


@pytest.fixture
def flashinfer(monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "flashinfer", _fake_flashinfer(calls))
    monkeypatch.setattr(fi, "WORKSPACE_BYTES", 16)
    return calls


def _inputs(b=2, hq=4, hkv=2, tq=13, tk=13, d=8, dv=None, seed=0):
    rng = np.random.default_rng(seed)
    return (torch.from_numpy(rng.standard_normal((b, hq, tq, d))),
            torch.from_numpy(rng.standard_normal((b, hkv, tk, d))),
            torch.from_numpy(rng.standard_normal((b, hkv, tk, dv or d))))


def _reference(q, k, v, *, causal=False, window=None, **extra):
    """attnbench's float64 reference (harness.contract.reference.exact_attention: softcap,
    sinks and ragged lengths included) of torch inputs."""
    q, k, v = (x.numpy() for x in (_f64(q), _f64(k), _f64(v)))
    return exact_attention(q, k, v, causal=causal, window=window, **extra)


def _close(out, ref, tol=1e-10):
    return out.shape == ref.shape and np.abs(_f64(out).numpy() - ref).max() < tol


@pytest.mark.parametrize("kw, path", [
    (dict(b=1, tq=1), "single_decode"),
    (dict(b=1, tq=1, causal=True, window=(4, 0)), "single_decode"),
    (dict(b=1, tq=5, causal=True), "single_prefill"),
    (dict(b=1, causal=True, window=(3, 0)), "single_prefill"),
    (dict(b=3, tq=1), "batch_decode"),
    (dict(b=3, tq=1, causal=True, window=(5, 0)), "batch_decode"),
    (dict(b=2, tq=4, causal=True), "batch_prefill"),
    (dict(b=2, causal=False), "batch_prefill"),
    (dict(b=2, causal=True, window=(2, 0)), "batch_prefill"),
])
def test_flashinfer_paths_give_the_reference(kw, path, flashinfer):
    kw = dict(kw)
    causal, window = kw.pop("causal", False), kw.pop("window", None)
    q, k, v = _inputs(**kw)
    prepared = fi.prepare(q, k, v, causal=causal, window=window)
    assert prepared.path == path
    assert _close(prepared(q, k, v), _reference(q, k, v, causal=causal, window=window))
    assert all(c.get("kv_layout", "HND") == "HND" for c in flashinfer)   # no relayout
    if path.startswith("batch"):
        plan = flashinfer[0]
        assert plan["page_size"] == k.shape[2] and plan["num_kv_heads"] == 2   # GQA, 1 page
        assert set(prepared.prepare_timings) == {"plan_s"}
    else:
        assert prepared.prepare_timings == {}


def test_flashinfer_plan_is_in_prepare_and_run_in_the_call(flashinfer):
    q, k, v = _inputs(b=2, tq=1)
    prepared = fi.prepare(q, k, v, causal=True)
    assert [c["fn"] for c in flashinfer] == ["batch_decode.plan"]
    prepared(q, k, v)
    prepared(q, k, v)
    assert [c["fn"] for c in flashinfer] == ["batch_decode.plan"] + ["batch_decode.run"] * 2
    assert prepared.prepare_timings["plan_s"] >= 0.0


def test_flashinfer_plan_time_reaches_the_record(flashinfer):
    """The runner's prepare timing (mask_build_s) takes the plan() part along as plan_s."""
    from harness.contract.frameworks.torch_fw import make_workload
    from harness.contract.records import Point

    impl = harness.get("flashinfer")
    point = Point("flashinfer", seq_len=16, head_dim=8, heads=2, batch=2, dtype="float32",
                  device="cpu", causal=True, q_len=1)
    work = make_workload(impl, point)
    assert work.info["plan_s"] <= work.info["mask_build_s"]
    assert work.run().shape == (2, 2, 1, 8)
    from harness.contract.records import TimeMetrics
    assert "plan_s" in TimeMetrics.__dataclass_fields__


@pytest.mark.parametrize("causal, window", [(True, None), (False, None), (True, (2, 0))])
def test_flashinfer_documents_through_the_ragged_wrapper(causal, window, flashinfer):
    q, k, v = _inputs(b=2, tq=13)
    ids = packed_document_ids(2, 13, 3, seed=1)
    ref = _reference(q, k, v, causal=causal, window=window, document_ids=ids)
    prepared = fi.prepare(q, k, v, causal=causal, window=window,
                          document_ids=torch.from_numpy(ids))
    assert prepared.path == "ragged_prefill" and _close(prepared(q, k, v), ref)
    assert flashinfer[0]["qo_indptr"] == fi.document_indptr(torch.from_numpy(ids)).tolist()


def test_flashinfer_softcap_on_every_path(flashinfer):
    for b, tq in ((1, 1), (1, 6), (2, 1), (2, 6)):
        q, k, v = (x * 4 for x in _inputs(b=b, tq=tq))        # large logits: the cap bites
        out = fi.prepare(q, k, v, causal=True, softcap=5.0)(q, k, v)
        ref = _reference(q, k, v, causal=True, softcap=5.0)
        assert _close(out, ref), (b, tq)
        assert not _close(out, _reference(q, k, v, causal=True))
    assert {c["cap"] for c in flashinfer if "cap" in c} == {5.0}


def _paged(k, v, page_size, kv_lengths=None):
    """attnbench's paged cache of a dense right-aligned k, v: the pools (num_pages,
    page_size, Hkv, D) (NHD, pages in a seeded shuffled order) and the keywords page_table
    (B, P) and kv_lengths (B,), int32 (harness.contract.paging)."""
    from harness.contract.frameworks.torch_fw import paged_torch

    return paged_torch(k, v, page_size, kv_lengths)


@pytest.mark.parametrize("tq", [1, 4])
def test_flashinfer_paged_cache_through_the_page_table(tq, flashinfer):
    q, k, v = _inputs(b=2, tq=tq, tk=13)
    k_pool, v_pool, paged = _paged(k, v, page_size=4)
    prepared = fi.prepare(q, k_pool, v_pool, causal=True, **paged)
    assert prepared.path == ("batch_decode" if tq == 1 else "batch_prefill")
    assert _close(prepared(q, k_pool, v_pool), _reference(q, k, v, causal=True))
    assert flashinfer[0]["page_size"] == 4 and flashinfer[0]["kv_layout"] == "NHD"
    indptr, indices, last = fi.csr_page_table(paged["page_table"], paged["kv_lengths"], 4)
    assert indptr.tolist() == [0, 4, 8] and last.tolist() == [1, 1]
    assert indices.tolist() == paged["page_table"].reshape(-1).tolist()


def test_flashinfer_ragged_decode_on_a_paged_cache(flashinfer):
    """Per-request key lengths through kv_last_page_len; the padded dense batch is the
    reference (right-aligned keys, as harness.contract.ragged lays them out)."""
    q, k, v = _inputs(b=3, tq=1, tk=13)
    kv_lengths = torch.tensor([13, 5, 9], dtype=torch.int32)
    q_lengths = torch.ones(3, dtype=torch.int32)
    k_pool, v_pool, paged = _paged(k, v, page_size=4, kv_lengths=kv_lengths.numpy())
    prepared = fi.prepare(q, k_pool, v_pool, causal=True, window=(3, 0), q_lengths=q_lengths,
                          **paged)
    ref = _reference(q, k, v, causal=True, window=(3, 0), q_lengths=q_lengths.numpy(),
                     kv_lengths=kv_lengths.numpy())
    assert prepared.path == "batch_decode" and _close(prepared(q, k_pool, v_pool), ref)
    last = [c for c in flashinfer if c["fn"] == "batch_decode.plan"]
    assert last and last[0]["page_size"] == 4
    with pytest.raises(UnsupportedError, match="dense cache"):
        fi.prepare(q, k, v, q_lengths=q_lengths, kv_lengths=kv_lengths)
    q, k, v = _inputs(b=2, tq=4, tk=13)
    k_pool, v_pool, paged = _paged(k, v, 4, np.array([13, 3]))
    with pytest.raises(UnsupportedError, match="query lengths"):
        fi.prepare(q, k_pool, v_pool, q_lengths=torch.tensor([4, 3], dtype=torch.int32),
                   **paged)


def _fp8(x):
    """attnbench's FP8 k or v (harness.contract.frameworks.torch_fw.quantise_kv)."""
    from harness.contract.frameworks.torch_fw import quantise_kv

    return quantise_kv(x, "float8_e4m3fn")


@pytest.mark.parametrize("b, tq, paged, dv, path", [
    (1, 1, False, None, "single_decode"), (2, 1, False, None, "batch_decode"),
    (1, 5, False, None, "batch_prefill"), (2, 5, False, None, "batch_prefill"),
    (2, 1, True, None, "batch_decode"), (2, 5, True, 4, "batch_prefill")])
def test_flashinfer_takes_the_given_fp8_tensors_and_scales(b, tq, paged, dv, path,
                                                           flashinfer):
    q, k, v = _inputs(b=b, tq=tq, dv=dv)
    (k8, k_scale), (v8, v_scale) = _fp8(k), _fp8(v)
    extra = {}
    call_k, call_v = k8, v8
    if paged:
        call_k, call_v, extra = _paged(k8, v8, page_size=4)
    prepared = fi.prepare(q, call_k, call_v, causal=True, k_scale=k_scale, v_scale=v_scale,
                          kv_dtype="float8_e4m3fn", **extra)
    out = prepared(q, call_k, call_v)
    # the float64 answer on the dequantised cache, and close to the unquantised one
    assert prepared.path == path
    assert _close(out, _reference(q, _f64(k8) * k_scale, _f64(v8) * v_scale, causal=True))
    assert np.abs(_f64(out).numpy() - _reference(q, k, v, causal=True)).max() < 0.1
    kinds = {c.get("k_dtype", c.get("kv_data_type")) for c in flashinfer
             if "plan" in c["fn"] or c["fn"] == "single_decode"}
    assert kinds == {torch.float8_e4m3fn}


def test_flashinfer_fp8_refused_on_documents_and_mla(flashinfer):
    q, k, v = _inputs(b=2)
    (k8, ks), (v8, vs) = _fp8(k), _fp8(v)
    ids = torch.from_numpy(packed_document_ids(2, 13, 2, seed=0))
    with pytest.raises(UnsupportedError, match="FP8"):
        fi.prepare(q, k8, v8, k_scale=ks, v_scale=vs, document_ids=ids)
    q, k, _ = _inputs(b=2, hq=4, hkv=1, tq=1, d=64 + 16)
    (k8, ks), (v8, vs) = _fp8(k), _fp8(k[..., :16])
    with pytest.raises(UnsupportedError, match="MLA"):
        fi.prepare(q, k8, v8, k_scale=ks, v_scale=vs)


def test_flashinfer_head_dim_v_on_one_query_takes_the_prefill_wrapper(flashinfer):
    """The decode kernels have one head dim (head_dim_vo = head_dim): D_v != D on one query
    runs through the paged prefill wrapper's head_dim_vo, dense and paged."""
    for b in (1, 2):
        q, k, v = _inputs(b=b, tq=1, d=12, dv=8)
        prepared = fi.prepare(q, k, v, causal=True, softcap=3.0)
        assert prepared.path == "batch_prefill"
        assert _close(prepared(q, k, v), _reference(q, k, v, causal=True, softcap=3.0))
    k_pool, v_pool, paged = _paged(k, v, page_size=4)
    prepared = fi.prepare(q, k_pool, v_pool, causal=True, **paged)
    assert _close(prepared(q, k_pool, v_pool), _reference(q, k, v, causal=True))


def test_flashinfer_head_dim_v_and_absorbed_mla(flashinfer):
    q, k, v = _inputs(b=2, tq=3, d=12, dv=8)                   # D_v != D: batch prefill
    assert _close(fi.prepare(q, k, v, causal=True)(q, k, v),
                  _reference(q, k, v, causal=True))
    # absorbed MLA decode: one latent head, D = D_v + 64, v = the latent part of k
    q, k, _ = _inputs(b=2, hq=4, hkv=1, tq=1, d=64 + 16)
    v = k[..., :16]
    prepared = fi.prepare(q, k, v, causal=True)
    assert prepared.path == "mla" and _close(prepared(q, k, v), _reference(q, k, v))
    plan = [c for c in flashinfer if c["fn"] == "mla.plan"][0]
    assert (plan["head_dim_ckv"], plan["head_dim_kpe"], plan["num_heads"]) == (16, 64, 4)
    with pytest.raises(UnsupportedError, match="latent cache"):
        fi.prepare(q, k, torch.randn_like(v, dtype=torch.float64))


def test_flashinfer_refusals(flashinfer):
    q, k, v = _inputs()
    with pytest.raises(UnsupportedError, match="left side only"):
        fi.prepare(q, k, v, causal=False, window=(3, 2))
    with pytest.raises(UnsupportedError, match="reappears"):
        fi.prepare(q[:1], k[:1], v[:1], document_ids=torch.tensor([[0] * 6 + [1] * 6 + [0]]))
    impl = harness.get("flashinfer")
    for asked, word in ((dict(window=True), "left side only"), (dict(backward=True), "inference"),
                        (dict(alibi=True), "ALIBI"), (dict(key_padding_mask=True), "lengths")):
        verdict = impl.supports(device="cuda", dtype="float16", run_probe=False, **asked)
        assert not verdict and word in verdict.reason, asked
    assert flashinfer == []


# ---- FlashAttention-4 -----------------------------------------------------------------------

def _fa4_allowed(t_q, t_k, causal, window_size):
    left, right = window_size
    if causal:
        right = 0
    rows = torch.arange(t_q)[:, None] + (t_k - t_q)
    cols = torch.arange(t_k)[None, :]
    allowed = torch.ones(t_q, t_k, dtype=torch.bool)
    if causal:
        allowed &= cols <= rows
    if left is not None:
        allowed &= cols >= rows - left
    if right is not None:
        allowed &= cols <= rows + right
    return allowed


def _fake_fa4(calls):
    cute = types.ModuleType("flash_attn.cute")

    def batched(q, k, v, lens_k, scale, causal, window_size, sink, softcap):
        outs = []
        for b in range(q.shape[0]):
            n = k.shape[1] if lens_k is None else int(lens_k[b])
            allowed = _fa4_allowed(q.shape[1], n, causal, window_size)
            outs.append(_attend(q[b], k[b, :n], v[b, :n], allowed, sm_scale=scale,
                                cap=softcap, sinks=sink))
        return torch.stack(outs)

    def flash_attn_func(q, k, v, qv=None, gather_kv_indices=None, softmax_scale=None,
                        causal=False, window_size=(None, None), learnable_sink=None,
                        softcap=0.0, num_splits=1, pack_gqa=None, deterministic=False,
                        score_mod=None, score_mod_bwd=None, mask_mod=None, aux_tensors=None,
                        aux_scalars=None, block_sparse_tensors=None,
                        block_sparse_tensors_bwd=None, return_lse=False):
        _check_sink(learnable_sink, q.shape[2])
        _check_dtypes(q, k, v)
        calls.append({"fn": "func", "k_heads": k.shape[2], "window_size": window_size,
                      "causal": causal, "softcap": softcap})
        scale = softmax_scale or 1.0 / np.sqrt(q.shape[-1])
        out = batched(q, k, v, None, scale, causal, window_size, learnable_sink, softcap)
        return out.to(q.dtype), None

    def flash_attn_varlen_func(q, k, v, qv=None, cu_seqlens_q=None, cu_seqlens_k=None,
                               max_seqlen_q=None, max_seqlen_k=None, min_seqlen_k=None,
                               seqused_q=None, seqused_k=None, gather_kv_indices=None,
                               page_table=None, softmax_scale=None, causal=False,
                               window_size=(None, None), learnable_sink=None, softcap=0.0,
                               num_splits=1, pack_gqa=None, deterministic=False,
                               score_mod=None, score_mod_bwd=None, mask_mod=None,
                               block_sparse_tensors=None, aux_tensors=None, aux_scalars=None,
                               return_lse=False, scheduler_metadata=None,
                               seqlen_k_per_split=None, disable_scheduler_metadata=False):
        _check_sink(learnable_sink, q.shape[-2])
        _check_dtypes(q, k, v)
        scale = softmax_scale or 1.0 / np.sqrt(q.shape[-1])
        if page_table is not None:             # the interface's asserts on a paged call
            assert cu_seqlens_k is None and page_table.dtype == torch.int32
            assert seqused_k.dtype == torch.int32 and q.dim() == 4
            page_size = k.shape[1]
            calls.append({"fn": "paged", "page_size": page_size, "window_size": window_size})
            gather = [torch.cat([x[p] for p in page_table[b].tolist()])
                      for b in range(q.shape[0]) for x in (k, v)]
            k_b, v_b = torch.stack(gather[0::2]), torch.stack(gather[1::2])
            out = batched(q, k_b, v_b, seqused_k, scale, causal, window_size,
                          learnable_sink, softcap)
            return out.to(q.dtype), None
        assert cu_seqlens_q.dtype == cu_seqlens_k.dtype == torch.int32
        calls.append({"fn": "varlen", "cu_q": cu_seqlens_q.tolist(), "max_q": max_seqlen_q,
                      "window_size": window_size})
        pieces = []
        for qa, qb, ka, kb in zip(cu_seqlens_q[:-1].tolist(), cu_seqlens_q[1:].tolist(),
                                  cu_seqlens_k[:-1].tolist(), cu_seqlens_k[1:].tolist()):
            assert qb - qa <= max_seqlen_q and kb - ka <= max_seqlen_k
            allowed = _fa4_allowed(qb - qa, kb - ka, causal, window_size)
            pieces.append(_attend(q[qa:qb], k[ka:kb], v[ka:kb], allowed, sm_scale=scale,
                                  cap=softcap, sinks=learnable_sink))
        return torch.cat(pieces).to(q.dtype), None

    def _check_dtypes(*tensors):               # "q, k, v, and qv must have the same dtype"
        assert len({t.dtype for t in tensors}) == 1

    def _check_sink(sink, heads):
        assert sink is None or (sink.shape == (heads,) and sink.dtype == torch.float32)

    cute.flash_attn_func = flash_attn_func
    cute.flash_attn_varlen_func = flash_attn_varlen_func
    root = types.ModuleType("flash_attn")
    root.cute = cute
    return root, cute


@pytest.fixture
def flash4(monkeypatch):
    calls = []
    root, cute = _fake_fa4(calls)
    monkeypatch.setitem(sys.modules, "flash_attn", root)
    monkeypatch.setitem(sys.modules, "flash_attn.cute", cute)
    return calls


@pytest.mark.parametrize("kw", [dict(causal=True), dict(causal=True, tq=3),
                                dict(causal=False, window=(3, 2)),
                                dict(causal=True, window=(4, 0), tq=1),
                                dict(causal=False, window=(-1, 2)),
                                dict(causal=True, documents=3),
                                dict(causal=True, documents=3, window=(2, 0)),
                                dict(causal=False, documents=2, window=(2, 1))])
def test_fa4_adapter_passes_native_arguments(kw, flash4):
    kw = dict(kw)
    q, k, v = _inputs(tq=kw.pop("tq", 13))
    causal, window = kw["causal"], kw.get("window")
    extra = {}
    if kw.get("documents"):
        extra["document_ids"] = packed_document_ids(2, 13, kw["documents"], seed=1)
    ref = _reference(q, k, v, causal=causal, window=window, **extra)
    out = fa4.flash_attn_4(q, k, v, causal=causal, window=window,
                           **{n: torch.from_numpy(x) for n, x in extra.items()})
    assert _close(out, ref)
    (call,) = flash4
    assert call["fn"] == ("varlen" if extra else "func")
    assert call["window_size"] == fa4.fa4_window(window)
    if not extra:
        assert call["k_heads"] == 2          # GQA: k keeps its heads


def test_fa4_softcap_and_sinks(flash4):
    q, k, v = (x * 4 for x in _inputs(tq=5))
    sinks = torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=torch.float64)
    for kw in (dict(softcap=5.0), dict(sinks=sinks), dict(softcap=5.0, sinks=sinks),
               dict(sinks=sinks, window=(3, 0))):
        out = fa4.prepare(q, k, v, causal=True, **kw)(q, k, v)
        ref = _reference(q, k, v, causal=True, softcap=kw.get("softcap", 0.0),
                         sinks=None if kw.get("sinks") is None else sinks.numpy(),
                         window=kw.get("window"))
        assert _close(out, ref), kw
    assert not _close(out, _reference(q, k, v, causal=True, window=(3, 0)))
    ids = torch.from_numpy(packed_document_ids(2, 13, 3, seed=2))
    q, k, v = _inputs()
    out = fa4.prepare(q, k, v, causal=True, sinks=sinks, document_ids=ids)(q, k, v)
    # documents with sinks: each document's rows against their own keys plus the sink
    for b in range(2):
        for doc in ids[b].unique().tolist():
            rows = (ids[b] == doc).nonzero().reshape(-1)
            sub = [x[b:b + 1, :, rows] for x in (q, k, v)]
            want = _reference(*sub, causal=True, sinks=sinks.numpy())
            assert np.abs(_f64(out[b:b + 1, :, rows]).numpy() - want).max() < 1e-10


@pytest.mark.parametrize("tq", [1, 5])
def test_fa4_paged_cache_through_page_table(tq, flash4):
    q, k, v = _inputs(b=2, tq=tq, tk=13, dv=4)
    k_pool, v_pool, paged = _paged(k, v, page_size=4)      # FA-4's (pages, size, H, D)
    sinks = torch.tensor([0.5, -1.0, 2.0, 0.0], dtype=torch.float64)
    out = fa4.prepare(q, k_pool, v_pool, causal=True, window=(5, 0), softcap=4.0, sinks=sinks,
                      **paged)(q, k_pool, v_pool)
    assert _close(out, _reference(q, k, v, causal=True, window=(5, 0), softcap=4.0,
                                  sinks=sinks.numpy()))
    assert flash4[0]["fn"] == "paged" and flash4[0]["page_size"] == 4


def test_fa4_ragged_decode_on_a_paged_cache(flash4):
    q, k, v = _inputs(b=3, tq=1, tk=13)
    kv_lengths = torch.tensor([13, 5, 9], dtype=torch.int32)
    q_lengths = torch.ones(3, dtype=torch.int32)
    k_pool, v_pool, paged = _paged(k, v, page_size=4, kv_lengths=kv_lengths.numpy())
    out = fa4.prepare(q, k_pool, v_pool, causal=True, q_lengths=q_lengths, **paged)(
        q, k_pool, v_pool)
    assert _close(out, _reference(q, k, v, causal=True, q_lengths=q_lengths.numpy(),
                                  kv_lengths=kv_lengths.numpy()))
    with pytest.raises(UnsupportedError, match="dense cache"):
        fa4.prepare(q, k, v, q_lengths=q_lengths, kv_lengths=kv_lengths)
    q, k, v = _inputs(b=2, tq=4, tk=13)
    k_pool, v_pool, paged = _paged(k, v, 4, np.array([13, 3]))
    with pytest.raises(UnsupportedError, match="query lengths"):
        fa4.prepare(q, k_pool, v_pool, q_lengths=torch.tensor([4, 3], dtype=torch.int32),
                    **paged)


def test_fa4_refuses_fp8_keys_and_values(flash4):
    q, k, v = _inputs()
    (k8, ks), (v8, vs) = _fp8(k), _fp8(v)
    with pytest.raises(UnsupportedError, match="FP8"):
        fa4.prepare(q, k8, v8, k_scale=ks, v_scale=vs)
    verdict = harness.get("flash_attn_4").supports(device="cuda", dtype="float16",
                                                   run_probe=False, fp8_kv=True)
    assert not verdict and "same FP8 dtype" not in verdict.reason and "q, k and v" in \
        verdict.reason
    assert flash4 == []


def test_fa4_refuses_devices_by_compute_capability(monkeypatch):
    for cap in ((9, 0), (10, 0), (10, 3), (11, 0), (12, 0)):
        assert fa4.capability_reason(*cap) is None
    for cap in ((8, 0), (8, 9), (7, 5)):
        reason = fa4.capability_reason(*cap)
        assert f"compute capability {cap[0]}.{cap[1]}" in reason and "Hopper" in reason
    monkeypatch.setitem(sys.modules, "flash_attn", types.ModuleType("flash_attn"))
    monkeypatch.setitem(sys.modules, "flash_attn.cute", types.ModuleType("flash_attn.cute"))
    sys.modules["flash_attn.cute"].__spec__ = types.SimpleNamespace(name="flash_attn.cute")
    monkeypatch.setattr(fa4, "device_capability", lambda device: (8, 0))
    verdict = fa4.probe("cuda", "float16")
    assert not verdict and "8.0" in verdict.reason
    monkeypatch.setattr(fa4, "device_capability", lambda device: (9, 0))
    assert fa4.probe("cuda", "float16")


def test_fa4_without_the_cute_package_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "flash_attn", types.ModuleType("flash_attn"))  # FA2 only
    monkeypatch.delitem(sys.modules, "flash_attn.cute", raising=False)
    verdict = fa4.probe("cuda", "float16")
    assert not verdict and "flash-attn-4" in verdict.reason


def test_fa4_head_dims_per_family():
    assert fa4.head_dim_reason(9, 256, 256) is None
    assert fa4.head_dim_reason(9, 192, 128) is None
    assert "not supported" in fa4.head_dim_reason(9, 576, 512)
    assert fa4.head_dim_reason(10, 192, 128) is None and fa4.head_dim_reason(10, 64, 512) is None
    assert fa4.head_dim_reason(10, 512, 512) is None
    assert "not supported" in fa4.head_dim_reason(10, 160, 160)
    assert "not supported" in fa4.head_dim_reason(10, 576, 512)


# ---- both: the registry's view ----------------------------------------------------------------

FEATURES = ("causal", "masked", "gqa", "q_len", "window", "alibi", "documents", "softcap",
            "sinks", "paged", "ragged", "head_dim_v", "fp8_kv")


def _claimed(impl):
    """Each of the 2^13 feature combinations the capabilities and constraints accept on
    CUDA, as check()'s keywords."""
    for values in itertools.product((False, True), repeat=len(FEATURES)):
        combo = dict(zip(FEATURES, values))
        query = Query(device="cuda", dtype="float16", key_padding_mask=combo["masked"],
                      **{f: combo[f] for f in FEATURES if f != "masked"})
        if not impl.not_supported_reasons(query):
            yield combo


# Per method, the features taken freely multiply the count; the rest as the constraints
# allow them. flashinfer: gqa, softcap, head_dim_v free (8); (causal, window): window needs
# causal (3); (q_len, documents, paged, ragged, fp8_kv): documents without q_len, paged, fp8 (1),
# else q_len x paged x fp8 (8) plus ragged with paged and q_len (2): 11; 8 x 3 x 11 = 264.
# flash_attn_4: causal, gqa, window, softcap, sinks, head_dim_v free (64); documents without
# q_len or paged (1), else q_len x paged (4) plus ragged with both (1): 6; 64 x 6 = 384.
@pytest.mark.parametrize("name, claimed_count", [("flashinfer", 264), ("flash_attn_4", 384)])
@pytest.mark.parametrize("batch", [1, 2])
def test_every_claimed_combination_passes_the_gate_on_the_fakes(name, claimed_count, batch,
                                                                flashinfer, flash4):
    """The correctness gate's own inputs (harness.measure.gate.check: GQA, Tq = 7, windows,
    documents, softcap, sinks, pages of 8, ragged key lengths, D_v = D/2, FP8 k and v with
    their scales) for every claimed combination (batch 1: FlashInfer's single_* paths, batch
    2: its wrappers). float32: FA-4 takes its sink logits in float32."""
    from harness.measure.gate import check

    impl = harness.get(name)
    claimed = 0
    for combo in _claimed(impl):
        claimed += 1
        result = check(impl, device="cpu", dtype="float32", shape=(batch, 2, 32, 8), **combo)
        assert result.passed, (combo, result.message)
    assert claimed == claimed_count


def test_gate_points_with_the_new_axes_through_the_fakes(flashinfer, flash4):
    """check_point on sweep points with each new axis set (the point's own inputs: its
    page table, its lengths, its FP8 scales), as ``check --workloads`` runs them."""
    from harness.contract.records import Point
    from harness.measure.gate import check_point

    base = dict(seq_len=32, head_dim=8, heads=4, batch=3, dtype="float32", device="cpu",
                causal=True, kv_heads=2)
    cases = {
        "flashinfer": [dict(extra_axes=(("softcap", 2.0),)),
                       dict(extra_axes=(("page_size", 8),), q_len=1),
                       dict(extra_axes=(("page_size", 8), ("lengths", "uniform:4-32")),
                            q_len=1),
                       dict(extra_axes=(("head_dim_v", 4),), q_len=1),
                       dict(kv_dtype="float8_e4m3fn", q_len=1),
                       dict(kv_dtype="float8_e4m3fn", extra_axes=(("page_size", 8),)),
                       dict(kv_dtype="float8_e4m3fn", batch=1, q_len=5)],
        "flash_attn_4": [dict(extra_axes=(("softcap", 2.0), ("sinks", True))),
                         dict(extra_axes=(("page_size", 8), ("sinks", True)), q_len=1),
                         dict(extra_axes=(("page_size", 8), ("lengths", "uniform:4-32")),
                              q_len=1, window=6),
                         dict(extra_axes=(("head_dim_v", 4),))],
    }
    for name, points in cases.items():
        impl = harness.get(name)
        for fields in points:
            point = Point(name, **{**base, **fields})
            assert not impl.not_supported_reasons(Query(
                device="cuda", dtype="float16", features=point.all_features())), fields
            result = check_point(impl, point)
            assert result.passed, (name, fields, result.message)


def test_check_workloads_cases_through_the_fakes(flashinfer, flash4):
    """``run_bench.py check --workloads``' built-in cases (harness.grid.workload_cases), as
    its worker task runs them, in this process (the fakes live here): each is refused with
    a reason before anything runs, or passes the gate. FlashInfer's absorbed-MLA decode shape
    (D = D_v + 64, one KV head, Tq = 1) whose v is not the latent part of k is refused when
    called (MLA_VALUES: the MLA kernel reads its values from k): unsupported, not a failure."""
    from harness.grid.workload_cases import builtin_cases
    from harness.measure.gate import check_point

    outcome = {}
    for name in ("flashinfer", "flash_attn_4"):
        impl = harness.get(name)
        for case in builtin_cases():
            point = case.for_impl(name, "cpu", "float32").point
            reasons = impl.not_supported_reasons(Query(
                device="cuda", dtype="float16", features=point.all_features(),
                key_padding_mask=case.padded))
            if reasons:
                outcome[name, case.name] = "unsupported"
                continue
            result = check_point(impl, point, padded=case.padded)
            outcome[name, case.name] = "ok" if result.passed else \
                "unsupported" if result.unsupported else result.message
    mla = [c.name for c in builtin_cases() if c.name.startswith("mla decode")]
    # refused when called: unsupported with the kernel's reason, not a failed gate
    result = check_point(harness.get("flashinfer"),
                         next(c for c in builtin_cases() if c.name == mla[0])
                         .for_impl("flashinfer", "cpu", "float32").point)
    assert result.unsupported and result.message == fi.MLA_VALUES
    assert outcome.pop(("flashinfer", mla[0])) == "unsupported"
    assert set(outcome.values()) == {"ok", "unsupported"}, outcome
    for name in ("flashinfer", "flash_attn_4"):    # the new axes' cases that each runs
        ran = {case for (n, case), state in outcome.items() if n == name and state == "ok"}
        assert {"softcap 2 causal", "paged page=16 causal", "paged ragged decode Hkv=2",
                "Dv=16 (D=32)"} <= ran, (name, ran)
    assert outcome["flashinfer", "kv fp8e4m3 causal"] == "ok"
    assert outcome["flash_attn_4", "sinks gqa Hkv=2 causal"] == "ok"
    for name in ("flashinfer", "flash_attn_4"):
        assert outcome[name, "ragged decode"] == "unsupported"      # a dense ragged batch
        assert outcome[name, "ragged prefill causal"] == "unsupported"


def test_refusals_of_the_new_axes_are_reasons():
    """What the methods do not take is refused before anything runs, with the reason (the
    point is recorded unsupported, never run and wrong)."""
    fi_impl, fa4_impl = harness.get("flashinfer"), harness.get("flash_attn_4")
    asks = [(fi_impl, dict(sinks=True), "trtllm-gen"),
            (fi_impl, dict(ragged=True, q_len=True), "dense cache"),
            (fi_impl, dict(ragged=True, paged=True), "query lengths"),
            (fi_impl, dict(documents=True, fp8_kv=True), "ragged wrapper"),
            (fi_impl, dict(documents=True, paged=True), "paged cache"),
            (fa4_impl, dict(fp8_kv=True), "q, k and v"),
            (fa4_impl, dict(ragged=True, q_len=True), "dense cache"),
            (fa4_impl, dict(ragged=True, paged=True), "query lengths"),
            (fa4_impl, dict(documents=True, paged=True), "cu_seqlens_k")]
    for impl, asked, word in asks:
        verdict = impl.supports(device="cuda", dtype="float16", run_probe=False, causal=True,
                                **asked)
        assert not verdict and word in verdict.reason, (impl.name, asked, verdict.reason)


def test_list_rows_on_this_cpu_machine():
    import importlib.util

    for name in ("flashinfer", "flash_attn_4"):
        impl = harness.get(name)
        cpu = impl.availability("cpu")
        assert not cpu and "needs CUDA" in cpu.reason, cpu.reason
    if importlib.util.find_spec("flashinfer") is None:
        reason = harness.get("flashinfer").availability("cuda").reason
        assert "flashinfer" in reason and "not installed" in reason
    paths = dict(harness.get("flashinfer").capabilities.paths)
    assert "single_decode_with_kv_cache" in paths["decode, B = 1"]
    assert "plan()" in paths["prefill, B > 1 or paged"]


# ---- the real packages, where a GPU and the package are present (pytest -m gpu) ----------

@pytest.mark.gpu
@pytest.mark.parametrize("name, package", [("flashinfer", "flashinfer"),
                                           ("flash_attn_4", "flash_attn.cute")])
def test_real_package_passes_the_gate_on_every_claimed_combination(name, package):
    import importlib

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: torch.cuda.is_available() is False")
    try:
        importlib.import_module(package)
    except ImportError as exc:
        pytest.skip(f"{package} not installed ({exc})")
    from harness.measure.gate import check

    impl = harness.get(name)
    if not impl.availability("cuda", "float16"):
        pytest.skip(impl.availability("cuda", "float16").reason)
    for combo in _claimed(impl):
        for batch in (1, 2):
            result = check(impl, device="cuda", dtype="float16", shape=(batch, 2, 128, 64),
                           **combo)
            assert result.passed, (combo, batch, result.message)
