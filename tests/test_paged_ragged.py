"""Paged KV caches and ragged batches (the page_size and lengths axes): layouts, seeded lengths,
the float64 reference, the gate of the methods that claim them, FLOPs and point ids."""

from __future__ import annotations

import numpy as np
import pytest

from harness.contract.paging import from_pages, page_table, paged_kv, to_pages
from harness.contract.ragged import lengths_for, parse_lengths, parse_spec
from harness.contract.records import Point
from harness.contract.reference import exact_attention
from harness.contract.registry import get
from harness.errors import UsageError
from harness.measure.gate import check_point
from harness.metrics.flops import attention_flops, point_tokens
from harness.metrics.traffic import compulsory


def ragged_point(spec: str = "", page: int = 0, **kw) -> Point:
    extra = tuple(sorted({**({"lengths": spec} if spec else {}),
                          **({"page_size": page} if page else {})}.items()))
    base = dict(batch=4, heads=4)
    return Point(kw.pop("impl", "softmax_torch"), kw.pop("seq_len", 64), 32,
                 extra_axes=extra, **{**base, **kw})


# -- lengths ----------------------------------------------------------------------------------
def test_lengths_are_seeded_reproducible_and_capped():
    a = lengths_for("uniform:512-8K@3", batch=64, seq_len=4096, q_len=1)
    b = lengths_for("uniform:512-8K@3", batch=64, seq_len=4096, q_len=1)
    c = lengths_for("uniform:512-8K@4", batch=64, seq_len=4096, q_len=1)
    assert np.array_equal(a.kv, b.kv) and not np.array_equal(a.kv, c.kv)
    assert a.kv.min() >= 512 and a.kv.max() <= 4096   # the seq_len cap
    assert (a.q == 1).all()                           # decode


def test_zipf_is_heavy_towards_short_and_prefill_queries_equal_keys():
    z = lengths_for("zipf:1.2:16-4K", batch=512, seq_len=4096, q_len=0)
    assert 16 <= z.kv.min() and z.kv.max() <= 4096
    assert np.median(z.kv) < (16 + 4096) / 2
    assert np.array_equal(z.q, z.kv)                 # prefill: query length = key length


def test_mixed_batch_has_p_prefills_beside_decodes():
    m = lengths_for("uniform:8-64+mixed:2", batch=5, seq_len=64, q_len=0)
    assert list(m.q[:3]) == [1, 1, 1] and np.array_equal(m.q[3:], m.kv[3:])
    assert m.summary()["prefills"] == 2


def test_file_lengths_in_order_and_cycled(tmp_path):
    path = tmp_path / "lengths.txt"
    path.write_text("5\n70\n9\n")
    got = lengths_for(f"file:{path}", batch=5, seq_len=64, q_len=1)
    assert list(got.kv) == [5, 64, 9, 5, 64]


@pytest.mark.parametrize("bad", ["uniform:9-3", "zipf:0:1-4", "normal:1-2", "file:",
                                 "zipf:1.1.1:16-64", "zipf:.:1-4"])
def test_bad_specs_name_the_flag(bad):
    with pytest.raises(UsageError, match="--lengths"):
        parse_spec(bad)


@pytest.mark.parametrize("content", [None, "", "12\nabc\n", "4\n0\n"])
def test_a_lengths_file_is_read_when_the_flag_is(tmp_path, content):
    """A missing, empty or non-numeric file is one usage error at parse time (the sweep exits
    2), not an error record at every point of the grid."""
    path = tmp_path / "lengths.txt"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UsageError, match="--lengths"):
        parse_lengths(f"file:{path}")


def test_parse_lengths_list_and_default():
    assert parse_lengths("uniform:1-4,zipf:1.1:2-8@1+mixed:1") == \
        ("uniform:1-4", "zipf:1.1:2-8@1+mixed:1")
    assert parse_lengths("none") == ("",)


def test_workload_problems():
    assert "q_len" in ragged_point("uniform:8-64", q_len=7).workload_problem()
    assert "mixed" in ragged_point("uniform:8-64+mixed:1", q_len=1).workload_problem()
    assert "batch" in ragged_point("uniform:8-64+mixed:9").workload_problem()
    assert "documents" in ragged_point("uniform:8-64", documents=2).workload_problem()
    # a page longer than the whole key cache: the pool would be B pages of mostly padding
    assert "seq_len" in ragged_point(page=1 << 20).workload_problem()
    assert ragged_point(page=64).workload_problem() is None
    assert ragged_point("uniform:8-64+mixed:2", page=16, causal=True).workload_problem() is None


@pytest.mark.parametrize("pass_", ["backward", "forward_backward"])
def test_paged_with_a_backward_pass_is_unsupported_with_the_reason(pass_):
    """A grid's forward+backward group beside --page-size is a record that says why, not a
    grid error that stops the sweep."""
    point = ragged_point(page=16, pass_=pass_)
    assert point.workload_problem() is None
    for name in ("softmax_torch", "flex_attention", "sdpa_math"):
        verdict = get(name).supports(features=point.all_features(), run_probe=False)
        assert not verdict and "forward pass only" in verdict.reason
    forward = ragged_point(page=16).all_features()
    assert get("softmax_torch").supports(features=forward, run_probe=False)


def test_the_sweep_gate_of_a_ragged_point_is_ragged():
    """The gate a sweep runs for a point with --lengths (gate.check with the point's features)
    has sequences of different lengths: a method that ignores them fails it."""
    import dataclasses

    from harness.measure.gate import GATE_SHAPE, check, workload_inputs
    (q, _, _, _), extra = workload_inputs(GATE_SHAPE, features=("ragged",))
    assert q.shape[0] > 1 and len(set(extra["kv_lengths"].tolist())) > 1

    method = get("softmax_torch")

    def ignores_lengths(q, k, v, *, q_lengths=None, kv_lengths=None, **kw):
        return method.fn(q, k, v, **kw)

    blind = dataclasses.replace(method, name="ignores_lengths", fn=ignores_lengths)
    for causal in (False, True):
        assert check(method, device="cpu", dtype="float32", causal=causal,
                     features=("ragged",)).passed
        assert not check(blind, device="cpu", dtype="float32", causal=causal,
                         features=("ragged",)).passed


# -- paging -----------------------------------------------------------------------------------
def test_page_table_is_a_seeded_shuffle_of_the_pool():
    lengths = np.array([40, 64, 3])
    table, pages = page_table(lengths, 16)
    assert pages == 3 + 4 + 1
    used = np.concatenate([table[0, :3], table[1, :4], table[2, :1]])
    assert sorted(used) == list(range(pages))                  # every page once
    assert not np.array_equal(used, np.arange(pages))          # not in memory order
    assert np.array_equal(page_table(lengths, 16)[0], table)   # seeded


def test_pages_round_trip_to_the_dense_cache():
    rng = np.random.default_rng(0)
    lengths = np.array([40, 64, 3])
    k = rng.standard_normal((3, 2, 64, 8))
    table, pages = page_table(lengths, 16)
    pool = to_pages(k, lengths, 16, table, pages)
    assert pool.shape == (pages, 16, 2, 8)                       # (pages, page_size, Hkv, D)
    back = from_pages(pool, lengths, table, 64)
    for b, n in enumerate(lengths):                              # right-aligned real keys
        assert np.array_equal(back[b, :, 64 - n:], k[b, :, 64 - n:])
        assert not back[b, :, :64 - n].any()


def test_reference_of_a_ragged_batch_is_each_sequence_alone():
    rng = np.random.default_rng(1)
    q_n, kv_n = np.array([3, 1]), np.array([9, 5])
    q, k, v = (rng.standard_normal((2, 2, t, 8)) for t in (4, 12, 12))
    out = exact_attention(q, k, v, causal=True, q_lengths=q_n, kv_lengths=kv_n)
    for b in range(2):
        alone = exact_attention(q[b:b + 1, :, 4 - q_n[b]:], k[b:b + 1, :, 12 - kv_n[b]:],
                                v[b:b + 1, :, 12 - kv_n[b]:], causal=True)
        assert np.allclose(out[b:b + 1, :, 4 - q_n[b]:], alone)
        assert not out[b, :, :4 - q_n[b]].any()                  # padded queries: zeros


@pytest.mark.parametrize("impl", ["softmax_torch", "sdpa_math"])
def test_paged_equals_dense_on_the_same_values(impl):
    """A method fed the pools gives what it gives on the dense cache (same values)."""
    import torch

    method = get(impl).fn
    rng = np.random.default_rng(2)
    lengths = np.array([64, 21, 50])
    q = rng.standard_normal((3, 4, 1, 16))
    k, v = (rng.standard_normal((3, 2, 64, 16)) for _ in range(2))
    paged = paged_kv(k, v, 16, lengths)
    t = torch.from_numpy
    dense = method(t(q), t(k), t(v), causal=True, kv_lengths=t(lengths))
    via_pages = method(t(q), t(paged["k"]), t(paged["v"]), causal=True,
                       kv_lengths=t(paged["kv_lengths"]), page_table=t(paged["page_table"]))
    assert torch.allclose(dense, via_pages, atol=1e-12)


# -- gates ------------------------------------------------------------------------------------
CASES = [dict(page=16, causal=True), dict(spec="uniform:8-64", q_len=1, kv_heads=2),
         dict(spec="zipf:1.1:4-64+mixed:2", causal=True),
         dict(spec="uniform:5-64", page=8, q_len=1, causal=True, window=8)]


@pytest.mark.parametrize("impl", ["softmax_torch", "sdpa_math"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: str(sorted(c.items())))
def test_claiming_methods_pass_the_gate(impl, case):
    case = dict(case)
    point = ragged_point(case.pop("spec", ""), case.pop("page", 0), impl=impl, **case)
    result = check_point(get(impl), point)
    assert result.passed, result.message


def test_flex_attention_paged_and_ragged_pass_the_gate():
    pytest.importorskip("torch.nn.attention.experimental._paged_attention")
    impl = get("flex_attention")
    for point in (ragged_point("uniform:5-64+mixed:1", 16, impl="flex_attention", causal=True),
                  ragged_point("uniform:8-64", impl="flex_attention", q_len=1, kv_heads=2)):
        result = check_point(impl, point)
        assert result.passed, result.message


@pytest.mark.parametrize("impl", ["performer_torch", "hrr_torch"])
def test_other_methods_give_reasons(impl):
    reasons = get(impl).capabilities.missing_reasons({"paged", "ragged"})
    assert len(reasons) == 2 and all(reasons)


# -- metrics and ids --------------------------------------------------------------------------
def test_flops_and_tokens_follow_the_real_lengths():
    point = ragged_point("uniform:8-64+mixed:1", causal=True)
    lengths = lengths_for("uniform:8-64+mixed:1", batch=4, seq_len=64, q_len=0)
    assert point_tokens(point) == lengths.q.sum() < point.tokens
    pairs = sum(int(k) if q == 1 else int(k) * (int(k) + 1) // 2
                for q, k in zip(lengths.q, lengths.kv))
    assert attention_flops(point) == 4.0 * 4 * 32 * pairs
    assert compulsory(point).bytes_moved < compulsory(ragged_point(causal=True)).bytes_moved


def test_default_values_keep_point_ids():
    plain = Point("softmax_torch", 64, 32)
    assert Point("softmax_torch", 64, 32, extra_axes=(("lengths", ""), ("page_size", 0))) \
        .point_id == plain.point_id
    paged = ragged_point(page=16)
    assert Point.from_dict(paged.as_dict()) == paged
    assert paged.workload_label() == "page=16"


@pytest.mark.parametrize("impl", ["softmax_torch", "flex_attention"])
@pytest.mark.parametrize("extra", [(("page_size", 16), ("softcap", 2.0)),
                                   (("page_size", 16), ("sinks", True)),
                                   (("lengths", "uniform:8-64"), ("sinks", True),
                                    ("softcap", 2.0)),
                                   (("head_dim_v", 16), ("page_size", 16)),
                                   (("head_dim_v", 16), ("lengths", "uniform:8-64"))])
def test_paged_and_ragged_points_keep_their_softcap_sinks_and_value_dim(impl, extra):
    """A paged or ragged decode step with a softcap, sinks or D_v != D: the method's paged
    path applies them (flex's paged prepare takes the same score_mod, the sink rescaling and
    v's own head dim)."""
    from harness.contract.registry import REGISTRY, static_check
    from harness.measure.gate import check_point

    point = Point(impl, seq_len=64, head_dim=32, heads=4, batch=2, causal=True, q_len=1,
                  extra_axes=tuple(sorted(extra)))
    method = REGISTRY.get(impl)
    assert static_check(method, point) is None
    result = check_point(method, point)
    assert result.passed, result.message
