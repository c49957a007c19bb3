"""flash_attn and xformers adapters (CUDA only) checked on the CPU with fake packages: the fakes
compute the float64 reference from exactly the native arguments the adapter passes
(FlashAttention's num_heads_k / window_size / alibi_slopes / cu_seqlens, xformers' 5-D layout
and bias objects), so a wrong layout, boundary or argument shows as a wrong output."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch

from harness.masking import alibi_slopes, packed_document_ids
from harness.reference import exact_attention
from implementations import flash_attn as fa_adapter
from implementations import xformers as xf_adapter


def _np(x):
    return x.detach().double().numpy()


def _fake_flash(calls):
    def flash_attn_func(q, k, v, *, causal, window_size, alibi_slopes=None):
        calls.append(("func", k.shape[2], window_size))
        # (B, T, H, D) layout, k/v with their own (fewer) heads
        out = exact_attention(_np(q.transpose(1, 2)), _np(k.transpose(1, 2)),
                              _np(v.transpose(1, 2)), causal=causal,
                              window=None if window_size == (-1, -1) else window_size,
                              alibi_slopes=None if alibi_slopes is None else _np(alibi_slopes))
        return torch.from_numpy(out).transpose(1, 2).to(q.dtype)

    def flash_attn_varlen_func(q, k, v, cu_q, cu_k, max_q, max_k, *, causal, window_size,
                               alibi_slopes=None):
        calls.append(("varlen", cu_q.tolist(), max_q))
        assert cu_q.dtype == torch.int32 and torch.equal(cu_q, cu_k)
        pieces = []
        for a, b in zip(cu_q[:-1].tolist(), cu_q[1:].tolist()):
            sub = [x[a:b].transpose(0, 1)[None] for x in (q, k, v)]   # (1, H, len, D)
            out = exact_attention(*(_np(x) for x in sub), causal=causal,
                                  window=None if window_size == (-1, -1) else window_size,
                                  alibi_slopes=None if alibi_slopes is None
                                  else _np(alibi_slopes))
            pieces.append(torch.from_numpy(out[0]).transpose(0, 1))
        return torch.cat(pieces).to(q.dtype)

    module = types.ModuleType("flash_attn")
    module.flash_attn_func = flash_attn_func
    module.flash_attn_varlen_func = flash_attn_varlen_func
    return module


def _inputs(b=2, hq=4, hkv=2, tq=13, tk=13, d=8, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((b, hq, tq, d)), rng.standard_normal((b, hkv, tk, d)),
            rng.standard_normal((b, hkv, tk, d)))


@pytest.mark.parametrize("kw", [dict(causal=True), dict(causal=True, tq=3),
                                dict(causal=False, window=(3, 2)),
                                dict(causal=True, alibi=True, tq=1),
                                dict(causal=True, documents=3),
                                dict(causal=False, documents=2, window=(2, 1), alibi=True)])
def test_flash_attn_adapter_passes_native_arguments(kw, monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "flash_attn", _fake_flash(calls))
    kw = dict(kw)
    q, k, v = _inputs(tq=kw.pop("tq", 13))
    extra = {"window": kw.pop("window", None)}
    if kw.pop("alibi", False):
        extra["alibi_slopes"] = alibi_slopes(4)
    docs = kw.pop("documents", None)
    if docs:
        extra["document_ids"] = packed_document_ids(2, 13, docs, seed=1)
    ref = exact_attention(q, k, v, causal=kw["causal"], **extra)
    torch_extra = {name: None if value is None else
                   (torch.from_numpy(np.asarray(value)) if name != "window" else value)
                   for name, value in extra.items()}
    out = fa_adapter.flash_attn(*(torch.from_numpy(x) for x in (q, k, v)), causal=kw["causal"],
                                **torch_extra)
    assert np.abs(_np(out) - ref).max() < 1e-10
    kind = calls[0][0]
    assert kind == ("varlen" if docs else "func")
    if kind == "func":
        assert calls[0][1] == 2          # k keeps its 2 heads: GQA without repeat_interleave


class _Bias:
    def __init__(self, kind, lengths=None):
        self.kind, self.lengths = kind, lengths


def _fake_xformers(calls):
    attn_bias = types.SimpleNamespace(
        BlockDiagonalMask=types.SimpleNamespace(from_seqlens=lambda s: _Bias("block", s)),
        BlockDiagonalCausalMask=types.SimpleNamespace(
            from_seqlens=lambda s: _Bias("block_causal", s)),
        LowerTriangularFromBottomRightMask=lambda: _Bias("bottom_right"))

    def memory_efficient_attention(q, k, v, attn_bias=None):
        # 5-D (B, T, G, H, D): k, v broadcast along H (stride 0)
        calls.append((attn_bias.kind if attn_bias else None, k.stride(3)))
        batch, t_q, groups, heads, dim = q.shape
        q4 = q.reshape(batch, t_q, groups * heads, dim).permute(0, 2, 1, 3)
        k4, v4 = (x[:, :, :, 0].permute(0, 2, 1, 3) for x in (k, v))
        kind = attn_bias.kind if attn_bias else None
        if kind in ("block", "block_causal"):
            ids = np.repeat(np.arange(len(attn_bias.lengths)), attn_bias.lengths)[None]
            out = exact_attention(_np(q4), _np(k4), _np(v4), causal=kind == "block_causal",
                                  document_ids=ids)
        elif kind == "top_left":
            out = exact_attention(_np(q4), _np(k4), _np(v4), causal=True)
            assert t_q == k.shape[1]
        else:
            out = exact_attention(_np(q4), _np(k4), _np(v4), causal=kind == "bottom_right")
        return torch.from_numpy(out).permute(0, 2, 1, 3).reshape(batch, t_q, groups, heads, dim)

    ops = types.ModuleType("xformers.ops")
    ops.fmha = types.SimpleNamespace(attn_bias=attn_bias)
    ops.LowerTriangularMask = lambda: _Bias("top_left")
    ops.memory_efficient_attention = memory_efficient_attention
    root = types.ModuleType("xformers")
    root.ops = ops
    return root, ops


@pytest.mark.parametrize("kw", [dict(causal=True), dict(causal=True, tq=4),
                                dict(causal=False, tq=1), dict(causal=True, documents=3),
                                dict(causal=False, documents=2)])
def test_xformers_adapter_uses_native_biases_and_5d_gqa(kw, monkeypatch):
    calls = []
    root, ops = _fake_xformers(calls)
    monkeypatch.setitem(sys.modules, "xformers", root)
    monkeypatch.setitem(sys.modules, "xformers.ops", ops)
    kw = dict(kw)
    q, k, v = _inputs(tq=kw.pop("tq", 13))
    docs = kw.pop("documents", None)
    ids = packed_document_ids(2, 13, docs, seed=2) if docs else None
    ref = exact_attention(q, k, v, causal=kw["causal"], document_ids=ids)
    out = xf_adapter.xformers_attention(*(torch.from_numpy(x) for x in (q, k, v)),
                                        causal=kw["causal"],
                                        document_ids=None if ids is None
                                        else torch.from_numpy(ids))
    assert np.abs(_np(out) - ref).max() < 1e-10
    assert calls[0][1] == 0      # k expanded along the group axis as a view, not copied


def test_cuda_only_adapters_state_what_they_lack():
    import harness

    assert "varlen" in harness.get("flash_attn").supports(
        device="cuda", dtype="float16", key_padding_mask=True).reason
    assert "ALiBi" in harness.get("xformers").supports(device="cuda", dtype="float16",
                                                       alibi=True).reason
