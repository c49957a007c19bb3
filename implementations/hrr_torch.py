"""HRR attention (Hrrformer, Alam et al. 2023) in torch, as defined in REFERENCE.md section 1.

    beta    = sum_t bind(k_t, v_t)             bind = circular convolution
    vhat_t  = unbind(beta, q_t)                unbind = circular correlation
    a_t     = cosine(v_t, vhat_t)              guarded: dot / max(|v_t| |vhat_t|, 1e-12)
    w       = softmax_T(a)                     per head, over tokens
    o_t     = w_t * v_t

Masking (differs from the original code, which still binds padded keys into beta): masked keys
are excluded from beta and masked positions get weight 0 (an all-masked row is all 0). There is
no causal variant. float16/bfloat16 inputs are computed in float32 and the output is cast back;
the output dtype is the input dtype.

Two formulations, one code path each; ``choose_formulation(device, head_dim)`` picks one:

* ``gemm`` (``hrr_scores_gemm``): circular correlation with the fixed beta of a (batch, head)
  is multiplication by the D x D matrix C[m, j] = beta[(m + j) mod D], and beta is K^T V summed
  along its wrapped diagonals, beta[j] = sum_i (K^T V)[i, (j - i) mod D]. So the scores are one
  GEMM for K^T V, one GEMM P = Q C, and row reductions dot = P.v, |P|, |v|. O(T D^2) FLOPs at
  GEMM speed. The forward and backward are written out by hand (``_HRRGemm``, an
  autograd.Function) so that neither pass holds a (B, H, T, D) temporary besides its outputs:
  T is walked in chunks of about CHUNK_ELEMENTS per tensor, and the backward needs only q, k, v,
  C and per-token scalars (5 GEMMs: P again, dP C, Q^T dP, V dM, K dM).
* ``fft`` (``hrr_scores_fft``): real FFTs over D, beta accumulated in the frequency domain, the
  dot product and |vhat_t| from the spectra by Parseval, so no inverse transform at all.
  O(T D log D). Chunked over T as well; its backward is torch autograd.

Measured choice, CPU (2-core Xeon, Sapphire Rapids, AVX-512; torch 2.13, 2 threads; B=1, H=8,
float32 forward, T = 2^22 / D; median of 3 rounds, measured while other jobs loaded the machine,
load average 5-8, so absolute times are inflated; ``python benchmarks/hrr/bench_hrr.py --dims
32,64,128,256,512``), ms:

    D     T        q+k+v    gemm     fft
    32    131072    377     1077     5553
    64    65536     348     1117     5148
    128   32768     365     1636     5553
    256   16384     398     2001     4355
    512   8192      284     1523     2899

so on CPU ``gemm`` up to D = 512 (the largest measured; above it the D^2 GEMM work against
D log D FFT work favours ``fft`` at some point, which is where the limit sits until measured).
On a quieter machine (load average ~2) at T=65536, D=64: gemm 127-141 ms, fft ~275 ms, q+k+v
76-92 ms; the chunk size (2^17..2^21 elements) changed gemm by under 10% there. Under
contention each torch op's parallel region costs far more, so the chunks are large
(CHUNK_ELEMENTS = 2^21 elements = 8 MiB per tensor chunk): at load average ~9 that took the
T=65536 forward from 23x to 3.3x the time of q+k+v (against 2^18-element chunks).
GPU: ``gemm`` for D <= 256 by the same FLOP/bandwidth argument; NOT YET MEASURED on a GPU (none
was at hand). No GPU-only code (Triton, torch.compile) is included.
"""

from __future__ import annotations

import torch

from harness.errors import UnsupportedError
from harness.registry import Capabilities, register

COSINE_EPS = 1e-12  # cosine = dot / max(|v| |vhat|, eps): a zero vector gives 0, never NaN
CHUNK_ELEMENTS = 1 << 21  # per-tensor chunk (tokens x D) walked at once: 8 MiB in float32
CPU_GEMM_MAX_HEAD_DIM = 512  # gemm measured faster up to D=512 on CPU: see the table above
CUDA_GEMM_MAX_HEAD_DIM = 256  # not measured (no GPU at hand)
FORMULATIONS = ("gemm", "fft")


def choose_formulation(device: str | torch.device, head_dim: int) -> str:
    """'gemm' or 'fft' for this device kind and head dim (pure; the numbers are in the docstring)."""
    kind = device.type if isinstance(device, torch.device) else str(device).split(":", 1)[0]
    limit = CUDA_GEMM_MAX_HEAD_DIM if kind == "cuda" else CPU_GEMM_MAX_HEAD_DIM
    return "gemm" if head_dim <= limit else "fft"


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _chunk_len(dim: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(1, dim))


def _chunks(shape):
    """(b, h, t0, t1) over a (B, H, T, D) shape: 2-D (chunk, D) slices of about CHUNK_ELEMENTS."""
    batch, heads, tokens, dim = shape
    step = _chunk_len(dim)
    for b in range(batch):
        for h in range(heads):
            for t0 in range(0, tokens, step):
                yield b, h, t0, min(tokens, t0 + step)


def _keep_mask(key_padding_mask, batch: int, tokens: int, device) -> torch.Tensor | None:
    if key_padding_mask is None:
        return None
    return key_padding_mask.to(device=device, dtype=torch.bool).reshape(batch, tokens)


# ---- the circulant bookkeeping of the GEMM formulation ---------------------------------------

def _wrap_index(dim: int, device) -> torch.Tensor:
    """idx[i, j] = (i + j) mod D."""
    ar = torch.arange(dim, device=device)
    return (ar[:, None] + ar[None, :]) % dim


def wrapped_diagonal_sums(mat: torch.Tensor) -> torch.Tensor:
    """out[..., n] = sum over i + j = n (mod D) of mat[..., i, j]; mat (..., D, D)."""
    dim = mat.shape[-1]
    index = _wrap_index(dim, mat.device).reshape(-1).expand(*mat.shape[:-2], dim * dim)
    out = torch.zeros(*mat.shape[:-2], dim, dtype=mat.dtype, device=mat.device)
    return out.scatter_add_(-1, index, mat.reshape(*mat.shape[:-2], dim * dim))


def wrapped_matrix(vec: torch.Tensor) -> torch.Tensor:
    """out[..., i, j] = vec[..., (i + j) mod D] (symmetric); vec (..., D)."""
    return vec[..., _wrap_index(vec.shape[-1], vec.device)]


def beta_from_kv(k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor | None,
                 work: torch.dtype) -> torch.Tensor:
    """beta = sum_t bind(k_t, v_t) over kept tokens, via K^T V: (B, H, D) in dtype work.

    bind(k, v)[j] = sum_i k[i] v[(j - i) mod D], so beta[j] = sum_i (K^T V)[i, (j - i) mod D];
    with M = K^T V that is the sum of M[i, l] over i + l = j (mod D).
    """
    batch, heads, tokens, dim = k.shape
    if keep is None and k.dtype == work and v.dtype == work:
        mats = torch.matmul(k.transpose(-1, -2), v)       # one pass, nothing of size T kept
    else:
        mats = torch.zeros(batch, heads, dim, dim, dtype=work, device=k.device)
        for b, h, t0, t1 in _chunks(k.shape):
            k_c = k[b, h, t0:t1].to(work)
            if keep is not None:
                k_c = k_c * keep[b, t0:t1, None].to(work)
            mats[b, h].addmm_(k_c.T, v[b, h, t0:t1].to(work))
    return wrapped_diagonal_sums(mats)


def _gemm_score_parts(q, v, corr, work, *, keep_p: bool = False):
    """dot = P.v, |P|, |v| per token with P = Q C, walking T in chunks: three (B, H, T).

    ``keep_p`` also returns P itself (B, H, T, D), for a backward that would otherwise have to
    recompute it with one more GEMM; otherwise P never exists beyond one chunk.
    """
    batch, heads, tokens, dim = q.shape
    dot = torch.empty(batch, heads, tokens, dtype=work, device=q.device)
    p_norm = torch.empty_like(dot)
    v_norm = torch.empty_like(dot)
    p_all = torch.empty(q.shape, dtype=work, device=q.device) if keep_p else None
    for b, h, t0, t1 in _chunks(q.shape):
        v_c = v[b, h, t0:t1].to(work)
        if p_all is not None:
            p_c = torch.mm(q[b, h, t0:t1].to(work), corr[b, h], out=p_all[b, h, t0:t1])
        else:
            p_c = torch.mm(q[b, h, t0:t1].to(work), corr[b, h])
        torch.linalg.vector_norm(p_c, dim=-1, out=p_norm[b, h, t0:t1])
        torch.linalg.vector_norm(v_c, dim=-1, out=v_norm[b, h, t0:t1])
        prod = p_c * v_c if p_all is not None else p_c.mul_(v_c)
        torch.sum(prod, dim=-1, out=dot[b, h, t0:t1])
    return dot, p_norm, v_norm, p_all


def hrr_scores_gemm(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                    key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """cosine(v_t, unbind(beta, q_t)) for every token by the GEMM formulation: (B, H, T).

    Not differentiable by itself (it is the forward of ``_HRRGemm``); use ``hrr_torch``.
    """
    work = _work_dtype(q.dtype)
    keep = _keep_mask(key_padding_mask, k.shape[0], k.shape[2], k.device)
    corr = wrapped_matrix(beta_from_kv(k, v, keep, work))
    dot, p_norm, v_norm, _ = _gemm_score_parts(q, v, corr, work)
    return dot / (v_norm * p_norm).clamp_min(COSINE_EPS)


# ---- the FFT formulation --------------------------------------------------------------------

def parseval_weights(dim: int, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Weight of each rfft bin in a full-spectrum sum: 1 for DC (and Nyquist if D even), else 2."""
    weights = torch.full((dim // 2 + 1,), 2.0, dtype=dtype, device=device)
    weights[0] = 1.0
    if dim % 2 == 0:
        weights[-1] = 1.0
    return weights / dim


def hrr_scores_fft(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """cosine(v_t, unbind(beta, q_t)) for every token by rfft + Parseval: (B, H, T).

    Differentiable with torch autograd. T is walked in chunks (beta first, then the scores).
    """
    batch, heads, tokens, dim = q.shape
    work = _work_dtype(q.dtype)
    keep = _keep_mask(key_padding_mask, k.shape[0], k.shape[2], k.device)
    step = max(1, _chunk_len(dim) // max(1, heads))
    beta_parts = []
    for t0 in range(0, tokens, step):
        bound = torch.fft.rfft(k[:, :, t0:t0 + step].to(work), dim=-1) * \
            torch.fft.rfft(v[:, :, t0:t0 + step].to(work), dim=-1)
        if keep is not None:
            bound = bound * keep[:, None, t0:t0 + step, None].to(work)
        beta_parts.append(bound.sum(dim=-2, keepdim=True))
    beta_f = torch.stack(beta_parts, 0).sum(0)                     # (B, H, 1, F)
    weights = parseval_weights(dim, dtype=work, device=q.device)
    root_weights = weights.sqrt()
    parts = []
    for t0 in range(0, tokens, step):
        q_f = torch.fft.rfft(q[:, :, t0:t0 + step].to(work), dim=-1)
        v_c = v[:, :, t0:t0 + step].to(work)
        v_f = torch.fft.rfft(v_c, dim=-1)
        vhat_f = beta_f * q_f.conj()                               # spectrum of unbind(beta, q)
        dot = ((v_f * vhat_f.conj()).real * weights).sum(-1)      # v_t . vhat_t
        vhat_norm = torch.linalg.vector_norm(vhat_f * root_weights, dim=-1)  # 0 grad at 0
        v_norm = torch.linalg.vector_norm(v_c, dim=-1)
        parts.append(dot / (v_norm * vhat_norm).clamp_min(COSINE_EPS))
    return torch.cat(parts, dim=-1)


# ---- softmax, output, and the GEMM forward/backward -----------------------------------------

def hrr_weights(scores: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """Softmax over tokens; masked positions get weight exactly 0 (all-masked rows: all 0)."""
    if keep is None:
        return torch.softmax(scores, dim=-1)
    keep = keep[:, None, :]
    # an all-masked row softmaxes zeros instead of -inf (no NaN, also not in autograd)
    scores = scores.masked_fill(~keep, float("-inf")).masked_fill(~keep.any(-1, keepdim=True), 0.0)
    return torch.softmax(scores, dim=-1).masked_fill(~keep, 0.0)


def _weighted_values(weights: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """o = w * v into one fresh tensor of v's dtype (computed in w's dtype, cast once)."""
    out = torch.empty_like(v)
    torch.mul(weights.unsqueeze(-1), v, out=out)
    return out


class _HRRGemm(torch.autograd.Function):
    """HRR attention by the GEMM formulation with a hand-written, chunked backward."""

    @staticmethod
    def forward(ctx, q, k, v, keep, training):
        work = _work_dtype(q.dtype)
        corr = wrapped_matrix(beta_from_kv(k, v, keep, work))
        # With a backward to come, keep P = Q C (one (B, H, T, D) tensor): the backward then
        # needs 4 GEMMs instead of 5. Without one (inference), P never outlives a chunk.
        dot, p_norm, v_norm, p_all = _gemm_score_parts(q, v, corr, work, keep_p=training)
        denom = v_norm * p_norm
        scores = dot / denom.clamp_min(COSINE_EPS)
        weights = hrr_weights(scores, keep)
        ctx.save_for_backward(q, k, v, keep, corr, scores, weights, p_norm, v_norm, denom, p_all)
        return _weighted_values(weights, v)

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, keep, corr, scores, weights, p_norm, v_norm, denom, p_all = ctx.saved_tensors
        work = corr.dtype
        # softmax: g_t = dO_t . v_t, ds = w (g - sum w g)   (w = 0 where masked, so ds = 0 there)
        g = torch.empty_like(scores)
        for b, h, t0, t1 in _chunks(q.shape):
            prod = grad_out[b, h, t0:t1].to(work) * v[b, h, t0:t1].to(work)
            torch.sum(prod, dim=-1, out=g[b, h, t0:t1])
        ds = weights * (g - (weights * g).sum(-1, keepdim=True))
        # cosine s = dot / max(|v||p|, eps): the same subgradient as torch's clamp_min
        live = denom >= COSINE_EPS
        d_dot = (ds / denom.clamp_min(COSINE_EPS)).unsqueeze(-1)
        coef = torch.where(live, -ds * scores / denom.clamp_min(COSINE_EPS), 0.0)
        c_p = torch.where(live, coef * v_norm / p_norm.clamp_min(COSINE_EPS), 0.0).unsqueeze(-1)
        c_v = torch.where(live, coef * p_norm / v_norm.clamp_min(COSINE_EPS), 0.0).unsqueeze(-1)
        w_col = weights.unsqueeze(-1)
        need_q, need_k, need_v = ctx.needs_input_grad[:3]
        same = q.dtype == work
        dq = torch.empty_like(q, dtype=work) if need_q else None
        dv = torch.empty_like(v, dtype=work)
        d_corr = torch.zeros_like(corr)
        for b, h, t0, t1 in _chunks(q.shape):
            q_c = q[b, h, t0:t1].to(work)
            v_c = v[b, h, t0:t1].to(work)
            p_c = p_all[b, h, t0:t1] if p_all is not None else torch.mm(q_c, corr[b, h])
            dp_c = torch.mul(v_c, d_dot[b, h, t0:t1])
            dp_c.addcmul_(p_c, c_p[b, h, t0:t1])
            if need_q:
                torch.mm(dp_c, corr[b, h], out=dq[b, h, t0:t1])
            d_corr[b, h].addmm_(q_c.T, dp_c)
            dv_c = dv[b, h, t0:t1]
            torch.mul(grad_out[b, h, t0:t1], w_col[b, h, t0:t1], out=dv_c)
            dv_c.addcmul_(p_c, d_dot[b, h, t0:t1])
            dv_c.addcmul_(v_c, c_v[b, h, t0:t1])
        # C = wrapped_matrix(beta): dbeta[n] = sum over i + j = n of dC[i, j]; beta from M = K^T V
        # gives dM[i, l] = dbeta[(i + l) mod D] (symmetric): dK = V dM (masked), dV += K dM.
        d_mat = wrapped_matrix(wrapped_diagonal_sums(d_corr))
        dk = torch.empty_like(k, dtype=work) if need_k else None
        for b, h, t0, t1 in _chunks(k.shape):
            k_c = k[b, h, t0:t1].to(work)
            keep_c = None if keep is None else keep[b, t0:t1, None].to(work)
            if need_k:
                dk_c = dk[b, h, t0:t1]
                torch.mm(v[b, h, t0:t1].to(work), d_mat[b, h], out=dk_c)
                if keep_c is not None:
                    dk_c.mul_(keep_c)
            if need_v:
                dv[b, h, t0:t1].addmm_(k_c if keep_c is None else k_c * keep_c, d_mat[b, h])
        if not same:
            dq = None if dq is None else dq.to(q.dtype)
            dk = None if dk is None else dk.to(k.dtype)
        return dq, dk, (dv.to(v.dtype) if need_v else None), None, None


def _hrr_fft(q, k, v, keep):
    work = _work_dtype(q.dtype)
    scores = hrr_scores_fft(q, k, v, keep)
    weights = hrr_weights(scores, keep)
    if torch.is_grad_enabled() and (weights.requires_grad or v.requires_grad):
        return (weights.unsqueeze(-1) * v.to(work)).to(v.dtype)
    return _weighted_values(weights, v)


@register("hrr_torch", framework="torch", family="hrr",
          capabilities=Capabilities(devices=("cpu", "cuda"),
                                    dtypes=("float64", "float32", "float16", "bfloat16"),
                                    causal=False, key_padding_mask=True, backward=True))
def hrr_torch(q, k, v, *, causal=False, key_padding_mask=None, formulation: str | None = None):
    """HRR attention; ``formulation`` ('gemm' or 'fft') overrides choose_formulation."""
    if causal:
        raise UnsupportedError("hrr_torch: HRR attention has no causal variant")
    formulation = formulation or choose_formulation(q.device, q.shape[-1])
    if formulation not in FORMULATIONS:
        raise ValueError(f"hrr_torch: unknown formulation {formulation!r}; "
                         f"valid: {', '.join(FORMULATIONS)}")
    keep = _keep_mask(key_padding_mask, k.shape[0], k.shape[2], k.device)
    if formulation == "fft":
        return _hrr_fft(q, k, v, keep)
    training = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    return _HRRGemm.apply(q, k, v, keep, training)
