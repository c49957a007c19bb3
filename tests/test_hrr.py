"""hrr_torch and hrr_jax against a straightforward reference written here from the definition.

The reference follows the original formulation literally: complex FFT, bind per token,
explicit approximate inverse a'[i] = a[-i mod D], cosine, softmax over tokens, w_t * v_t.
"""

from __future__ import annotations

import numpy as np
import pytest

import harness

HRR = ["hrr_torch", "hrr_jax"]


def circular_convolution(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.real(np.fft.ifft(np.fft.fft(a, axis=-1) * np.fft.fft(b, axis=-1), axis=-1))


def approximate_inverse(a: np.ndarray) -> np.ndarray:
    dim = a.shape[-1]
    return a[..., [(-i) % dim for i in range(dim)]]


def hrr_by_definition(q, k, v, key_padding_mask=None):
    batch, heads, seq_len, dim = q.shape
    keep = np.ones((batch, seq_len), bool) if key_padding_mask is None else key_padding_mask
    out = np.zeros_like(q, dtype=np.float64)
    for b in range(batch):
        for h in range(heads):
            beta = np.zeros(dim)
            for t in range(seq_len):
                if keep[b, t]:
                    beta += circular_convolution(k[b, h, t], v[b, h, t])
            scores = np.full(seq_len, -np.inf)
            for t in range(seq_len):
                if not keep[b, t]:
                    continue
                vhat = circular_convolution(beta, approximate_inverse(q[b, h, t]))
                norm = np.linalg.norm(v[b, h, t]) * np.linalg.norm(vhat)
                scores[t] = (v[b, h, t] @ vhat) / max(norm, 1e-12)
            if np.isfinite(scores).any():
                weights = np.exp(scores - scores[np.isfinite(scores)].max())
                weights /= weights.sum()
                out[b, h] = weights[:, None] * v[b, h]
    return out


def _available(name):
    verdict = harness.get(name).availability("cpu")
    if not verdict:
        pytest.fail(f"{name} must run on this CPU machine: {verdict.reason}")


@pytest.mark.parametrize("name", HRR)
@pytest.mark.parametrize("dim", [16, 17, 64, 1, 2])
@pytest.mark.parametrize("seq_len", [1, 2, 29])
def test_hrr_matches_definition(name, dim, seq_len, rng):
    _available(name)
    q, k, v = (rng.standard_normal((2, 2, seq_len, dim)) for _ in range(3))
    expected = hrr_by_definition(q, k, v)
    out = harness.attention(name, *(x.astype(np.float32) for x in (q, k, v)))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=0)
    out64 = harness.attention(name, q, k, v)
    assert out64.dtype == np.float64
    np.testing.assert_allclose(out64, expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize("name", HRR)
@pytest.mark.parametrize("dim", [8, 9])
def test_hrr_masks_exclude_keys_and_zero_weights(name, dim, rng):
    _available(name)
    q, k, v = (rng.standard_normal((2, 3, 12, dim)) for _ in range(3))
    mask = np.ones((2, 12), bool)
    mask[0, 7:] = False
    mask[1, ::3] = False
    expected = hrr_by_definition(q, k, v, mask)
    out = harness.attention(name, *(x.astype(np.float32) for x in (q, k, v)),
                            key_padding_mask=mask)
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=0)
    assert (out[0, :, 7:] == 0).all()
    # masked keys really are excluded from beta: changing them changes nothing
    k2, v2 = k.copy(), v.copy()
    k2[~mask[:, None, :].repeat(3, 1)] = 100.0
    v2[0, :, 7:] = -50.0
    out2 = harness.attention(name, *(x.astype(np.float32) for x in (q, k2, v2)),
                             key_padding_mask=mask)
    np.testing.assert_allclose(out2, out, atol=1e-5)


@pytest.mark.parametrize("name", HRR)
def test_zero_vectors_give_no_nan(name, rng):
    _available(name)
    q, k, v = (rng.standard_normal((1, 2, 6, 8)).astype(np.float32) for _ in range(3))
    q[0, 0, 2] = 0.0
    v[0, 1, 4] = 0.0
    k[0, 1] = 0.0  # beta of head 1 is zero: every vhat there is zero
    out = harness.attention(name, q, k, v)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, hrr_by_definition(q, k, v), atol=1e-5)
    all_masked = harness.attention(name, q, k, v, key_padding_mask=np.zeros((1, 6), bool))
    assert np.isfinite(all_masked).all() and (all_masked == 0).all()


def test_torch_and_jax_agree(rng):
    for name in HRR:
        _available(name)
    q, k, v = (rng.standard_normal((2, 4, 100, 32)).astype(np.float32) for _ in range(3))
    np.testing.assert_allclose(harness.attention("hrr_torch", q, k, v),
                               harness.attention("hrr_jax", q, k, v), atol=1e-6)


def test_approximate_inverse_is_conjugate_spectrum(rng):
    a = rng.standard_normal(10)
    np.testing.assert_allclose(np.fft.fft(approximate_inverse(a)), np.conj(np.fft.fft(a)),
                               atol=1e-12)


def test_hrr_half_precision_runs_in_float32_and_casts_back(rng):
    import torch

    q, k, v = (torch.tensor(rng.standard_normal((1, 2, 16, 8)), dtype=torch.float32)
               for _ in range(3))
    expected = hrr_by_definition(q.numpy(), k.numpy(), v.numpy())
    for dtype in (torch.bfloat16, torch.float16):
        out = harness.get("hrr_torch").fn(q.to(dtype), k.to(dtype), v.to(dtype))
        assert out.dtype == dtype
        np.testing.assert_allclose(out.float().numpy(), expected, atol=2e-2)
