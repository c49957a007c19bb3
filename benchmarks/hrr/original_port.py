"""Baseline for the HRR benchmarks: a faithful torch port of the ORIGINAL Hrrformer formulation.

Not registered (it is a benchmark baseline, not an attnbench implementation). It keeps the
structure of the original code (Alam et al., ICML 2023, arXiv 2305.19534):

    bind(a, b)        = ifft(fft(a) * fft(b)).real          complex FFT, one per token
    approx_inverse(a) = a[(-i) mod D]                        explicit flip + roll, materialised
    unbind(s, a)      = bind(s, approx_inverse(a))
    beta   = sum_t bind(k_t, v_t)                            every token bound in the time domain
    vhat_t = unbind(beta, q_t)                               an inverse FFT per token
    a_t    = cosine(v_t, vhat_t);  w = softmax_T(a);  o_t = w_t v_t

Two deliberate departures from the original, so that it computes attnbench's definition and can
be checked against ``harness.contract.reference.hrr_attention``: the cosine is guarded
(dot / max(|v||vhat|, 1e-12); the original divides by the bare product and gives NaN for a zero
vector), and masked keys are excluded from beta and get weight 0 (the original adds -1e9 to the
masked scores but still binds padded keys into beta). float16/bfloat16 inputs are computed in
float32; the output has the input dtype.
"""

from __future__ import annotations

import torch

COSINE_EPS = 1e-12


def bind(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Circular convolution over the last axis with the complex FFT, as in the original."""
    return torch.fft.ifft(torch.fft.fft(a, dim=-1) * torch.fft.fft(b, dim=-1), dim=-1).real


def approx_inverse(a: torch.Tensor) -> torch.Tensor:
    """a_dagger[i] = a[(-i) mod D]: reverse, then rotate by one (the original's flip + roll)."""
    return torch.roll(torch.flip(a, dims=(-1,)), shifts=1, dims=-1)


def unbind(s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    return bind(s, approx_inverse(a))


def cosine_similarity(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    norms = torch.linalg.vector_norm(x, dim=-1, keepdim=True) * \
        torch.linalg.vector_norm(y, dim=-1, keepdim=True)
    return (x * y).sum(-1, keepdim=True) / norms.clamp_min(COSINE_EPS)


def original_hrr_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                           key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, H, T, D) q, k, v -> (B, H, T, D); key_padding_mask (B, T), True = keep."""
    out_dtype = v.dtype
    work = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    q, k, v = q.to(work), k.to(work), v.to(work)
    bound = bind(k, v)                                            # (B, H, T, D)
    if key_padding_mask is not None:
        keep = key_padding_mask.to(device=q.device, dtype=torch.bool)[:, None, :, None]
        bound = bound * keep.to(work)
    beta = bound.sum(dim=-2, keepdim=True)                       # (B, H, 1, D)
    vhat = unbind(beta, q)                                        # (B, H, T, D)
    scores = cosine_similarity(v, vhat)                           # (B, H, T, 1)
    if key_padding_mask is not None:
        scores = scores.masked_fill(~keep, float("-inf"))
    weights = torch.softmax(scores, dim=-2)
    if key_padding_mask is not None:
        weights = weights.masked_fill(~keep, 0.0)
    return (weights * v).to(out_dtype)
