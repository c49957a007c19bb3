"""flash_attn and xformers adapters (CUDA only) checked on the CPU with fake packages.

The fakes take the real packages' signatures (flash_attn/flash_attn_interface.py;
xformers/ops/fmha/attn_bias.py) and compute the float64 answer from exactly the native arguments
the adapter passes, with each library's documented semantics (FlashAttention: causal, window and
ALiBi aligned bottom-right within each varlen sequence, a query without keys outputs zeros;
xformers: each bias class's own mask), so a wrong layout, boundary or argument shows as a wrong
output against attnbench's reference. tests/test_gpu.py runs the same cases on the real packages.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from harness.errors import UnsupportedError
from harness.contract.masking import alibi_slopes, packed_document_ids
from harness.contract.reference import exact_attention
from implementations import flash_attn as fa_adapter
from implementations import xformers as xf_adapter


def _np(x):
    return x.detach().double().numpy()


# ---- FlashAttention -------------------------------------------------------------------------

def _fake_flash(calls):
    def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                        window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                        deterministic=False, return_attn_probs=False):
        calls.append({"kind": "func", "k_heads": k.shape[2], "window_size": window_size,
                      "alibi_slopes": alibi_slopes, "causal": causal, "softcap": softcap})
        # (B, T, H, D) layout, k/v with their own (fewer) heads; "Anything > 0 activates
        # softcapping attention", on the scaled scores before ALiBi (flash_fwd_kernel.h)
        out = exact_attention(_np(q.transpose(1, 2)), _np(k.transpose(1, 2)),
                              _np(v.transpose(1, 2)), causal=causal,
                              window=None if window_size == (-1, -1) else window_size,
                              alibi_slopes=None if alibi_slopes is None else _np(alibi_slopes),
                              softcap=softcap)
        return torch.from_numpy(out).transpose(1, 2).to(q.dtype)

    def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                               dropout_p=0.0, softmax_scale=None, causal=False,
                               window_size=(-1, -1), softcap=0.0, alibi_slopes=None,
                               deterministic=False, return_attn_probs=False, block_table=None):
        calls.append({"kind": "varlen", "cu_q": cu_seqlens_q.tolist(),
                      "cu_k": cu_seqlens_k.tolist(), "max_q": max_seqlen_q,
                      "max_k": max_seqlen_k, "window_size": window_size, "causal": causal,
                      "k_heads": k.shape[1], "total_k": k.shape[0]})
        assert cu_seqlens_q.dtype == cu_seqlens_k.dtype == torch.int32
        assert q.shape[0] == cu_seqlens_q[-1] and k.shape[0] == v.shape[0] == cu_seqlens_k[-1]
        pieces = []
        bounds = zip(cu_seqlens_q[:-1].tolist(), cu_seqlens_q[1:].tolist(),
                     cu_seqlens_k[:-1].tolist(), cu_seqlens_k[1:].tolist())
        for qa, qb, ka, kb in bounds:
            assert qb - qa <= max_seqlen_q and kb - ka <= max_seqlen_k
            if kb == ka:          # "If the row of the mask is all zero, the output will be zero"
                pieces.append(torch.zeros(qb - qa, q.shape[1], v.shape[2], dtype=torch.float64))
                continue
            sub = [x[a:b].transpose(0, 1)[None] for x, a, b in ((q, qa, qb), (k, ka, kb),
                                                                 (v, ka, kb))]
            out = exact_attention(*(_np(x) for x in sub), causal=causal,
                                  window=None if window_size == (-1, -1) else window_size,
                                  alibi_slopes=None if alibi_slopes is None
                                  else _np(alibi_slopes), softcap=softcap)
            pieces.append(torch.from_numpy(out[0]).transpose(0, 1))
        return torch.cat(pieces).to(q.dtype)

    module = types.ModuleType("flash_attn")
    module.flash_attn_func = flash_attn_func
    module.flash_attn_varlen_func = flash_attn_varlen_func
    return module


@pytest.fixture
def flash(monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "flash_attn", _fake_flash(calls))
    return calls


def _inputs(b=2, hq=4, hkv=2, tq=13, tk=13, d=8, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((b, hq, tq, d)), rng.standard_normal((b, hkv, tk, d)),
            rng.standard_normal((b, hkv, tk, d)))


def _torch(extra):
    return {name: value if name == "window" or value is None else
            torch.from_numpy(np.asarray(value)) for name, value in extra.items()}


def _masked_case(kw: dict, docs_seed: int = 1) -> tuple:
    """q, k, v (B 2, Tk 13) and the mask keywords of a case (hkv, tq, window, alibi,
    documents), with what is left of ``kw`` (causal)."""
    kw = dict(kw)
    q, k, v = _inputs(hkv=kw.pop("hkv", 2), tq=kw.pop("tq", 13))
    extra = {"window": kw.pop("window", None)}
    if kw.pop("alibi", False):
        extra["alibi_slopes"] = alibi_slopes(4)
    docs = kw.pop("documents", None)
    if docs:
        extra["document_ids"] = packed_document_ids(2, 13, docs, seed=docs_seed)
    return q, k, v, extra, kw


@pytest.mark.parametrize("kw", [dict(causal=True), dict(causal=True, tq=3),
                                dict(causal=False, window=(3, 2)),
                                dict(causal=True, alibi=True, tq=1),
                                dict(causal=True, documents=3),
                                dict(causal=True, documents=3, window=(2, 0), alibi=True),
                                dict(causal=False, documents=2, window=(2, 1), alibi=True)])
def test_flash_attn_adapter_passes_native_arguments(kw, flash):
    """Documents with causal, windows and ALiBi: FlashAttention's positions inside each varlen
    sequence give the same answer as attnbench's row positions (the fake computes the former)."""
    q, k, v, extra, kw = _masked_case(kw)
    ref = exact_attention(q, k, v, causal=kw["causal"], **extra)
    out = fa_adapter.flash_attn(*(torch.from_numpy(x) for x in (q, k, v)), causal=kw["causal"],
                                **_torch(extra))
    assert out.shape == ref.shape and np.abs(_np(out) - ref).max() < 1e-10
    (call,) = flash
    assert call["kind"] == ("varlen" if "document_ids" in extra else "func")
    assert call["k_heads"] == 2          # k keeps its 2 heads: GQA without repeat_interleave
    assert call["window_size"] == (extra["window"] or (-1, -1))
    assert call["causal"] is kw["causal"]


def test_flash_attn_cu_seqlens_of_known_documents(flash):
    ids = torch.tensor([[0, 0, 1, 1, 1], [5, 5, 5, 7, 7]])
    cu, longest = fa_adapter.document_cu_seqlens(ids)
    assert cu.dtype == torch.int32 and cu.tolist() == [0, 2, 5, 8, 10] and longest == 3
    q = torch.randn(2, 2, 5, 4, dtype=torch.float64)
    fa_adapter.flash_attn(q, q, q, causal=True, document_ids=ids)
    assert flash[0]["cu_q"] == flash[0]["cu_k"] == [0, 2, 5, 8, 10]
    assert flash[0]["max_q"] == flash[0]["max_k"] == 3


def test_flash_attn_alibi_slopes_are_float32_per_query_head(flash):
    q, k, v = (torch.from_numpy(x) for x in _inputs(hq=4, hkv=1))
    fa_adapter.flash_attn(q, k, v, causal=True,
                          alibi_slopes=torch.from_numpy(alibi_slopes(4)))
    slopes = flash[0]["alibi_slopes"]
    assert slopes.dtype == torch.float32 and slopes.shape == (4,) and flash[0]["k_heads"] == 1


def test_flash_attn_refuses_documents_that_are_not_contiguous(flash):
    ids = torch.tensor([[0, 0, 1, 1, 0]])     # attnbench: tokens 0, 1, 4 are one document
    q = torch.randn(1, 1, 5, 4, dtype=torch.float64)
    with pytest.raises(UnsupportedError, match="reappears"):
        fa_adapter.flash_attn(q, q, q, document_ids=ids)
    assert flash == []


def test_flash_attn_key_padding_through_varlen(flash):
    q, k, v = _inputs(b=3, tq=5, tk=9)
    mask = np.zeros((3, 9), dtype=bool)
    mask[0, :6] = True                     # 6 kept keys
    mask[1, :] = True                      # all kept
    # row 2 keeps none: its queries output zeros
    ref = exact_attention(q, k, v, key_padding_mask=mask)
    out = fa_adapter.flash_attn(*(torch.from_numpy(x) for x in (q, k, v)),
                                key_padding_mask=torch.from_numpy(mask))
    assert np.abs(_np(out) - ref).max() < 1e-10 and not _np(out)[2].any()
    (call,) = flash
    assert call["cu_q"] == [0, 5, 10, 15] and call["cu_k"] == [0, 6, 15, 15]
    assert call["max_q"] == 5 and call["max_k"] == 9 and call["total_k"] == 15


def test_flash_attn_refuses_padding_it_cannot_express(flash):
    import harness

    q = torch.randn(1, 1, 4, 8, dtype=torch.float64)
    holes = torch.tensor([[True, False, True, True]])
    with pytest.raises(UnsupportedError, match="not a prefix"):
        fa_adapter.flash_attn(q, q, q, key_padding_mask=holes)
    prefix = torch.tensor([[True, True, False, False]])
    with pytest.raises(UnsupportedError, match="aligns causal"):
        fa_adapter.flash_attn(q, q, q, causal=True, key_padding_mask=prefix)
    assert flash == []
    impl = harness.get("flash_attn")
    for feature, word in (({"causal": True}, "causal"), ({"window": True}, "window"),
                          ({"alibi": True}, "ALiBi"), ({"documents": True}, "documents")):
        verdict = impl.supports(device="cuda", dtype="float16", key_padding_mask=True,
                                run_probe=False, **feature)
        assert not verdict and word in verdict.reason
    # padding alone is declared (the runner's probe still needs a GPU and the package)
    assert impl.not_supported_reasons(
        harness.contract.registry.Query(device="cuda", dtype="float16", key_padding_mask=True)) == []


def test_flash_attn_with_fewer_queries_than_keys_is_the_harness_answer(flash):
    """Bottom-right: a reference with Tq=1 against Tk=13 (decode) under a window."""
    q, k, v = _inputs(tq=1)
    ref = exact_attention(q, k, v, causal=True, window=(4, 0))
    out = fa_adapter.flash_attn(*(torch.from_numpy(x) for x in (q, k, v)), causal=True,
                                window=(4, 0))
    assert np.abs(_np(out) - ref).max() < 1e-10


# ---- xformers -------------------------------------------------------------------------------

def _block_mask(lengths, inner):
    total = sum(lengths)
    allowed = np.zeros((total, total), dtype=bool)
    start = 0
    for n in lengths:
        allowed[start:start + n, start:start + n] = inner(n, n)
        start += n
    return allowed


def _band(t_q, t_k, lo, hi, shift):
    """j - i in [shift + lo, shift + hi] (None: unbounded)."""
    d = np.arange(t_k)[None, :] - np.arange(t_q)[:, None]
    ok = np.ones((t_q, t_k), dtype=bool)
    if lo is not None:
        ok &= d >= shift + lo
    if hi is not None:
        ok &= d <= shift + hi
    return ok


@dataclass
class LowerTriangularMask:
    def allowed(self, t_q, t_k):
        return _band(t_q, t_k, None, 0, 0)          # top-left


@dataclass
class LowerTriangularFromBottomRightMask:
    def allowed(self, t_q, t_k):
        return _band(t_q, t_k, None, 0, t_k - t_q)


@dataclass
class LowerTriangularFromBottomRightLocalAttentionMask:
    _window_size: int

    def __post_init__(self):
        assert self._window_size > 0

    def allowed(self, t_q, t_k):                    # tril(shift), triu(shift - W + 1)
        return _band(t_q, t_k, 1 - self._window_size, 0, t_k - t_q)


@dataclass
class LocalAttentionFromBottomRightMask:
    window_left: int
    window_right: int

    def __post_init__(self):
        assert self.window_left >= 0 and self.window_right >= 0

    def allowed(self, t_q, t_k):
        return _band(t_q, t_k, -self.window_left, self.window_right, t_k - t_q)


@dataclass
class BlockDiagonalMask:
    lengths: list
    device: object = None

    @classmethod
    def from_seqlens(cls, q_seqlen, kv_seqlen=None, *, device=None):
        assert kv_seqlen is None
        return cls(list(q_seqlen), device)

    def make_local_attention(self, window_size):
        return BlockDiagonalCausalLocalAttentionMask(self.lengths, self.device, window_size)

    def allowed(self, t_q, t_k):
        assert t_q == t_k == sum(self.lengths)
        return _block_mask(self.lengths, lambda a, b: np.ones((a, b), dtype=bool))


@dataclass
class BlockDiagonalCausalMask(BlockDiagonalMask):
    def allowed(self, t_q, t_k):
        return _block_mask(self.lengths, lambda a, b: _band(a, b, None, 0, 0))


@dataclass
class BlockDiagonalCausalLocalAttentionMask(BlockDiagonalMask):
    _window_size: int = 0

    def __post_init__(self):
        assert self._window_size > 0

    def allowed(self, t_q, t_k):       # i - window_size < j <= i inside each block
        return _block_mask(self.lengths, lambda a, b: _band(a, b, 1 - self._window_size, 0, 0))


def _fake_xformers(calls):
    attn_bias = types.SimpleNamespace(**{cls.__name__: cls for cls in (
        LowerTriangularFromBottomRightMask, LowerTriangularFromBottomRightLocalAttentionMask,
        LocalAttentionFromBottomRightMask, BlockDiagonalMask, BlockDiagonalCausalMask,
        BlockDiagonalCausalLocalAttentionMask)})

    def memory_efficient_attention(query, key, value, attn_bias=None, p=0.0, scale=None, *,
                                   op=None, output_dtype=None):
        calls.append({"bias": attn_bias, "q": query, "k": key})
        five = query.ndim == 5
        if five:   # [B, M, G, H, K]; xformers does not broadcast: k, v come expanded
            assert key.shape == query.shape[:1] + key.shape[1:2] + query.shape[2:]
        batch, t_q = query.shape[:2]
        t_k = key.shape[1]
        heads_shape = query.shape[2:-1]
        q4, k4, v4 = (_np(x.reshape(batch, x.shape[1], -1, x.shape[-1]).permute(0, 2, 1, 3))
                      for x in (query, key, value))
        scores = q4 @ np.swapaxes(k4, -1, -2) / np.sqrt(q4.shape[-1])
        if isinstance(attn_bias, torch.Tensor):
            # (B, G, H, Mq, Mk) or (B, H, Mq, Mk); cutlass: strides but the last aligned
            assert attn_bias.shape == (batch, *heads_shape, t_q, t_k)
            assert all(attn_bias.stride(d) % 8 == 0 for d in range(attn_bias.ndim - 1))
            scores = scores + _np(attn_bias).reshape(batch, -1, t_q, t_k)
        elif attn_bias is not None:
            if isinstance(attn_bias, BlockDiagonalMask):
                assert batch == 1                   # "Expected batch_size=1"
            scores = np.where(attn_bias.allowed(t_q, t_k), scores, -np.inf)
        weights = np.exp(scores - scores.max(-1, keepdims=True))   # NaN rows stay NaN
        out = (weights / weights.sum(-1, keepdims=True)) @ v4
        return torch.from_numpy(out).permute(0, 2, 1, 3).reshape(
            batch, t_q, *heads_shape, value.shape[-1])

    ops = types.ModuleType("xformers.ops")
    ops.fmha = types.SimpleNamespace(attn_bias=attn_bias)
    ops.LowerTriangularMask = LowerTriangularMask
    ops.memory_efficient_attention = memory_efficient_attention
    root = types.ModuleType("xformers")
    root.ops = ops
    return root, ops


@pytest.fixture
def xformers(monkeypatch):
    calls = []
    root, ops = _fake_xformers(calls)
    monkeypatch.setitem(sys.modules, "xformers", root)
    monkeypatch.setitem(sys.modules, "xformers.ops", ops)
    return calls


XF_CASES = [
    (dict(causal=True), "LowerTriangularMask"),
    (dict(causal=True, tq=4), "LowerTriangularFromBottomRightMask"),
    (dict(causal=False, tq=1), None),
    (dict(causal=True, documents=3), "BlockDiagonalCausalMask"),
    (dict(causal=False, documents=2), "BlockDiagonalMask"),
    (dict(causal=True, window=(3, 0)), "LowerTriangularFromBottomRightLocalAttentionMask"),
    (dict(causal=True, window=(0, 0), tq=4), "LowerTriangularFromBottomRightLocalAttentionMask"),
    (dict(causal=True, window=(-1, 0), tq=4), "LowerTriangularFromBottomRightMask"),
    (dict(causal=False, window=(3, 2)), "LocalAttentionFromBottomRightMask"),
    (dict(causal=False, window=(-1, 2), tq=5), "LocalAttentionFromBottomRightMask"),
    (dict(causal=False, window=(2, -1)), "LocalAttentionFromBottomRightMask"),
    (dict(causal=True, documents=3, window=(2, 0)), "BlockDiagonalCausalLocalAttentionMask"),
    (dict(causal=True, alibi=True), "Tensor"),
    (dict(causal=True, alibi=True, tq=1, window=(4, 0)), "Tensor"),
    (dict(causal=False, alibi=True, documents=2, window=(2, 1)), "Tensor"),
    (dict(causal=True, hkv=4), "LowerTriangularMask"),
    (dict(causal=True, hkv=4, alibi=True, tq=3), "Tensor"),
    (dict(causal=True, hkv=1, window=(3, 0), tq=6),
     "LowerTriangularFromBottomRightLocalAttentionMask"),
]


@pytest.mark.parametrize("kw,bias_type", XF_CASES)
def test_xformers_adapter_uses_native_biases_and_5d_gqa(kw, bias_type, xformers):
    hkv = kw.get("hkv", 2)
    q, k, v, extra, kw = _masked_case(kw, docs_seed=2)
    ref = exact_attention(q, k, v, causal=kw["causal"], **extra)
    out = xf_adapter.xformers_attention(*(torch.from_numpy(x) for x in (q, k, v)),
                                        causal=kw["causal"], **_torch(extra))
    assert out.shape == ref.shape and np.abs(_np(out) - ref).max() < 1e-10
    (call,) = xformers
    assert type(call["bias"]).__name__ == (bias_type or "NoneType")
    if isinstance(call["bias"], BlockDiagonalMask):   # sequence starts on the inputs' device
        assert call["bias"].device == call["q"].device
    if hkv < 4:    # GQA: 5-D, k expanded along the group axis as a view, not copied
        assert call["q"].shape[2:4] == (hkv, 4 // hkv) and call["k"].stride(3) == 0
    else:          # as many heads: the plain 4-D layout (the 5-D one is forward-only)
        assert call["q"].ndim == call["k"].ndim == 4


def test_xformers_document_lengths_and_refusals(xformers):
    ids = torch.tensor([[0, 0, 1, 1, 1], [5, 5, 5, 7, 7]])
    assert xf_adapter.document_lengths(ids) == [2, 3, 3, 2]
    q = torch.randn(1, 1, 5, 4, dtype=torch.float64)
    with pytest.raises(UnsupportedError, match="reappears"):
        xf_adapter.xformers_attention(q, q, q, document_ids=torch.tensor([[0, 0, 1, 1, 0]]))
    with pytest.raises(UnsupportedError, match="two-sided local"):
        xf_adapter.xformers_attention(q, q, q, document_ids=ids[:1], window=(1, 1))
    q_long = torch.randn(1, 1, 6, 4, dtype=torch.float64)   # Tq > Tk: queries without keys
    with pytest.raises(UnsupportedError, match="without keys"):
        xf_adapter.xformers_attention(q_long, q, q, causal=True,
                                      alibi_slopes=torch.tensor([0.5]))
    assert xformers == []


def test_cuda_only_adapters_state_what_they_lack():
    import harness

    xf = harness.get("xformers")
    assert "forward-only" in xf.supports(device="cuda", dtype="float16", gqa=True,
                                         backward=True, run_probe=False).reason
    assert "float16/bfloat16" in xf.supports(device="cuda", dtype="float32", window=True,
                                             run_probe=False).reason
    assert "two-sided local" in xf.supports(device="cuda", dtype="float16", window=True,
                                            documents=True, run_probe=False).reason
    assert "key-padding" in xf.supports(device="cuda", dtype="float16",
                                        key_padding_mask=True, run_probe=False).reason
    for ok in (dict(window=True, causal=True, dtype="float32"), dict(alibi=True, gqa=True),
               dict(window=True, documents=True, causal=True)):
        query = harness.contract.registry.Query(device="cuda", **{"dtype": "float16", **ok})
        assert xf.not_supported_reasons(query) == [], ok
    paths = dict(harness.get("flash_attn").capabilities.paths)
    assert "flash_attn_varlen_func" in paths["documents"]
    assert "flash_attn_varlen_func" in paths["key_padding_mask"]


FEATURES = ("causal", "masked", "gqa", "q_len", "window", "alibi", "documents", "softcap",
            "sinks")


@pytest.mark.parametrize("name", ["flash_attn", "xformers"])
def test_every_combination_claimed_passes_the_gate_on_the_fakes(name, flash, xformers):
    """The correctness gate's own inputs for each of the 2^9 feature combinations the
    capabilities and constraints accept on CUDA; the fakes stand in for the packages."""
    import itertools

    import harness
    from harness.measure.gate import check
    from harness.contract.registry import Query

    impl = harness.get(name)
    claimed = 0
    for values in itertools.product((False, True), repeat=len(FEATURES)):
        combo = dict(zip(FEATURES, values))
        query = Query(device="cuda", dtype="float16", key_padding_mask=combo["masked"],
                      **{f: combo[f] for f in FEATURES if f != "masked"})
        if impl.not_supported_reasons(query):
            continue
        claimed += 1
        result = check(impl, device="cpu", dtype="float64", shape=(2, 2, 32, 8), **combo)
        assert result.passed, (combo, result.message)
    # flash_attn: 64 without padding + padding alone with or without GQA and Tq != Tk, each
    # with and without softcap (no sinks); xformers: 64 less the two-sided windows inside
    # documents (4), no softcap or sinks
    assert claimed == (136 if name == "flash_attn" else 60)


def test_xformers_traffic_counts_the_dense_alibi_bias():
    from harness.contract.records import Point
    from harness.metrics.traffic import tiled_exact

    plain = Point("xformers", seq_len=1024, head_dim=64, heads=8, dtype="float16",
                  device="cuda", causal=True)
    alibi = Point("xformers", seq_len=1024, head_dim=64, heads=8, dtype="float16",
                  device="cuda", causal=True, alibi=True)
    assert xf_adapter.traffic(plain) == tiled_exact(plain)
    extra = xf_adapter.traffic(alibi).bytes_moved - tiled_exact(alibi).bytes_moved
    assert extra == 8 * 1024 * 1024 * 2            # Hq x T x T fp16, read once (forward)
    assert "ALiBi" in xf_adapter.traffic(alibi).model


@pytest.mark.parametrize("kw", [dict(causal=True), dict(causal=False, alibi=True, tq=5),
                                dict(causal=True, documents=3, window=(4, 0))])
def test_flash_attn_passes_softcap_natively(kw, flash):
    """softcap reaches flash_attn_func / flash_attn_varlen_func as ``softcap=cap`` (a float),
    and the answer is the capped reference; without it the keyword stays at 0.0."""
    q, k, v, extra, kw = _masked_case(kw)
    ref = exact_attention(q, k, v, causal=kw["causal"], softcap=1.5, **extra)
    out = fa_adapter.flash_attn(*(torch.from_numpy(x) for x in (q, k, v)), causal=kw["causal"],
                                softcap=1.5, **_torch(extra))
    assert np.abs(_np(out) - ref).max() < 1e-10
    assert np.abs(ref - exact_attention(q, k, v, causal=kw["causal"], **extra)).max() > 1e-3
    if "document_ids" not in extra:
        assert flash[0]["softcap"] == 1.5
    flash.clear()
    fa_adapter.flash_attn(*(torch.from_numpy(x) for x in (q, k, v)), causal=kw["causal"],
                          **_torch(extra))
    if "document_ids" not in extra:
        assert flash[0]["softcap"] == 0.0


def test_cuda_only_adapters_state_why_not_softcap_or_sinks():
    import harness
    from harness.contract.registry import Query

    fa, xf = harness.get("flash_attn"), harness.get("xformers")
    assert fa.not_supported_reasons(Query(device="cuda", dtype="float16", softcap=True,
                                          gqa=True, documents=True, causal=True)) == []
    (reason,) = fa.not_supported_reasons(Query(device="cuda", dtype="float16", sinks=True))
    assert "no sink term" in reason
    assert [r.split(" has no ")[1][:7] for r in xf.not_supported_reasons(
        Query(device="cuda", dtype="float16", softcap=True, sinks=True))] == ["softcap",
                                                                              "sink te"]
