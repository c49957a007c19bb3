"""Every available exact implementation matches the float64 reference, per dtype tolerance."""

from __future__ import annotations

import numpy as np
import pytest

import harness
from harness.contract.reference import exact_attention

# flex_attention compiles once per shape and mask structure (20 s to minutes each on a 2-core
# CPU): its correctness on causal, padding and every workload is the one slow test in
# tests/test_workloads.py rather than the 18 compilations this grid would take
EXACT = [impl.name for impl in harness.all_implementations()
         if impl.family == "exact" and impl.name != "flex_attention"]
TOLERANCE = {"float64": 1e-10, "float32": 3e-6}


def _masks(batch: int, seq_len: int) -> list[np.ndarray | None]:
    right_padded = np.ones((batch, seq_len), dtype=bool)
    right_padded[0, seq_len // 2:] = False
    scattered = np.random.default_rng(5).random((batch, seq_len)) > 0.3
    scattered[:, 0] = True
    return [None, right_padded, scattered]


@pytest.mark.parametrize("name", EXACT)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", [(2, 3, 37, 16), (1, 2, 1, 8), (1, 1, 64, 33)])
def test_exact_matches_reference(name, dtype, causal, shape, rng):
    impl = harness.get(name)
    q, k, v = (rng.standard_normal(shape) for _ in range(3))
    for mask in _masks(shape[0], shape[2]):
        verdict = impl.supports(device="cpu", dtype=dtype, causal=causal,
                                key_padding_mask=mask is not None)
        if not verdict:
            # Unavailable here: the reason must say why (no silent skip inside the test).
            assert verdict.reason
            continue
        out = harness.attention(name, q.astype(dtype), k.astype(dtype), v.astype(dtype),
                                causal=causal, key_padding_mask=mask)
        assert out.dtype == np.dtype(dtype)
        ref = exact_attention(q, k, v, causal=causal, key_padding_mask=mask)
        np.testing.assert_allclose(out, ref, atol=TOLERANCE[dtype], rtol=0,
                                   err_msg=f"{name} {dtype} causal={causal}")


@pytest.mark.parametrize("name", ["softmax_torch", "sdpa_math", "sdpa_flash", "softmax_jax"])
def test_fully_masked_rows_are_zero_not_nan(name, rng):
    if not harness.get(name).availability("cpu"):
        pytest.skip(harness.get(name).availability("cpu").reason)
    q, k, v = (rng.standard_normal((1, 1, 6, 4)).astype(np.float32) for _ in range(3))
    mask = np.array([[False, True, True, True, True, True]])
    out = harness.attention(name, q, k, v, causal=True, key_padding_mask=mask)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[0, 0, 0], 0.0)
    np.testing.assert_allclose(out, exact_attention(q, k, v, causal=True, key_padding_mask=mask),
                               atol=3e-6)


def test_reference_is_really_softmax_attention(rng):
    """The reference itself, against a loop written from the definition."""
    q, k, v = (rng.standard_normal((1, 1, 5, 3)) for _ in range(3))
    expected = np.zeros((5, 3))
    for i in range(5):
        scores = np.array([q[0, 0, i] @ k[0, 0, j] / np.sqrt(3) for j in range(i + 1)])
        weights = np.exp(scores - scores.max())
        weights /= weights.sum()
        expected[i] = sum(w * v[0, 0, j] for j, w in enumerate(weights))
    np.testing.assert_allclose(exact_attention(q, k, v, causal=True)[0, 0], expected, atol=1e-12)


def test_half_precision_exact_on_cpu_within_half_tolerance(rng):
    import torch

    q, k, v = (torch.tensor(rng.standard_normal((1, 2, 32, 16)), dtype=torch.float32)
               for _ in range(3))
    ref = exact_attention(q.numpy(), k.numpy(), v.numpy(), causal=True)
    for name in ("softmax_torch", "sdpa_math", "sdpa_flash"):
        for dtype, tol in ((torch.bfloat16, 3e-2), (torch.float16, 5e-3)):
            out = harness.get(name).fn(q.to(dtype), k.to(dtype), v.to(dtype), causal=True)
            assert out.dtype == dtype
            np.testing.assert_allclose(out.float().numpy(), ref, atol=tol, rtol=0)
