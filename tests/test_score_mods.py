"""The softcap and sinks axes: table rows, the float64 reference against a direct computation,
the inputs a sweep and the gate build, and the methods that claim them (CPU)."""

from __future__ import annotations

import numpy as np
import pytest

import harness
from harness.contract.axes import get_axis
from harness.contract.point_masks import point_mask, sink_logits
from harness.contract.records import Point, SpeedRecord
from harness.contract.reference import exact_attention
from harness.errors import UsageError
from harness.measure.gate import check, check_point


def direct(q, k, v, *, causal=False, softcap=0.0, sinks=None, alibi=None):
    """Row by row, head by head, with Python loops: the definitions as written (Gemma 2's
    cap * tanh(s / cap) on the scaled score before ALiBi and the causal mask; gpt-oss's sink
    exp(sink_h) in the denominator)."""
    batch, heads, t_q, dim = q.shape
    t_k = k.shape[2]
    group = heads // k.shape[1]
    out = np.zeros((batch, heads, t_q, v.shape[-1]))
    for b in range(batch):
        for h in range(heads):
            for i in range(t_q):
                pos = i + t_k - t_q
                logits, values = [], []
                for j in range(t_k):
                    if causal and j > pos:
                        continue
                    s = float(q[b, h, i] @ k[b, h // group, j]) / np.sqrt(dim)
                    if softcap:
                        s = softcap * np.tanh(s / softcap)
                    if alibi is not None:
                        s -= alibi[h] * abs(pos - j)
                    logits.append(s)
                    values.append(v[b, h // group, j])
                extra = [] if sinks is None else [float(sinks[h])]
                top = max(logits + extra)
                weights = np.exp(np.array(logits) - top)
                total = weights.sum() + sum(np.exp(x - top) for x in extra)
                out[b, h, i] = (weights[:, None] * np.array(values)).sum(0) / total
    return out


@pytest.mark.parametrize("kw", [dict(softcap=1.5), dict(sinks=True), dict(softcap=0.7, sinks=True,
                                causal=True, alibi=True), dict(sinks=True, causal=True, t_q=3)])
def test_reference_matches_the_direct_definitions(kw):
    kw = dict(kw)
    rng = np.random.default_rng(3)
    t_q = kw.pop("t_q", 9)
    q = rng.standard_normal((2, 4, t_q, 8)) * 2
    k, v = rng.standard_normal((2, 2, 9, 8)) * 2, rng.standard_normal((2, 2, 9, 8))
    sinks = rng.standard_normal(4) * 3 if kw.pop("sinks", False) else None
    alibi = np.array([0.5, 0.25, 0.125, 0.0625]) if kw.pop("alibi", False) else None
    ref = exact_attention(q, k, v, sinks=sinks, alibi_slopes=alibi, **kw)
    assert np.abs(ref - direct(q, k, v, sinks=sinks, alibi=alibi, **kw)).max() < 1e-12
    assert np.abs(ref - exact_attention(q, k, v, causal=kw.get("causal", False),
                                        alibi_slopes=alibi)).max() > 1e-3


def test_a_row_without_keys_outputs_zero_with_sinks():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((1, 2, 4, 8)) for _ in range(3))
    keep = np.array([[False] * 4])
    out = exact_attention(q, k, v, key_padding_mask=keep, sinks=np.array([0.0, 50.0]),
                          softcap=2.0)
    assert np.isfinite(out).all() and not out.any()


def test_rows_point_ids_labels_and_records():
    cap, sinks = get_axis("softcap"), get_axis("sinks")
    assert (cap.default, sinks.default) == (0.0, False) and cap.field is sinks.field is None
    assert cap.parse("50,none,30.5") == (50.0, 0.0, 30.5)
    for bad in ("-1", "inf", "wide"):
        with pytest.raises(UsageError, match="--softcap"):
            cap.parse(bad)
    plain = Point("softmax_torch", seq_len=64, head_dim=32)
    zero = Point("softmax_torch", seq_len=64, head_dim=32,
                 extra_axes=(("softcap", 0.0), ("sinks", False)))
    assert zero == plain and zero.point_id == plain.point_id   # defaults: ids unchanged
    point = Point("softmax_torch", seq_len=64, head_dim=32,
                  extra_axes=(("softcap", 50.0), ("sinks", True)))
    assert point.workload_label() == "softcap=50 sinks"
    assert point.features() == {"softcap", "sinks"}
    record = SpeedRecord.for_point(point, framework="torch", family="exact", status="ok")
    data = record.to_json()
    assert data["axes"] == {"softcap": 50.0, "sinks": True}
    back = SpeedRecord.from_json(data).point
    assert back == point and back.point_id == point.point_id == data["point_id"]


def test_sink_logits_are_seeded_apart_from_the_inputs():
    point = Point("softmax_torch", seq_len=16, head_dim=8, heads=4, extra_axes=(("sinks", True),))
    from harness.measure.gate import point_inputs

    (q, k, v, _), mask = point_inputs(point, seed=5)
    (q0, k0, v0, _), plain = point_inputs(Point("softmax_torch", seq_len=16, head_dim=8,
                                                heads=4), seed=5)
    assert all(np.array_equal(a, b) for a, b in ((q, q0), (k, k0), (v, v0)))
    assert "sinks" not in plain and mask["sinks"].shape == (4,)
    assert np.array_equal(mask["sinks"], sink_logits(4, 5))
    assert not np.array_equal(sink_logits(4, 5), sink_logits(4, 6))
    assert point_mask(point, seed=5)["sinks"].tolist() == mask["sinks"].tolist()


def test_the_timed_workload_and_its_fidelity_use_the_same_sink_logits():
    """The workload is built with the run's seed; fidelity's reference takes the workload's own
    mask, so its sink logits are the ones the method ran with."""
    from harness.contract.frameworks import torch_fw
    from harness.measure.output_checks import fidelity

    impl = harness.get("softmax_torch")
    point = Point("softmax_torch", seq_len=32, head_dim=8, heads=2, causal=True,
                  extra_axes=(("softcap", 2.0), ("sinks", True)))
    work = torch_fw.make_workload(impl, point, seed=7)
    assert np.array_equal(work.mask["sinks"], sink_logits(2, 7))
    assert work.mask["softcap"] == 2.0
    deviation, rows = fidelity(work.run(), work, point, torch_fw)
    assert rows and deviation < 1e-6


@pytest.mark.parametrize("name", ["softmax_torch", "softmax_jax", "flex_attention"])
def test_methods_that_claim_them_pass_the_gate(name):
    impl = harness.get(name)
    assert {"softcap", "sinks"} <= impl.capabilities.features
    combos = [("softcap",), ("sinks",), ("softcap", "sinks", "gqa", "window"),
              ("sinks", "q_len", "alibi"), ("softcap", "documents")]
    for features in combos:
        for causal in (False, True):
            result = check(impl, device="cpu", dtype="float32", causal=causal,
                           masked=name != "flex_attention" or causal, features=features)
            assert result.passed, (features, causal, result.message)


def test_the_gate_tells_a_method_that_ignores_them():
    """GATE_SOFTCAP bends the scores and the sinks take weight: ignoring either fails."""
    from harness.contract.registry import Capabilities, Implementation
    from implementations.softmax_torch import softmax_torch

    def ignores(q, k, v, *, causal=False, key_padding_mask=None, softcap=None, sinks=None):
        return softmax_torch(q, k, v, causal=causal, key_padding_mask=key_padding_mask)

    impl = Implementation("ignores", "torch", "exact",
                          Capabilities(devices=("cpu",), causal=True, softcap=True, sinks=True),
                          ignores)
    for features in (("softcap",), ("sinks",)):
        assert not check(impl, device="cpu", dtype="float32", features=features).passed


def test_check_point_builds_a_sweeps_inputs():
    impl = harness.get("softmax_torch")
    point = Point("softmax_torch", seq_len=64, head_dim=16, heads=4, kv_heads=2, causal=True,
                  window=16, extra_axes=(("softcap", 2.0), ("sinks", True)))
    assert check_point(impl, point, seed=2).passed


def test_methods_without_them_say_why():
    expected = {"sdpa_math": ("additive attn_mask", "no sink term"),
                "hrr_torch": ("no query-key logit", "cosines"),
                "performer_torch": ("feature maps", "normaliser"),
                "flash_attn": (None, "no sink term"),
                "xformers": ("no softcap", "no sink term")}
    for name, (softcap, sinks) in expected.items():
        caps = harness.get(name).capabilities
        assert ("softcap" in caps.features) == (softcap is None), name
        if softcap is not None:
            assert softcap in caps.missing_reasons(["softcap"])[0], name
        assert sinks in caps.missing_reasons(["sinks"])[0], name


def test_flex_sink_rescale_is_exact_and_safe():
    """out * sigmoid(lse - sink) == out * exp(lse) / (exp(lse) + exp(sink)), and a row without
    keys (lse = -inf) stays 0 without NaN."""
    import torch

    from implementations.flex_attention import sink_rescaled

    out = torch.ones(1, 2, 3, 4)
    lse = torch.tensor([[[0.0, 80.0, -float("inf")], [-3.0, 1.0, 2.0]]])
    sinks = torch.tensor([90.0, -1.0])
    got = sink_rescaled(out, lse, sinks)
    lse64, sink64 = lse.double(), sinks.double()[None, :, None]
    want = torch.where(torch.isinf(lse64), 0.0,
                       1 / (1 + torch.exp(sink64 - lse64)))
    assert torch.isfinite(got).all()
    assert torch.allclose(got[..., 0].double(), want, atol=1e-6)


@pytest.mark.gpu
def test_flex_attention_sinks_and_softcap_on_cuda_pass_the_gate():
    """On CUDA flex_attention's compiled kernel returns the log-sum-exp (return_aux): the
    fused path, forward and backward."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA (flex_attention's compiled log-sum-exp)")
    impl = harness.get("flex_attention")
    for dtype in ("float32", "bfloat16"):
        for features in (("softcap", "sinks", "gqa"), ("sinks", "window", "q_len")):
            result = check(impl, device="cuda", dtype=dtype, causal=True, features=features)
            assert result.passed, (dtype, features, result.message)
    point = Point("flex_attention", seq_len=256, head_dim=64, heads=4, kv_heads=2,
                  causal=True, pass_="forward_backward", device="cuda", dtype="bfloat16",
                  extra_axes=(("softcap", 50.0), ("sinks", True)))
    from harness.contract.frameworks import torch_fw

    work = torch_fw.make_workload(impl, point)
    work.setup()
    assert work.check(work.run())
