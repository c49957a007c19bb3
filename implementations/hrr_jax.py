"""HRR attention in JAX, jit-compiled; the same definition and conventions as hrr_torch.

See implementations/hrr_torch.py for the definition, the masking convention (masked keys are
excluded from beta, masked positions get weight 0), the cosine guard dot / max(|v||vhat|, 1e-12)
and the two formulations:

* ``gemm`` (``hrr_scores_gemm``): beta = wrapped-diagonal sums of K^T V, P = Q C with
  C[m, j] = beta[(m + j) mod D], scores = P.v / max(|P||v|, eps). Two einsums per (batch, head);
  the matmuls run at precision HIGHEST (no TF32 on a GPU: the 1e-5 float32 match needs it).
* ``fft`` (``hrr_scores_fft``): rfft, beta accumulated in the frequency domain, Parseval scores.

The backward is JAX autodiff of whichever formulation runs. ``choose_formulation`` is this
module's own (XLA's CPU GEMMs and FFTs are not torch's); the numbers behind it are in
HRR_JAX_NOTE below and come from benchmarks/hrr/bench_hrr.py.

Measured (CPU, 2 cores, jax 0.10.2, B=1, H=8, float32 forward, T = 2^22 / D, median of 3,
at load average 5-8 from other jobs; ``python benchmarks/hrr/bench_hrr.py --dims ...``), ms:

    D     T        jax q+k+v   gemm    fft
    32    131072     220        677    2043
    64    65536      220        790    1497
    128   32768      222        959    1361
    256   16384      228       1149    1369
    512   8192       228       2885    1320

(measured before K^T V was summed in blocks, which made gemm another ~1.2x faster), so on CPU
``gemm`` up to D = 256, ``fft`` above. On a GPU: ``gemm`` up to 256, not measured.
XLA:CPU's matmuls are slower than torch's MKL ones at these shapes (K^T V at T=65536, D=64:
238 ms against 85 ms for torch, in the same process under load), which is most of the gap
to hrr_torch.
"""

from __future__ import annotations

import functools
import math

from harness.errors import UnsupportedError
from harness.registry import Capabilities, register

COSINE_EPS = 1e-12
CPU_GEMM_MAX_HEAD_DIM = 256
CUDA_GEMM_MAX_HEAD_DIM = 256  # not measured (no GPU at hand)
FORMULATIONS = ("gemm", "fft")
BETA_BLOCK_ROWS = 1024  # K^T V is summed from blocks of about this many tokens


def choose_formulation(device: str, head_dim: int) -> str:
    """'gemm' or 'fft' for this device kind ('cpu', 'cuda', 'gpu') and head dim (pure)."""
    kind = str(device).split(":", 1)[0].lower()
    limit = CPU_GEMM_MAX_HEAD_DIM if kind == "cpu" else CUDA_GEMM_MAX_HEAD_DIM
    return "gemm" if head_dim <= limit else "fft"


def _wrap_index(dim: int):
    import numpy as np

    ar = np.arange(dim)
    return (ar[:, None] + ar[None, :]) % dim                       # idx[i, j] = (i + j) mod D


def hrr_scores_gemm(q, k, v, keep=None):
    """cosine(v_t, unbind(beta, q_t)) by two GEMMs per (batch, head): (B, H, T). Traceable."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    dim = q.shape[-1]
    hi = jax.lax.Precision.HIGHEST
    if keep is not None:
        k = k * keep[:, None, :, None].astype(k.dtype)
    # M = K^T V, as a sum of per-block products of ~1024 tokens: XLA:CPU ran the blocked form
    # 1.2-1.3x faster than one contraction over all of T (265 vs 347 ms at T=65536, H=8,
    # D=64), and 1024-token blocks beat 256-token ones at T=16384 (12 vs 19 ms, twice)
    batch, heads, tokens, _ = k.shape
    blocks = math.gcd(tokens, max(1, tokens // BETA_BLOCK_ROWS))
    shape = (batch, heads, blocks, tokens // blocks, dim)
    mats = jnp.einsum("bhnti,bhntj->bhnij", k.reshape(shape), v.reshape(shape),
                      precision=hi).sum(2)
    # beta[n] = sum_i M[i, (n - i) mod D]
    ar = np.arange(dim)
    diag = (ar[None, :] - ar[:, None]) % dim                       # diag[i, n] = (n - i) mod D
    beta = jnp.take_along_axis(mats, jnp.asarray(diag)[None, None], axis=-1).sum(-2)
    corr = beta[..., _wrap_index(dim)]                             # C[m, j] = beta[(m + j) % D]
    p = jnp.einsum("bhtd,bhde->bhte", q, corr, precision=hi)      # rows are unbind(beta, q_t)
    dot = jnp.einsum("bhtd,bhtd->bht", p, v, precision=hi)       # XLA:CPU: far faster than
    # (p * v).sum(-1), which measured 770 ms against 44 ms at T=65536, H=8, D=64
    norms = jnp.linalg.norm(p, axis=-1) * jnp.linalg.norm(v, axis=-1)
    return dot / jnp.maximum(norms, COSINE_EPS)


def hrr_scores_fft(q, k, v, keep=None):
    """cosine(v_t, unbind(beta, q_t)) by rfft + Parseval: (B, H, T). Traceable."""
    import jax.numpy as jnp

    dim = q.shape[-1]
    q_f, k_f, v_f = (jnp.fft.rfft(x, axis=-1) for x in (q, k, v))
    bound = k_f * v_f
    if keep is not None:
        bound = bound * keep[:, None, :, None].astype(q.dtype)
    beta_f = bound.sum(axis=-2, keepdims=True)
    vhat_f = beta_f * jnp.conj(q_f)
    weights = jnp.full((dim // 2 + 1,), 2.0, dtype=q.dtype).at[0].set(1.0)
    if dim % 2 == 0:
        weights = weights.at[-1].set(1.0)
    weights = weights / dim
    dot = (jnp.real(v_f * jnp.conj(vhat_f)) * weights).sum(-1)
    vhat_norm = jnp.sqrt(((jnp.real(vhat_f) ** 2 + jnp.imag(vhat_f) ** 2) * weights).sum(-1))
    return dot / jnp.maximum(jnp.linalg.norm(v, axis=-1) * vhat_norm, COSINE_EPS)


SCORES = {"gemm": hrr_scores_gemm, "fft": hrr_scores_fft}


@functools.cache
def _compiled(masked: bool, formulation: str):
    import jax
    import jax.numpy as jnp

    scores_fn = SCORES[formulation]

    def attention(q, k, v, key_padding_mask):
        out_dtype = v.dtype
        work = jnp.float32 if q.dtype in (jnp.float16, jnp.bfloat16) else q.dtype
        q, k, v = q.astype(work), k.astype(work), v.astype(work)
        keep = key_padding_mask.astype(bool) if masked else None
        scores = scores_fn(q, k, v, keep)
        if masked:
            keep_bh = keep[:, None, :]
            probs = jax.nn.softmax(jnp.where(keep_bh, scores, -jnp.inf), axis=-1)
            probs = jnp.where(keep_bh, probs, 0.0)
        else:
            probs = jax.nn.softmax(scores, axis=-1)
        return (probs[..., None] * v).astype(out_dtype)

    return jax.jit(attention)


def _platform(x) -> str:
    try:
        return next(iter(x.devices())).platform
    except Exception:  # a tracer or a non-array: assume the default backend
        import jax

        return jax.default_backend()


@register("hrr_jax", framework="jax", family="hrr", requires=("jax",),
          capabilities=Capabilities(devices=("cpu", "cuda"),
                                    dtypes=("float64", "float32", "float16", "bfloat16"),
                                    causal=False, key_padding_mask=True, backward=True))
def hrr_jax(q, k, v, *, causal=False, key_padding_mask=None, formulation: str | None = None):
    """HRR attention in JAX; ``formulation`` ('gemm' or 'fft') overrides choose_formulation."""
    if causal:
        raise UnsupportedError("hrr_jax: HRR attention has no causal variant")
    formulation = formulation or choose_formulation(_platform(q), q.shape[-1])
    if formulation not in FORMULATIONS:
        raise ValueError(f"hrr_jax: unknown formulation {formulation!r}; "
                         f"valid: {', '.join(FORMULATIONS)}")
    return _compiled(key_padding_mask is not None, formulation)(q, k, v, key_padding_mask)
