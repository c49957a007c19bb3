"""HRR attention (Hrrformer, Alam et al. 2023) in torch, as defined in REFERENCE.md section 1.

    beta    = sum_t bind(k_t, v_t)             bind = circular convolution
    vhat_t  = unbind(beta, q_t)                unbind = circular correlation
    a_t     = cosine(v_t, vhat_t)              guarded: 0 where a norm is 0
    w       = softmax_T(a)                     per head, over tokens
    o_t     = w_t * v_t

Formulation: real FFTs over D; beta accumulated in the frequency domain (one spectrum per
(batch, head), no inverse transform); the dot product and the norm of vhat_t computed from the
spectra by Parseval, so no inverse transform is needed at all. Cost O(T D log D), memory O(T D).

Masking (differs from the original code, which still binds padded keys into beta): masked keys
are excluded from beta and masked positions get weight 0. There is no causal variant.
"""

from __future__ import annotations

import torch

from harness.errors import UnsupportedError
from harness.registry import Capabilities, register

COSINE_EPS = 1e-12  # cosine = dot / max(|v| |vhat|, eps): a zero vector gives 0, never NaN


def parseval_weights(dim: int, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Weight of each rfft bin in a full-spectrum sum: 1 for DC (and Nyquist if D even), else 2."""
    weights = torch.full((dim // 2 + 1,), 2.0, dtype=dtype, device=device)
    weights[0] = 1.0
    if dim % 2 == 0:
        weights[-1] = 1.0
    return weights / dim


def hrr_scores(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """cosine(v_t, unbind(beta, q_t)) for every token: (B, H, T)."""
    dim = q.shape[-1]
    q_f, k_f, v_f = (torch.fft.rfft(x, dim=-1) for x in (q, k, v))
    bound = k_f * v_f
    if key_padding_mask is not None:
        bound = bound * key_padding_mask.to(device=q.device, dtype=q.dtype)[:, None, :, None]
    beta_f = bound.sum(dim=-2, keepdim=True)                   # (B, H, 1, F)
    vhat_f = beta_f * q_f.conj()                                # spectrum of unbind(beta, q_t)
    weights = parseval_weights(dim, dtype=q.dtype, device=q.device)
    dot = ((v_f * vhat_f.conj()).real * weights).sum(-1)       # v_t . vhat_t
    vhat_sq = ((vhat_f.real ** 2 + vhat_f.imag ** 2) * weights).sum(-1)
    v_sq = (v * v).sum(-1)
    return dot / torch.sqrt(v_sq * vhat_sq).clamp_min(COSINE_EPS)


def hrr_weights(scores: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
    """Softmax over tokens; masked positions get weight exactly 0 (all-masked rows: all 0)."""
    if key_padding_mask is None:
        return torch.softmax(scores, dim=-1)
    keep = key_padding_mask.to(device=scores.device, dtype=torch.bool)[:, None, :]
    weights = torch.softmax(scores.masked_fill(~keep, float("-inf")), dim=-1)
    return weights.masked_fill(~keep, 0.0)


@register("hrr_torch", framework="torch", family="hrr",
          capabilities=Capabilities(devices=("cpu", "cuda"),
                                    dtypes=("float64", "float32", "float16", "bfloat16"),
                                    causal=False, key_padding_mask=True, backward=True))
def hrr_torch(q, k, v, *, causal=False, key_padding_mask=None):
    """HRR attention: rfft, beta in the frequency domain, Parseval scores; no causal mode."""
    if causal:
        raise UnsupportedError("hrr_torch: HRR attention has no causal variant")
    work = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    v_work = v.to(work)
    scores = hrr_scores(q.to(work), k.to(work), v_work, key_padding_mask)
    weights = hrr_weights(scores, key_padding_mask)
    return (weights.unsqueeze(-1) * v_work).to(v.dtype)
