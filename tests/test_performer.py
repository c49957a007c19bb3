"""Performer (FAVOR+): convergence with more features, exact causal prefix sums, masks, seeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import harness
from harness.contract.reference import exact_attention, relative_error
from implementations.performer_torch import (
    favor_features,
    orthogonal_random_features,
    performer_attention,
)


def _inputs(rng, shape=(2, 2, 48, 16), scale=0.5):
    return [torch.tensor(rng.standard_normal(shape) * scale) for _ in range(3)]


def test_error_shrinks_as_features_grow(rng):
    q, k, v = _inputs(rng)
    ref = exact_attention(q.numpy(), k.numpy(), v.numpy())
    counts = [8, 32, 128, 512, 2048]
    mean_errors = []
    for m in counts:
        errors = [relative_error(performer_attention(q, k, v, num_features=m, seed=s).numpy(),
                                 ref) for s in range(6)]
        mean_errors.append(float(np.mean(errors)))
    assert all(a > b for a, b in zip(mean_errors, mean_errors[1:])), mean_errors
    assert mean_errors[-1] < 0.5 * mean_errors[0]


def test_causal_matches_direct_computation_with_same_features(rng):
    q, k, v = _inputs(rng, shape=(1, 2, 600, 8))  # several causal chunks
    projection = orthogonal_random_features(64, 8, seed=3, dtype=torch.float64)
    phi_q = favor_features(q, projection, is_query=True)
    phi_k = favor_features(k, projection, is_query=False)
    # direct: explicit lower-triangular kernel matrix
    kernel = (phi_q @ phi_k.transpose(-2, -1)).tril()
    direct = (kernel @ v) / kernel.sum(-1, keepdim=True)
    out = performer_attention(q, k, v, causal=True, num_features=64, seed=3)
    torch.testing.assert_close(out, direct, atol=1e-10, rtol=1e-9)


def test_noncausal_matches_direct_computation(rng):
    q, k, v = _inputs(rng)
    projection = orthogonal_random_features(32, 16, seed=1, dtype=torch.float64)
    kernel = favor_features(q, projection, is_query=True) @ \
        favor_features(k, projection, is_query=False).transpose(-2, -1)
    direct = (kernel @ v) / kernel.sum(-1, keepdim=True)
    torch.testing.assert_close(performer_attention(q, k, v, num_features=32, seed=1), direct)


def test_features_are_orthogonal_blocks():
    w = orthogonal_random_features(64, 16, seed=0, dtype=torch.float64)
    block = w[:16] / w[:16].norm(dim=1, keepdim=True)
    torch.testing.assert_close(block @ block.T, torch.eye(16, dtype=torch.float64))


def test_seeded_reproducible_and_seed_dependent(rng):
    q, k, v = _inputs(rng)
    a = performer_attention(q, k, v, seed=7)
    torch.testing.assert_close(a, performer_attention(q, k, v, seed=7), rtol=0, atol=0)
    assert not torch.equal(a, performer_attention(q, k, v, seed=8))


def test_key_padding_mask_ignores_masked_keys(rng):
    q, k, v = _inputs(rng)
    mask = torch.ones(2, 48, dtype=torch.bool)
    mask[0, 30:] = False
    out = performer_attention(q, k, v, key_padding_mask=mask)
    k2, v2 = k.clone(), v.clone()
    k2[0, :, 30:] = 3.0
    v2[0, :, 30:] = -9.0
    torch.testing.assert_close(performer_attention(q, k2, v2, key_padding_mask=mask), out)


def test_large_inputs_stay_finite(rng):
    q, k, v = _inputs(rng, scale=8.0)
    out = harness.attention("performer_torch", *(x.float().numpy() for x in (q, k, v)),
                            causal=True)
    assert np.isfinite(out).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs(dtype, rng):
    q, k, v = (x.to(dtype) for x in _inputs(rng))
    out = performer_attention(q, k, v, causal=True)
    assert out.dtype == dtype and torch.isfinite(out.float()).all()


@pytest.mark.parametrize("heads,kv_heads", [(4, 2), (3, 1)])           # GQA, MQA
@pytest.mark.parametrize("t_q", [600, 7, 1, 650])                      # Tq = Tk, chunk, decode, Tq > Tk
def test_gqa_and_bottom_right_causal_match_direct_computation(heads, kv_heads, t_q, rng,
                                                               monkeypatch):
    """Against the direct float64 sum over the allowed pairs (harness.contract.masking, bottom-right)
    with the same features: query head h uses the features and values of key/value head
    h // G; nothing repeats k or v (repeat_interleave refused)."""
    from harness.contract.masking import allowed_mask

    t_k = 600
    q = torch.tensor(rng.standard_normal((2, heads, t_q, 8)) * 0.5)
    k, v = (torch.tensor(rng.standard_normal((2, kv_heads, t_k, 8)) * 0.5) for _ in range(2))
    keep = torch.from_numpy(rng.random((2, t_k)) > 0.2)
    projection = orthogonal_random_features(64, 8, seed=3, dtype=torch.float64)
    phi_q = favor_features(q, projection, is_query=True)
    phi_k = favor_features(k, projection, is_query=False, keep=keep)
    group = heads // kv_heads
    kernel = torch.einsum("bhgim,bhjm->bhgij", phi_q.unflatten(1, (kv_heads, group)), phi_k)
    for causal in (False, True):
        allowed = allowed_mask(t_q, t_k, causal=causal)
        direct_kernel = kernel if allowed is None else \
            kernel * torch.from_numpy(allowed[:, :, None]).to(kernel.dtype)
        num = torch.einsum("bhgij,bhjd->bhgid", direct_kernel, v)
        den = direct_kernel.sum(-1, keepdim=True)
        direct = torch.where(den > 0, num / den.clamp_min(1e-300), 0.0).flatten(1, 2)

        def refuse(*args, **kwargs):
            raise AssertionError("repeat_interleave: k/v copied to the query heads")
        with monkeypatch.context() as patch:
            patch.setattr(torch.Tensor, "repeat_interleave", refuse)
            patch.setattr(torch, "repeat_interleave", refuse)
            out = performer_attention(q, k, v, causal=causal, key_padding_mask=keep,
                                      num_features=64, seed=3)
        assert out.shape == q.shape
        torch.testing.assert_close(out, direct, rtol=1e-9, atol=1e-12)


# ---- the projection is kept per (device, dtype): no copy inside a timed call --------------

def test_the_projection_reaches_a_device_and_dtype_once(monkeypatch, rng):
    """Repeated calls make the device/dtype copy once and then reuse the same tensor (a copy
    per call would be a host-to-device transfer and a sync on a GPU, inside the timed region,
    and could not be captured in a CUDA graph)."""
    from implementations import performer_torch

    made = []
    draw = performer_torch._cached_projection

    def counting(num_features, dim, seed):
        made.append((num_features, dim, seed))
        return draw(num_features, dim, seed)

    monkeypatch.setattr(performer_torch, "_cached_projection", counting)
    performer_torch._projection_on.cache_clear()
    q, k, v = (x.to(torch.float32) for x in _inputs(rng))
    outs = [performer_attention(q, k, v, num_features=48, seed=5) for _ in range(3)]
    assert made == [(48, 16, 5)]
    first = orthogonal_random_features(48, 16, seed=5, dtype=torch.float32)
    assert orthogonal_random_features(48, 16, seed=5, dtype=torch.float32,
                                      device=torch.device("cpu")) is first
    assert first.dtype == torch.float32 and made == [(48, 16, 5)]
    # half-precision inputs compute in float32: the same kept tensor, no new copy
    performer_attention(q.half(), k.half(), v.half(), num_features=48, seed=5)
    assert made == [(48, 16, 5)]
    orthogonal_random_features(48, 16, seed=5, dtype=torch.float64)
    assert made == [(48, 16, 5), (48, 16, 5)]        # another dtype: its own copy, once
    for out in outs[1:]:
        assert torch.equal(out, outs[0])
    # numerics as with a fresh copy of the drawn matrix
    fresh = draw(48, 16, 5).to(torch.float32)
    phi_q = favor_features(q, fresh, is_query=True)
    phi_k = favor_features(k, fresh, is_query=False)
    direct = (phi_q @ (phi_k.transpose(-2, -1) @ v)) / (phi_q @ phi_k.sum(-2).unsqueeze(-1))
    torch.testing.assert_close(outs[0], direct)


def test_a_projection_first_made_under_inference_mode_serves_a_backward(rng):
    from implementations import performer_torch

    performer_torch._projection_on.cache_clear()
    q, k, v = (x.float() for x in _inputs(rng, shape=(1, 2, 16, 8)))  # a float32 copy
    with torch.inference_mode():
        performer_attention(q, k, v, num_features=16, seed=9)
    leaves = [x.clone().requires_grad_() for x in (q, k, v)]
    performer_attention(*leaves, num_features=16, seed=9).sum().backward()
    assert all(x.grad is not None and torch.isfinite(x.grad).all() for x in leaves)


@pytest.mark.gpu
def test_performer_is_captured_in_a_cuda_graph():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU (CUDA graph capture)")
    q, k, v = (torch.randn(1, 2, 256, 64, device="cuda") for _ in range(3))
    expected = performer_attention(q, k, v, causal=True)       # the warm-up keeps the projection
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = performer_attention(q, k, v, causal=True)
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(out, expected)
