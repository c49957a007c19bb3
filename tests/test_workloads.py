"""Workloads beyond square self-attention: GQA/MQA, Tq != Tk (bottom-right causal), windows,
ALiBi, packed documents, padding; every exact method that claims one matches the float64
reference, and one that does not claim it refuses with a reason."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import harness
from harness.errors import UnsupportedError, UsageError
from harness.contract.masking import allowed_mask, allowed_pairs, alibi_slopes, packed_document_ids
from harness.contract.reference import exact_attention

EXACT_CPU = ["softmax_torch", "sdpa_math", "sdpa_flash", "softmax_jax"]
FLOAT32_TOL = 3e-6


def _case(rng, *, b=2, hq=4, hkv=4, tq=29, tk=29, d=16):
    q = rng.standard_normal((b, hq, tq, d))
    k = rng.standard_normal((b, hkv, tk, d))
    v = rng.standard_normal((b, hkv, tk, d))
    return q, k, v


def _padding(b, tk):
    keep = np.ones((b, tk), dtype=bool)
    keep[0, tk // 2:] = False
    keep[-1, : tk // 3] = False   # with a window, some queries of this row see no key
    return keep


CASES = {
    "gqa": dict(shape=dict(hq=8, hkv=2), kw=dict(causal=True)),
    "mqa": dict(shape=dict(hq=4, hkv=1), kw=dict(causal=False)),
    "decode_causal": dict(shape=dict(tq=1, tk=29, hq=4, hkv=2), kw=dict(causal=True)),
    "chunk_causal": dict(shape=dict(tq=7, tk=29), kw=dict(causal=True)),
    "chunk_noncausal": dict(shape=dict(tq=7, tk=29), kw=dict(causal=False)),
    "window_one_sided": dict(shape=dict(), kw=dict(causal=True, window=(5, 0))),
    "window_two_sided": dict(shape=dict(), kw=dict(causal=False, window=(4, 3))),
    "window_left_unbounded": dict(shape=dict(), kw=dict(causal=False, window=(-1, 2))),
    "window_chunk": dict(shape=dict(tq=7, tk=29, hq=4, hkv=2), kw=dict(causal=True,
                                                                         window=(6, 0))),
    "alibi_causal": dict(shape=dict(), kw=dict(causal=True, alibi=True)),
    "alibi_decode_gqa": dict(shape=dict(tq=1, hq=4, hkv=1), kw=dict(causal=True, alibi=True)),
    "documents_causal": dict(shape=dict(), kw=dict(causal=True, documents=3)),
    "documents_window": dict(shape=dict(hq=4, hkv=2), kw=dict(causal=False, documents=4,
                                                               window=(3, 3))),
    "padding_window": dict(shape=dict(), kw=dict(causal=True, window=(4, 0), padding=True)),
    "padding_chunk": dict(shape=dict(tq=7, tk=29), kw=dict(causal=True, padding=True)),
}


def _inputs(name, rng):
    case = CASES[name]
    q, k, v = _case(rng, **case["shape"])
    kw = dict(case["kw"])
    b, hq, tq, _ = q.shape
    tk = k.shape[2]
    if kw.pop("alibi", False):
        kw["alibi_slopes"] = alibi_slopes(hq)
    docs = kw.pop("documents", None)
    if docs:
        kw["document_ids"] = packed_document_ids(b, tk, docs, seed=3)
    if kw.pop("padding", False):
        kw["key_padding_mask"] = _padding(b, tk)
    return q, k, v, kw


def _features(q, k, kw):
    return dict(gqa=k.shape[1] != q.shape[1], q_len=q.shape[2] != k.shape[2],
                window=kw.get("window") is not None, alibi=kw.get("alibi_slopes") is not None,
                documents=kw.get("document_ids") is not None)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("name", EXACT_CPU)
def test_exact_methods_match_reference_on_workloads(name, case, rng):
    q, k, v, kw = _inputs(case, rng)
    impl = harness.get(name)
    verdict = impl.supports(device="cpu", dtype="float32", causal=kw.get("causal", False),
                            key_padding_mask=kw.get("key_padding_mask") is not None,
                            **_features(q, k, kw))
    assert verdict, verdict.reason   # these four claim every feature on the CPU
    ref = exact_attention(q, k, v, **kw)
    out = harness.attention(name, *(x.astype(np.float32) for x in (q, k, v)), **kw)
    assert out.shape == q.shape
    assert np.abs(out - ref).max() <= FLOAT32_TOL * max(1.0, np.abs(ref).max())


def test_sdpa_math_chunk_causal_is_bottom_right(rng):
    """The case that was wrong (top-left is_causal, max error 2.4): Tq=7, Tk=29, causal."""
    q, k, v = _case(rng, b=1, hq=2, hkv=2, tq=7, tk=29)
    out = harness.attention("sdpa_math", *(x.astype(np.float32) for x in (q, k, v)),
                            causal=True)
    ref = exact_attention(q, k, v, causal=True)
    assert np.abs(out - ref).max() < 1e-5
    # and it is not the top-left answer
    top_left = np.tril(np.ones((7, 29), dtype=bool))
    assert not np.array_equal(allowed_mask(7, 29, causal=True)[0, 0], top_left)


def test_reference_conventions():
    # bottom-right causal: the last query sees every key, the first sees Tk - Tq + 1
    mask = allowed_mask(3, 5, causal=True)[0, 0]
    assert mask[-1].all() and mask[0].sum() == 3
    # window (1, 0) with causal: each query sees itself and one key back
    mask = allowed_mask(4, 4, causal=True, window=(1, 0))[0, 0]
    assert mask.sum(-1).tolist() == [1, 2, 2, 2]
    # documents: a block-diagonal mask
    docs = np.array([[0, 0, 1, 1, 1]])
    mask = allowed_mask(5, 5, document_ids=docs)[0, 0]
    assert mask.sum() == 4 + 9
    # ALiBi sign: a larger distance lowers the score; slopes as BLOOM's for 8 heads
    assert np.allclose(alibi_slopes(8), 2.0 ** (-np.arange(1, 9)))
    q = np.zeros((1, 1, 1, 4))
    k = np.zeros((1, 1, 3, 4))
    v = np.arange(3, dtype=float).reshape(1, 1, 3, 1) * np.ones((1, 1, 3, 4))
    out = exact_attention(q, k, v, alibi_slopes=np.array([1.0]))
    weights = np.exp([-2.0, -1.0, 0.0]) / np.exp([-2.0, -1.0, 0.0]).sum()
    assert np.allclose(out[0, 0, 0, 0], weights @ np.arange(3))


def test_fully_masked_query_outputs_zero(rng):
    q, k, v = _case(rng, b=1, hq=2, hkv=1, tq=6, tk=6)
    keep = np.array([[False, False, False, True, True, True]])
    for name in EXACT_CPU:
        out = harness.attention(name, *(x.astype(np.float32) for x in (q, k, v)), causal=True,
                                window=(1, 0), key_padding_mask=keep)
        assert np.all(out[0, :, :2] == 0), name   # queries 0 and 1 see no kept key


def test_allowed_pairs_equals_brute_force():
    rng = np.random.default_rng(7)
    for _ in range(300):
        t_k = int(rng.integers(1, 40))
        t_q = int(rng.integers(1, t_k + 1)) if rng.random() < 0.6 else t_k
        b = int(rng.integers(1, 4))
        causal = bool(rng.random() < 0.5)
        window = None
        if rng.random() < 0.6:
            window = (int(rng.integers(-1, 10)), int(rng.integers(-1, 10)))
        docs = None
        if t_q == t_k and rng.random() < 0.4:
            docs = packed_document_ids(b, t_k, int(rng.integers(1, t_k + 1)),
                                       seed=int(rng.integers(100)))
        keep = rng.random((b, t_k)) > 0.3 if rng.random() < 0.4 else None
        mask = allowed_mask(t_q, t_k, causal=causal, window=window, document_ids=docs,
                            key_padding_mask=keep)
        if mask is None:
            brute = b * t_q * t_k
        else:
            brute = int(np.broadcast_to(mask, (b, 1, t_q, t_k)).sum())
        assert allowed_pairs(t_q, t_k, causal=causal, window=window, document_ids=docs,
                             key_padding_mask=keep, batch=b) == brute


def test_packed_documents_are_seeded_and_cover_t():
    a = packed_document_ids(2, 100, 5, seed=1)
    assert np.array_equal(a, packed_document_ids(2, 100, 5, seed=1))
    assert a.shape == (2, 100)
    for row in a:
        assert np.all(np.diff(row) >= 0) and set(row.tolist()) == set(range(5))


def test_method_without_a_feature_refuses_with_reason(rng):
    q, k, v = _case(rng, b=1, hq=2, hkv=2, tq=7, tk=29)
    with pytest.raises(UnsupportedError, match="every query position"):
        harness.attention("hrr_torch", *(x.astype(np.float32) for x in (q, k, v)))
    with pytest.raises(UsageError, match="Tq == Tk"):
        harness.attention("sdpa_math", q, k, v, document_ids=np.zeros((1, 29), dtype=int))


def test_grid_of_flags_runs_everywhere(rng):
    """Every exact CPU method across causal x window x alibi x gqa x Tq != Tk at once."""
    for causal, window, alibi, tq in itertools.product((False, True), (None, (3, 2)),
                                                       (False, True), (29, 5)):
        q, k, v = _case(rng, b=1, hq=4, hkv=2, tq=tq, tk=29, d=8)
        kw = dict(causal=causal, window=window,
                  alibi_slopes=alibi_slopes(4) if alibi else None)
        ref = exact_attention(q, k, v, **kw)
        for name in EXACT_CPU:
            out = harness.attention(name, *(x.astype(np.float32) for x in (q, k, v)), **kw)
            assert np.abs(out - ref).max() <= FLOAT32_TOL * max(1.0, np.abs(ref).max()), \
                (name, causal, window, alibi, tq)


# -- approximate and HRR methods: what they can do ------------------------------------------
def test_performer_gqa_is_sharing_and_bottom_right_causal_is_a_suffix(rng):
    q, k, v = _case(rng, b=1, hq=4, hkv=2, tq=29, tk=29, d=8)
    f32 = [x.astype(np.float32) for x in (q, k, v)]
    shared = harness.attention("performer_torch", *f32, causal=True)
    expanded = harness.attention("performer_torch", f32[0], np.repeat(f32[1], 2, axis=1),
                                 np.repeat(f32[2], 2, axis=1), causal=True)
    assert np.allclose(shared, expanded, atol=1e-5)
    # bottom-right causal with Tq = 7: the last 7 rows of the square causal output
    chunk = harness.attention("performer_torch", f32[0][:, :, -7:], f32[1], f32[2],
                              causal=True)
    assert np.allclose(chunk, shared[:, :, -7:], atol=1e-5)
    decode = harness.attention("performer_torch", f32[0][:, :, -1:], f32[1], f32[2],
                               causal=True)
    assert np.allclose(decode, shared[:, :, -1:], atol=1e-5)
    for feature, kw in (("window", dict(window=(3, 0))), ("ALiBi", dict(alibi_slopes=np.ones(4))),
                        ("documents", dict(document_ids=np.zeros((1, 29), dtype=int)))):
        with pytest.raises(UnsupportedError, match="performer_torch"):
            harness.attention("performer_torch", *f32, **kw)


@pytest.mark.parametrize("name", ["hrr_torch", "hrr_jax"])
def test_hrr_gqa_matches_reference_and_refuses_q_len(name, rng):
    from harness.contract.reference import hrr_attention

    q, k, v = _case(rng, b=1, hq=4, hkv=2, tq=33, tk=33, d=16)
    keep = np.ones((1, 33), dtype=bool)
    keep[0, 25:] = False
    out = harness.attention(name, *(x.astype(np.float32) for x in (q, k, v)),
                            key_padding_mask=keep)
    ref = hrr_attention(q, k, v, key_padding_mask=keep)
    assert np.abs(out - ref).max() < 2e-5
    with pytest.raises(UnsupportedError, match="every query position"):
        harness.attention(name, *(x.astype(np.float32) for x in (q[:, :, :7], k, v)))


@pytest.mark.slow
def test_flex_attention_matches_reference_on_workloads(rng):
    """flex_attention (torch.compile'd; each new mask structure compiles, ~20-40 s on this CPU)
    on every workload case, in one process so that compilations are shared where they can be."""
    impl = harness.get("flex_attention")
    if not impl.availability("cpu", "float32"):
        pytest.skip(impl.availability("cpu", "float32").reason)
    for case in CASES:
        q, k, v, kw = _inputs(case, rng)
        ref = exact_attention(q, k, v, **kw)
        out = harness.attention("flex_attention", *(x.astype(np.float32) for x in (q, k, v)),
                                **kw)
        assert np.abs(out - ref).max() <= FLOAT32_TOL * max(1.0, np.abs(ref).max()), case
