"""v's head dim D_v != q's and k's D (axis head_dim_v) and DeepSeek-V3's MLA shapes: the float64
reference, the point and its record, inputs, FLOPs and bytes, the output-shape check, the methods
that take it (each passes the gate) and the reasons of those that do not."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

import harness
from harness.contract.head_dims import (
    HRR_HEAD_DIMS,
    MLA_DECODE_DIMS,
    MLA_PREFILL_DIMS,
    value_dim,
    value_shapes,
)
from harness.contract.records import Point, SpeedRecord
from harness.contract.reference import exact_attention
from harness.grid.workload_cases import builtin_cases
from harness.measure.gate import check, check_point, point_inputs, workload_inputs
from harness.metrics.flops import attention_flops, point_pairs
from harness.metrics.traffic import compulsory, materialised, tiled_exact

FLOAT32_TOL = 3e-6


def _point(impl="softmax_torch", *, dim_v=0, **kw):
    base = dict(impl=impl, seq_len=64, head_dim=32, batch=1, heads=4)
    extra = (("head_dim_v", dim_v),) if dim_v else ()
    return Point(**{**base, **kw}, extra_axes=extra)


def mla_prefill(impl: str) -> Point:
    dim, dim_v = MLA_PREFILL_DIMS
    return _point(impl, head_dim=dim, dim_v=dim_v, causal=True)


def mla_decode(impl: str) -> Point:
    dim, dim_v = MLA_DECODE_DIMS
    return _point(impl, head_dim=dim, dim_v=dim_v, kv_heads=1, q_len=1, causal=True)


# -- the reference ----------------------------------------------------------------------------
def _direct(q, k, v, *, causal):
    """softmax(q k^T / sqrt(D)) v one (batch, head, query) row at a time; query head h reads
    key/value head h // group; causal bottom-right (query i sees keys j <= i + Tk - Tq)."""
    b, hq, tq, d = q.shape
    hkv, tk, dv = k.shape[1], k.shape[2], v.shape[-1]
    out = np.zeros((b, hq, tq, dv))
    for bi in range(b):
        for h in range(hq):
            kv = h // (hq // hkv)
            for i in range(tq):
                keys = tk if not causal else i + tk - tq + 1
                s = np.array([q[bi, h, i] @ k[bi, kv, j] for j in range(keys)]) / np.sqrt(d)
                w = np.exp(s - s.max())
                out[bi, h, i] = (w / w.sum()) @ v[bi, kv, :keys]
    return out


@pytest.mark.parametrize("shape,causal", [
    (dict(hq=4, hkv=4, tq=9, tk=9, d=12, dv=5), False),
    (dict(hq=4, hkv=2, tq=3, tk=11, d=8, dv=16), True),
    (dict(hq=4, hkv=1, tq=1, tk=10, d=18, dv=16), True),   # the absorbed decode's form
])
def test_reference_with_unequal_head_dims_is_the_direct_computation(shape, causal, rng):
    q = rng.standard_normal((2, shape["hq"], shape["tq"], shape["d"]))
    k = rng.standard_normal((2, shape["hkv"], shape["tk"], shape["d"]))
    v = rng.standard_normal((2, shape["hkv"], shape["tk"], shape["dv"]))
    out = exact_attention(q, k, v, causal=causal)
    assert out.shape == (2, shape["hq"], shape["tq"], shape["dv"])
    np.testing.assert_allclose(out, _direct(q, k, v, causal=causal), rtol=1e-12, atol=1e-12)


# -- the point, its id and its record ---------------------------------------------------------
def test_head_dim_v_equal_to_head_dim_is_the_default_and_keeps_the_point_id():
    plain = _point()
    same = _point(dim_v=32)
    assert same == plain and same.point_id == plain.point_id
    assert same.extra_axes == () and value_dim(same) == 32
    assert "head_dim_v" not in plain.as_dict() and "head_dim_v" not in plain.features()


def test_mla_points_label_store_and_read_back():
    point = mla_decode("softmax_torch")
    assert value_dim(point) == 512 and point.features() >= {"head_dim_v", "gqa", "q_len"}
    assert point.workload_label() == "Hkv=1 Tq=1 Dv=512"
    assert point.point_id != _point(head_dim=576, kv_heads=1, q_len=1, causal=True).point_id
    record = SpeedRecord.for_point(point, framework="torch", family="exact", status="ok")
    data = record.to_json()
    assert data["axes"] == {"head_dim_v": 512} and data["head_dim"] == 576
    assert SpeedRecord.from_json(data).point == point
    assert data["point_id"] == point.point_id
    # a table's column holds the resolved D_v, D itself at the default
    assert point.columns()["head_dim_v"] == 512 and _point().columns()["head_dim_v"] == 32
    assert value_shapes(point) == ((1, 1, 64, 512), (1, 4, 1, 512))


def test_gate_inputs_give_v_its_own_head_dim():
    (q, k, v, _), _ = point_inputs(mla_prefill("softmax_torch"))
    assert q.shape[-1] == k.shape[-1] == 192 and v.shape == (1, 4, 64, 128)
    (q, k, v, _), _ = workload_inputs((1, 2, 16, 8), features={"head_dim_v", "gqa"})
    assert q.shape == (1, 4, 16, 8) and k.shape == (1, 2, 16, 8) and v.shape == (1, 2, 16, 4)
    # at the default the inputs are those drawn before the axis existed (same seed, same draws)
    (_, k0, v0, _), _ = point_inputs(_point(dim_v=32))
    rng = np.random.default_rng(0)
    rng.standard_normal((1, 4, 64, 32))
    np.testing.assert_array_equal(k0, rng.standard_normal((1, 4, 64, 32)))
    np.testing.assert_array_equal(v0, rng.standard_normal((1, 4, 64, 32)))


# -- FLOPs and bytes --------------------------------------------------------------------------
def test_flops_count_qk_over_d_and_pv_over_d_v():
    point = mla_prefill("softmax_torch")
    pairs = point_pairs(point)
    assert pairs == 64 * 65 // 2
    assert attention_flops(point) == 2 * 4 * 192 * pairs + 2 * 4 * 128 * pairs
    plain = _point(causal=True)
    assert attention_flops(plain) == 4 * 4 * 32 * point_pairs(plain)


def test_bytes_count_v_and_the_output_at_d_v():
    point = mla_decode("sdpa_math")          # fp32: q (1,4,1,576), k (1,1,64,576), v/o at 512
    q, o = 4 * 576 * 4, 4 * 512 * 4
    k, v = 64 * 576 * 4, 64 * 512 * 4
    assert compulsory(point).bytes_moved == q + o + k + v
    assert tiled_exact(point).bytes_moved == q + o + k + v
    # the copy of k, v to the 4 query heads: read one head, write four, both k and v
    copy = (1 + 4) * (k + v)
    scores = 4 * 1 * 64 * 4
    assert materialised(kv_copy=True)(point).bytes_moved == \
        q + o + 4 * (k + v) + 4 * scores + copy
    backward = Point(**{**point.__dict__, "pass_": "backward"})
    # read q, k, v, dO, write dq, dk, dv (compulsory), + o and the log-sum-exp read (tiled)
    assert compulsory(backward).bytes_moved == 2 * q + o + 2 * k + 2 * v
    assert tiled_exact(backward).bytes_moved == 2 * q + o + 2 * k + 2 * v + o + 4 * 4


# -- the output shape and the frameworks' workloads -------------------------------------------
def test_output_shape_check_expects_v_head_dim():
    from harness.measure.output_checks import output_shape_problem

    q, k, v = torch.zeros(1, 4, 3, 16), torch.zeros(1, 2, 8, 16), torch.zeros(1, 2, 8, 8)
    assert output_shape_problem(torch.zeros(1, 4, 3, 8), (q, k, v), "forward") == ""
    assert "expected (1, 4, 3, 8)" in output_shape_problem(torch.zeros(1, 4, 3, 16), (q, k, v),
                                                           "forward")
    assert output_shape_problem(torch.zeros(1, 4, 3, 16), (q, k, v), "backward") == ""


@pytest.mark.parametrize("pass_", ["forward", "forward_backward", "backward"])
def test_torch_workload_draws_v_and_the_output_gradient_at_d_v(pass_):
    from harness.contract.frameworks import torch_fw
    from harness.measure.output_checks import output_shape_problem

    point = _point(dim_v=16, kv_heads=2, q_len=5, causal=True, pass_=pass_)
    work = torch_fw.make_workload(harness.get("softmax_torch"), point)
    work.setup()
    value = work.run()
    q, k, v = work.inputs[:3]
    assert v.shape == (1, 2, 64, 16) and k.shape == (1, 2, 64, 32)
    assert tuple(value.shape) == ((1, 4, 5, 16) if pass_ == "forward" else (1, 4, 5, 32))
    assert output_shape_problem(value, work.inputs, pass_) == ""


def test_jax_workload_draws_v_and_the_cotangent_at_d_v():
    pytest.importorskip("jax")
    from harness.contract.frameworks import jax_fw
    from harness.measure.output_checks import output_shape_problem

    for pass_ in ("forward", "forward_backward"):
        point = _point("softmax_jax", dim_v=16, kv_heads=2, pass_=pass_)
        work = jax_fw.make_workload(harness.get("softmax_jax"), point)
        work.setup()
        value = work.run()
        assert work.inputs[2].shape == (1, 2, 64, 16)
        assert output_shape_problem(value, work.inputs, pass_) == ""


# -- methods ----------------------------------------------------------------------------------
CLAIMING_CPU = ["softmax_torch", "sdpa_math", "softmax_jax"]


@pytest.mark.parametrize("name", CLAIMING_CPU)
@pytest.mark.parametrize("features,causal", [
    ({"head_dim_v"}, False),
    ({"head_dim_v", "gqa", "q_len"}, True),
    ({"head_dim_v", "window", "alibi"}, True),
    ({"head_dim_v", "documents", "gqa"}, False),
])
def test_cpu_methods_that_claim_head_dim_v_pass_the_gate(name, features, causal):
    impl = harness.get(name)
    assert impl.capabilities.has("head_dim_v")
    result = check(impl, device="cpu", dtype="float32", causal=causal, features=features)
    assert result.passed, result.message
    result = check(impl, device="cpu", dtype="float64", causal=causal, masked=True,
                   features=features)
    assert result.passed, result.message


@pytest.mark.parametrize("name", ["softmax_torch", "sdpa_math", "flex_attention"])
@pytest.mark.parametrize("build", [mla_prefill, mla_decode], ids=["prefill", "decode"])
def test_mla_shapes_pass_the_gate(name, build):
    point = build(name)
    impl = harness.get(name)
    assert not impl.not_supported_reasons(
        harness.contract.registry.Query("cpu", "float32", point.all_features()))
    result = check_point(impl, point)
    assert result.passed and result.max_error < FLOAT32_TOL, result.message


def test_flex_attention_takes_a_smaller_v_with_a_mask():
    impl = harness.get("flex_attention")
    result = check(impl, device="cpu", dtype="float32", causal=True,
                   features={"head_dim_v", "window", "gqa"})
    assert result.passed, result.message


def test_performer_output_takes_v_head_dim():
    impl = harness.get("performer_torch")
    result = check(impl, device="cpu", dtype="float32", causal=True,
                   features={"head_dim_v", "gqa", "q_len"})
    assert result.passed and np.isfinite(result.deviation_from_softmax), result.message


REFUSING = {
    "sdpa_flash": "check_head_dim_size_flash",
    "flash_attn": "FlashAttention 2 needs v's head dim",
    "hrr_torch": HRR_HEAD_DIMS,
    "hrr_jax": HRR_HEAD_DIMS,
    "hrr_triton": HRR_HEAD_DIMS,
}


@pytest.mark.parametrize("name", sorted(REFUSING))
def test_methods_without_head_dim_v_refuse_with_the_reason(name):
    impl = harness.get(name)
    device = impl.capabilities.devices[0]
    dtype = impl.capabilities.dtypes[-1]
    verdict = impl.supports(device=device, dtype=dtype, run_probe=False,
                            features={"head_dim_v"})
    assert not verdict and REFUSING[name] in verdict.reason


def test_sdpa_flash_refusal_is_torchs_own():
    """The claim is right: torch's CPU flash kernel refuses v of another head dim."""
    from harness.errors import UnsupportedError
    from implementations.sdpa import sdpa_attention

    q = torch.randn(1, 2, 8, 16)
    with pytest.raises(UnsupportedError, match="same last dimension"):
        sdpa_attention(q, q, torch.randn(1, 2, 8, 8), backend="FLASH_ATTENTION")


def test_xformers_passes_the_gate_with_d_v_on_its_fake(monkeypatch):
    from test_workload_adapters import _fake_xformers

    calls: list = []
    root, ops = _fake_xformers(calls)
    monkeypatch.setitem(sys.modules, "xformers", root)
    monkeypatch.setitem(sys.modules, "xformers.ops", ops)
    impl = harness.get("xformers")
    for features, causal in (({"head_dim_v"}, True), ({"head_dim_v", "gqa", "q_len"}, True),
                             ({"head_dim_v", "alibi", "gqa"}, False)):
        assert not impl.not_supported_reasons(
            harness.contract.registry.Query("cuda", "float16", features | {"causal"}))
        result = check(impl, device="cpu", dtype="float64", causal=causal, features=features)
        assert result.passed, (features, result.message)
    reasons = impl.not_supported_reasons(
        harness.contract.registry.Query("cuda", "float16", {"head_dim_v", "window"}))
    assert any("flash operator only" in r for r in reasons)


def test_check_workloads_has_the_mla_cases():
    points = {case.name: case.point for case in builtin_cases()}
    prefill = points["mla prefill D=192 Dv=128 causal"]
    decode = points["mla decode D=576 Dv=512 Hkv=1 Tq=1"]
    assert (prefill.head_dim, value_dim(prefill), prefill.causal) == (192, 128, True)
    assert (decode.head_dim, value_dim(decode), decode.n_kv_heads, decode.n_queries) == \
        (576, 512, 1, 1)
    assert value_dim(points["Dv=16 (D=32)"]) == 16


# -- on a GPU (pytest -m gpu): the CUDA kernels' own limits ----------------------------------
GPU_CLAIMING = ["softmax_torch", "sdpa_math", "sdpa_efficient", "sdpa_cudnn", "flex_attention",
                "xformers"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="no CUDA device: torch.cuda.is_available() is False")
@pytest.mark.parametrize("name", GPU_CLAIMING)
@pytest.mark.parametrize("build", [mla_prefill, mla_decode], ids=["prefill", "decode"])
def test_mla_shapes_on_cuda_pass_or_are_refused_with_torchs_reason(name, build):
    """Each method claiming head_dim_v passes the gate at MLA's shapes on CUDA (bfloat16), or,
    where a kernel has head-dim limits of its own (cuDNN's at most 128/192/256), is refused
    with the library's reason: never a wrong answer or a crash."""
    from dataclasses import replace

    impl = harness.get(name)
    verdict = impl.supports(device="cuda", dtype="bfloat16")
    if not verdict:
        pytest.skip(verdict.reason)
    point = replace(build(name), device="cuda", dtype="bfloat16")
    result = check_point(impl, point)
    if not result.passed:
        assert result.message.startswith("UnsupportedError"), result.message
        assert name in ("sdpa_cudnn", "flex_attention", "xformers"), result.message
