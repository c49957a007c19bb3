"""harness.metrics.traffic follows the workload axes: GQA/MQA, Tq != Tk, windows, ALiBi, documents."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import harness
from harness.metrics import traffic
from harness.contract.masking import allowed_mask
from harness.contract.records import Point

PASSES = ("forward", "backward", "forward_backward")


def point(**kw) -> Point:
    base = dict(impl="x", seq_len=256, head_dim=32, batch=2, heads=8, dtype="float32")
    return Point(**{**base, **kw})


def impl_model(name: str):
    return next(i for i in harness.all_implementations() if i.name == name).traffic


# -- square self-attention keeps the numbers of the models before the workload axes -------------
def old_numbers(p: Point) -> dict[str, float]:
    """The formulas of the models as they were (B, H, T, D only), written out."""
    e = traffic.element_bytes(p.dtype)
    size = p.batch * p.heads * p.seq_len * p.head_dim * e
    square = p.batch * p.heads * p.seq_len ** 2 * e
    rows = p.batch * p.heads * p.seq_len * 4
    features = p.batch * p.heads * p.seq_len * 16 * max(e, 4)
    by = {"forward": lambda f, b: f, "backward": lambda f, b: b,
          "forward_backward": lambda f, b: f + b}[p.pass_]
    return {"compulsory": by(4 * size, 7 * size),
            "materialised": by(4 * size + 4 * square, 7 * size + 5 * square),
            "tiled": by(4 * size, 8 * size + rows) + (rows if p.pass_ == "forward_backward"
                                                      else 0),
            "features": by(4 * size + 4 * features, 7 * size + 6 * features),
            "hrr": by(4 * size + 2 * rows, 7 * size + rows)}


@pytest.mark.parametrize("pass_", PASSES)
@pytest.mark.parametrize("causal", (False, True))
@pytest.mark.parametrize("dtype", ("float32", "bfloat16"))
def test_square_self_attention_keeps_its_numbers(pass_, causal, dtype):
    p = point(pass_=pass_, causal=causal, dtype=dtype)
    old = old_numbers(p)
    assert traffic.compulsory(p).bytes_moved == old["compulsory"]
    assert traffic.materialised_scores(p).bytes_moved == old["materialised"]
    assert traffic.materialised(kv_copy=True, alibi_bias="rows")(p).bytes_moved == \
        old["materialised"]
    assert traffic.tiled_exact(p).bytes_moved == old["tiled"]
    assert traffic.tiled(alibi_bias="rows")(p).bytes_moved == old["tiled"]
    assert traffic.random_features(16)(p).bytes_moved == old["features"]
    assert traffic.hrr(p).bytes_moved == old["hrr"]
    # the built-in methods: those that were "materialised" / "tiled" still give those numbers
    for name in ("softmax_torch", "sdpa_math", "softmax_jax"):
        assert impl_model(name)(p).bytes_moved == old["materialised"], name
    for name in ("sdpa_flash", "flex_attention"):
        assert impl_model(name)(p).bytes_moved == old["tiled"], name


# -- GQA / MQA ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kv_heads", (2, 1))
def test_fused_gqa_reads_k_and_v_once_per_kv_head(kv_heads):
    mha, gqa = point(), point(kv_heads=kv_heads)
    e = 4
    kv_mha = 2 * 8 * 256 * 32 * e                  # one of k, v with Hkv = Hq
    for model in (traffic.tiled_exact, traffic.materialised_scores, traffic.compulsory,
                  traffic.hrr):
        saved = model(mha).bytes_moved - model(gqa).bytes_moved
        assert saved == 2 * kv_mha * (1 - kv_heads / 8), model   # k and v, Hq/Hkv fewer
    # the naive baseline copies k, v to the query heads: GQA costs it more, not less
    copying = impl_model("softmax_torch")
    copy = 2 * (kv_mha * kv_heads / 8 + kv_mha)   # read k, v (Hkv heads), write Hq-head copies
    assert copying(gqa).bytes_moved == copying(mha).bytes_moved + copy
    assert impl_model("sdpa_math")(gqa).bytes_moved == copying(gqa).bytes_moved
    bwd = point(kv_heads=kv_heads, pass_="backward")
    assert copying(bwd).bytes_moved == copying(point(pass_="backward")).bytes_moved + copy


# -- decode and Tq != Tk -----------------------------------------------------------------------
def test_decode_step_is_the_kv_cache_worked_by_hand():
    p = Point(impl="x", seq_len=1000, head_dim=64, batch=2, heads=8, kv_heads=2,
              q_len=1, dtype="float16", causal=True)
    q = 2 * 8 * 1 * 64 * 2                     # 2048 bytes: q (and o as much)
    kv = 2 * 2 * 1000 * 64 * 2                 # 512000 bytes: k (and v as much)
    assert traffic.tiled_exact(p).bytes_moved == 2 * q + 2 * kv == 1_028_096
    assert 2 * kv / traffic.tiled_exact(p).bytes_moved > 0.99
    scores = 2 * 8 * 1 * 1000 * 2              # the 1 x Tk scores, per (batch, head)
    assert traffic.materialised_scores(p).bytes_moved == 1_028_096 + 4 * scores
    # a window of 100 keys back: a tiled kernel reads the last 101 keys only; a method that
    # materialises the scores reads all 1000
    w = Point(**{**p.__dict__, "window": 100})
    assert traffic.tiled_exact(w).bytes_moved == 2 * q + 2 * (2 * 2 * 101 * 64 * 2) == 107_520
    assert traffic.materialised_scores(w).bytes_moved == \
        traffic.materialised_scores(p).bytes_moved


def test_chunk_of_queries_sizes_q_and_scores_by_tq():
    p = point(q_len=7, seq_len=29, causal=True)
    e = 4
    q, kv = 2 * 8 * 7 * 32 * e, 2 * 8 * 29 * 32 * e
    assert traffic.compulsory(p).bytes_moved == 2 * q + 2 * kv
    assert traffic.materialised_scores(p).bytes_moved == 2 * q + 2 * kv + 4 * (2 * 8 * 7 * 29 * e)


def test_keys_seen_matches_a_brute_force_count():
    rng = np.random.default_rng(0)
    for _ in range(60):
        t_k = int(rng.integers(1, 40))
        t_q = int(rng.integers(1, 40))
        causal = bool(rng.integers(2))
        window = int(rng.integers(-1, 12))
        p = point(seq_len=t_k, q_len=t_q, causal=causal, window=window)
        mask = allowed_mask(t_q, t_k, causal=causal, window=p.window_pair)
        seen = t_k if mask is None else int(mask[0, 0].any(axis=0).sum())
        # a key no query sees only arises from a window; otherwise all Tk (also for Tq > Tk
        # causal, where early queries see nothing but the last sees every key)
        assert traffic.keys_seen(p) == seen, (t_q, t_k, causal, window)


# -- ALiBi and documents -----------------------------------------------------------------------
def test_alibi_bias_tensor_counted_where_it_is_built():
    plain, alibi = point(causal=True), point(causal=True, alibi=True)
    bias = 8 * 256 * 256 * 4                   # (1, Hq, T, T) float32
    assert impl_model("softmax_torch")(alibi).bytes_moved == \
        impl_model("softmax_torch")(plain).bytes_moved + 2 * bias
    assert impl_model("sdpa_flash")(alibi).bytes_moved == \
        impl_model("sdpa_flash")(plain).bytes_moved + 2 * bias
    # with documents SDPA's bias also holds the mask: one per batch row
    docs, docs_alibi = point(documents=3), point(documents=3, alibi=True)
    assert impl_model("sdpa_math")(docs_alibi).bytes_moved == \
        impl_model("sdpa_math")(docs).bytes_moved + 2 * 2 * bias
    # fused paths (score_mod, compiled jit, slopes) build no bias tensor
    for name in ("flex_attention", "softmax_jax"):
        assert impl_model(name)(alibi).bytes_moved == impl_model(name)(plain).bytes_moved
    # a tiled backward reads the bias again; a materialising backward works from P
    assert impl_model("sdpa_flash")(point(alibi=True, pass_="backward")).bytes_moved == \
        impl_model("sdpa_flash")(point(pass_="backward")).bytes_moved + bias
    assert impl_model("sdpa_math")(point(alibi=True, pass_="backward")).bytes_moved == \
        impl_model("sdpa_math")(point(pass_="backward")).bytes_moved


def test_documents_cost_no_extra_bytes_without_a_bias():
    for name in ("softmax_torch", "sdpa_math", "sdpa_flash", "flex_attention", "softmax_jax"):
        model = impl_model(name)
        assert model(point(documents=4, causal=True)).bytes_moved == \
            model(point(causal=True)).bytes_moved, name


def test_every_builtin_model_follows_every_axis_purely():
    combos = [dict(kv_heads=2), dict(kv_heads=1, q_len=1, causal=True),
              dict(q_len=7, seq_len=29, causal=True), dict(window=16, causal=True),
              dict(window=16), dict(alibi=True, causal=True), dict(documents=3, window=8)]
    for impl in (i for i in harness.all_implementations()
                 if i.module.startswith("implementations.")):
        for combo, pass_ in itertools.product(combos, PASSES):
            p = point(impl=impl.name, pass_=pass_, **combo)
            first, again = impl.traffic(p), impl.traffic(p)
            assert first == again and first.bytes_moved >= traffic.compulsory(p).bytes_moved, \
                (impl.name, combo, pass_)
