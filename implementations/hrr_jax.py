"""HRR attention in JAX, jit-compiled; the same definition and conventions as hrr_torch.

See implementations/hrr_torch.py for the definition, the masking convention (masked keys are
excluded from beta, masked positions get weight 0), the cosine guard dot / max(|v||vhat|, 1e-12)
and the two formulations:

* ``gemm`` (``hrr_scores_gemm``): beta = wrapped-diagonal sums of K^T V, P = Q C with
  C[m, j] = beta[(m + j) mod D], scores = P.v / max(|P||v|, eps). The matmuls run at precision
  HIGHEST (no TF32 on a GPU: the 1e-5 float32 match needs it). Its backward is written out
  (``_gemm_backward``, a jax.custom_vjp), the same as hrr_torch's: XLA's autodiff of the
  forward took 7x the forward's time.
* ``fft`` (``hrr_scores_fft``): rfft, beta accumulated in the frequency domain, Parseval scores;
  its backward is JAX autodiff.

GQA (Hkv < Hq) by sharing, as hrr_torch: C (beta) once per key/value head, the group's query
rows stacked as (B, Hkv, G*T, D) against it, v read per key/value head; no copy of k, v.

``choose_formulation`` is this module's own (XLA's CPU GEMMs and FFTs are not torch's).
Measured on a quiet machine (2-core Xeon, load average ~1, jax 0.10.2, B=1, H=8, float32
forward, T = 2^22 / D, median of 3; ``python benchmarks/hrr/bench_hrr.py --dims
32,64,128,256,512 --repeats 3``), ms:

    D     T        jax q+k+v   gemm    fft
    32    131072      51        134    1500
    64    65536       50        147    1352
    128   32768       49        152    1230
    256   16384       50        224     963
    512   8192        69        338    1526

so on CPU ``gemm`` up to D = 512 (the largest measured), ``fft`` above. On a GPU: ``gemm`` up to
256, not measured. XLA:CPU's K^T V (a contraction over T) is the slowest part next to torch's
MKL one (44-70 ms against 25 ms at T=65536, H=8, D=64), which is most of the remaining gap to
hrr_torch.
"""

from __future__ import annotations

import functools
import math

from harness.errors import UnsupportedError
from harness.contract.registry import Capabilities, register
from harness.contract.traits import Traits
from harness.metrics.traffic import hrr as hrr_traffic
from implementations._hrr_reasons import HRR_REASONS

COSINE_EPS = 1e-12
CPU_GEMM_MAX_HEAD_DIM = 512  # gemm measured faster up to D=512 on CPU: see the table above
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


def _contract_tokens(a, b):
    """sum_t a_t^T b_t per (batch, head): (B, H, D, D), summed from blocks of ~1024 tokens.

    XLA:CPU ran the blocked form 1.2-1.3x faster than one contraction over all of T (265 vs
    347 ms for K^T V at T=65536, H=8, D=64), and 1024-token blocks beat 256-token ones at
    T=16384 (12 vs 19 ms, twice).
    """
    import jax
    import jax.numpy as jnp

    batch, heads, tokens, dim = a.shape
    blocks = math.gcd(tokens, max(1, tokens // BETA_BLOCK_ROWS))
    shape = (batch, heads, blocks, tokens // blocks, dim)
    return jnp.einsum("bhnti,bhntj->bhnij", a.reshape(shape), b.reshape(shape),
                      precision=jax.lax.Precision.HIGHEST).sum(2)


def _wrapped_diagonal_sums(mat):
    """out[..., n] = sum over i + j = n (mod D) of mat[..., i, j]."""
    import jax.numpy as jnp
    import numpy as np

    dim = mat.shape[-1]
    ar = np.arange(dim)
    diag = (ar[None, :] - ar[:, None]) % dim                       # diag[i, n] = (n - i) mod D
    return jnp.take_along_axis(mat, jnp.asarray(diag)[None, None], axis=-1).sum(-2)


def _wrapped_matrix(vec):
    """out[..., i, j] = vec[..., (i + j) mod D]."""
    return vec[..., _wrap_index(vec.shape[-1])]


def _matmul(x, mat):
    """x @ mat per (batch, head): (B, H, T, D) x (B, H, D, D)."""
    import jax
    import jax.numpy as jnp

    return jnp.einsum("bhtd,bhde->bhte", x, mat, precision=jax.lax.Precision.HIGHEST)


def _row_dot(x, y):
    """x_t . y_t: (B, H, T). As an einsum: XLA:CPU ran (x * y).sum(-1) far slower (770 against
    44 ms at T=65536, H=8, D=64)."""
    import jax
    import jax.numpy as jnp

    return jnp.einsum("bhtd,bhtd->bht", x, y, precision=jax.lax.Precision.HIGHEST)


def _grouped(x, kv_heads: int):
    """(B, Hq, ...) -> (B, Hkv, G, ...): query head h = kv * G + g (a reshape, no copy)."""
    return x.reshape(x.shape[0], kv_heads, x.shape[1] // kv_heads, *x.shape[2:])


def _merged(x):
    """(B, Hkv, G, ...) -> (B, Hq, ...)."""
    return x.reshape(x.shape[0], x.shape[1] * x.shape[2], *x.shape[3:])


def _as_kv_rows(q, kv_heads: int):
    """(B, Hq, T, D) -> (B, Hkv, G*T, D): the group's query rows stacked per key/value head, so
    that P = Q C and sum_t q_t^T dP_t are the unchanged per-head GEMMs against the shared C."""
    return q.reshape(q.shape[0], kv_heads, -1, q.shape[-1])


def _row_dot_shared(x, v):
    """x_t . v_t per query head, x (B, Hq, T, D) and v (B, Hkv, T, D) of its key/value head:
    (B, Hq, T). With Hq = Hkv it is _row_dot; with groups an einsum over the (B, Hkv, G, T, D)
    view, v read once per key/value head (never broadcast into a copy)."""
    import jax
    import jax.numpy as jnp

    if x.shape[1] == v.shape[1]:
        return _row_dot(x, v)
    return _merged(jnp.einsum("bhgtd,bhtd->bhgt", _grouped(x, v.shape[1]), v,
                              precision=jax.lax.Precision.HIGHEST))


def _per_query_head(x, q_heads: int):
    """A per-token (B, Hkv, T, ...) value of each key/value head seen by each of its query
    heads: (B, Hq, T, ...) (a broadcast of per-token scalars, not of k or v)."""
    import jax.numpy as jnp

    kv_heads = x.shape[1]
    if kv_heads == q_heads:
        return x
    return _merged(jnp.broadcast_to(x[:, :, None], (x.shape[0], kv_heads, q_heads // kv_heads,
                                                     *x.shape[2:])))


def _times_values(x, v):
    """x (B, Hq, T, 1 or D) times v (B, Hkv, T, D) of each query head's key/value head."""
    if x.shape[1] == v.shape[1]:
        return x * v
    return _merged(_grouped(x, v.shape[1]) * v[:, :, None])


def _masked_keys(k, keep):
    return k if keep is None else k * keep[:, None, :, None].astype(k.dtype)


def _gemm_parts(q, k, v, keep):
    """C, P = Q C, dot = P.v, |P|, |v| of the GEMM formulation (masked keys left out of C)."""
    # beta = sum_t bind(k_t, v_t): beta[n] = sum_i M[i, (n - i) mod D] with M = K^T V
    # GQA by sharing: C once per key/value head, the group's query rows stacked against it
    corr = _wrapped_matrix(_wrapped_diagonal_sums(_contract_tokens(_masked_keys(k, keep), v)))
    p = _matmul(_as_kv_rows(q, k.shape[1]), corr).reshape(q.shape)  # rows: unbind(beta, q_t)
    return (corr, p, _row_dot_shared(p, v), _row_norm(p),
            _per_query_head(_row_norm(v), q.shape[1]))


def hrr_scores_gemm(q, k, v, keep=None):
    """cosine(v_t, unbind(beta, q_t)) by two GEMMs per (batch, head): (B, H, T). Traceable."""
    _, _, dot, p_norm, v_norm = _gemm_parts(q, k, v, keep)
    return _guarded_divide(dot, p_norm * v_norm)


def _row_norm(x):
    """|x| over the last axis with gradient 0 at x = 0 (jnp.linalg.norm's is NaN there),
    the subgradient torch's vector_norm uses; the squared sum as an einsum, as the dot above."""
    import jax
    import jax.numpy as jnp

    squares = jnp.einsum("...d,...d->...", x, x, precision=jax.lax.Precision.HIGHEST)
    nonzero = squares > 0
    return jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, squares, 1.0)), 0.0)


def _guarded_divide(dot, norms):
    """dot / max(norms, eps), written as a select so that XLA:CPU keeps the Q C matmul and the
    three row reductions as separate kernels: with ``jnp.maximum`` it fused all of them into
    one library fusion that ran 2x slower (30-35 vs 16 ms for the scores after K^T V at
    T=16384, H=8, D=64). The inner select keeps the gradient finite where norms < eps."""
    import jax.numpy as jnp

    live = norms >= COSINE_EPS
    return jnp.where(live, dot / jnp.where(live, norms, 1.0), dot / COSINE_EPS)


def hrr_scores_fft(q, k, v, keep=None):
    """cosine(v_t, unbind(beta, q_t)) by rfft + Parseval: (B, H, T). Traceable."""
    import jax.numpy as jnp

    dim = q.shape[-1]
    kv_heads = k.shape[1]
    q_f, k_f, v_f = (jnp.fft.rfft(x, axis=-1) for x in (q, k, v))
    bound = k_f * v_f
    if keep is not None:
        bound = bound * keep[:, None, :, None].astype(q.dtype)
    beta_f = bound.sum(axis=-2, keepdims=True)         # (B, Hkv, 1, F): once per k/v head
    if kv_heads != q.shape[1]:   # GQA: the group's (B, Hkv, G, T, F) against its beta, its v
        q_f, beta_f, v_f = _grouped(q_f, kv_heads), beta_f[:, :, None], v_f[:, :, None]
    vhat_f = beta_f * jnp.conj(q_f)
    weights = jnp.full((dim // 2 + 1,), 2.0, dtype=q.dtype).at[0].set(1.0)
    if dim % 2 == 0:
        weights = weights.at[-1].set(1.0)
    weights = weights / dim
    dot = (jnp.real(v_f * jnp.conj(vhat_f)) * weights).sum(-1)
    vhat_sq = ((jnp.real(vhat_f) ** 2 + jnp.imag(vhat_f) ** 2) * weights).sum(-1)
    nonzero = vhat_sq > 0
    vhat_norm = jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, vhat_sq, 1.0)), 0.0)
    if kv_heads != q.shape[1]:
        dot, vhat_norm = _merged(dot), _merged(vhat_norm)
    return _guarded_divide(dot, _per_query_head(_row_norm(v), q.shape[1]) * vhat_norm)


SCORES = {"gemm": hrr_scores_gemm, "fft": hrr_scores_fft}


def hrr_weights(scores, keep):
    """Softmax over tokens; masked positions get weight exactly 0 (all-masked rows: all 0)."""
    import jax
    import jax.numpy as jnp

    if keep is None:
        return jax.nn.softmax(scores, axis=-1)
    keep_bh = keep[:, None, :]
    return jnp.where(keep_bh, jax.nn.softmax(jnp.where(keep_bh, scores, -jnp.inf), axis=-1), 0.0)


# ---- the GEMM formulation with a hand-written backward -------------------------------------

def _gemm_forward(q, k, v, keep):
    """Output and residuals; the residuals are q, k, v, C and per-token scalars only."""
    corr, _, dot, p_norm, v_norm = _gemm_parts(q, k, v, keep)
    denom = p_norm * v_norm
    scores = _guarded_divide(dot, denom)
    weights = hrr_weights(scores, keep)
    residuals = (q, k, v, keep, corr, scores, weights, p_norm, v_norm, denom)
    return _times_values(weights[..., None], v), residuals


def _gemm_backward(residuals, d_out):
    """The same backward as hrr_torch's HRRGemm (see there), on whole arrays.

    XLA's autodiff of the forward ran 7x the forward's time (265 against 38 ms at T=16384,
    H=8, D=64); this recomputes P = Q C once and uses 5 matmuls.
    """
    import jax.numpy as jnp

    q, k, v, keep, corr, scores, weights, p_norm, v_norm, denom = residuals
    kv_heads = k.shape[1]
    g = _row_dot_shared(d_out, v)                                   # softmax backward
    ds = weights * (g - (weights * g).sum(-1, keepdims=True))
    live = denom >= COSINE_EPS                                      # cosine backward
    d_dot = ds / jnp.where(live, denom, COSINE_EPS)
    coef = jnp.where(live, -d_dot * scores, 0.0)
    c_p = coef * v_norm / jnp.maximum(p_norm, COSINE_EPS)
    c_v = coef * p_norm / jnp.maximum(v_norm, COSINE_EPS)
    d_dot, c_p, c_v = d_dot[..., None], c_p[..., None], c_v[..., None]
    # GQA: q, d_p as (B, Hkv, G*T, D) rows against the shared C; dk, dv sum over the group
    q_rows = _as_kv_rows(q, kv_heads)
    p = _matmul(q_rows, corr).reshape(q.shape)
    d_p = _times_values(d_dot, v) + p * c_p
    d_p_rows = _as_kv_rows(d_p, kv_heads)
    dq = _matmul(d_p_rows, corr).reshape(q.shape)                   # C is symmetric
    d_mat = _wrapped_matrix(_wrapped_diagonal_sums(_contract_tokens(q_rows, d_p_rows)))
    dk = _matmul(v, d_mat)                                          # dM is symmetric
    per_query = d_out * weights[..., None] + p * d_dot + _times_values(c_v, v)
    if kv_heads != q.shape[1]:
        per_query = _grouped(per_query, kv_heads).sum(2)
    dv = per_query + _matmul(_masked_keys(k, keep), d_mat)
    if keep is not None:
        dk = dk * keep[:, None, :, None].astype(dk.dtype)
    return dq, dk, dv


@functools.cache
def _gemm_attention():
    """(q, k, v) -> output and (q, k, v, keep) -> output, each with the hand-written VJP."""
    import jax
    import jax.numpy as jnp

    @jax.custom_vjp
    def plain(q, k, v):
        return _gemm_forward(q, k, v, None)[0]

    plain.defvjp(lambda q, k, v: _gemm_forward(q, k, v, None), _gemm_backward)

    @jax.custom_vjp
    def masked(q, k, v, keep):
        return _gemm_forward(q, k, v, keep)[0]

    def masked_backward(residuals, d_out):
        keep = residuals[3]
        return (*_gemm_backward(residuals, d_out), jnp.zeros(keep.shape, jax.dtypes.float0))

    masked.defvjp(lambda q, k, v, keep: _gemm_forward(q, k, v, keep), masked_backward)
    return plain, masked


@functools.cache
def _compiled(masked: bool, formulation: str):
    import jax
    import jax.numpy as jnp

    def attention(q, k, v, key_padding_mask):
        out_dtype = v.dtype
        work = jnp.float32 if q.dtype in (jnp.float16, jnp.bfloat16) else q.dtype
        q, k, v = q.astype(work), k.astype(work), v.astype(work)
        keep = key_padding_mask.astype(bool) if masked else None
        if formulation == "gemm":
            plain, with_mask = _gemm_attention()
            out = with_mask(q, k, v, keep) if masked else plain(q, k, v)
        else:
            out = _times_values(hrr_weights(SCORES[formulation](q, k, v, keep), keep)[..., None],
                                v)
        return out.astype(out_dtype)

    return jax.jit(attention)


def _platform(x) -> str:
    try:
        return next(iter(x.devices())).platform
    except Exception:  # a tracer or a non-array: assume the default backend
        import jax

        return jax.default_backend()


@register("hrr_jax", framework="jax", family="hrr", requires=("jax",),
          traits=Traits(memory="linear"),
          capabilities=Capabilities(devices=("cpu", "cuda"),
                                    dtypes=("float64", "float32", "float16", "bfloat16"),
                                    causal=False, key_padding_mask=True, backward=True,
                                    gqa=True, reasons=HRR_REASONS,
                                    paths=(("gqa", "beta (C) computed once per key/value head; "
                                                   "the group's query rows are multiplied "
                                                   "against it (no copy of k, v)"),)),
          traffic=hrr_traffic)
def hrr_jax(q, k, v, *, causal=False, key_padding_mask=None, formulation: str | None = None):
    """HRR attention in JAX; ``formulation`` ('gemm' or 'fft') overrides choose_formulation."""
    if causal:
        raise UnsupportedError("hrr_jax: HRR attention has no causal variant")
    if q.shape[-2] != k.shape[-2]:
        raise UnsupportedError("hrr_jax: HRR needs Tq == Tk")
    if q.shape[1] % k.shape[1] or v.shape[1] != k.shape[1]:
        raise ValueError(f"hrr_jax: query heads {q.shape[1]} not a multiple of key/value "
                         f"heads {k.shape[1]} (v: {v.shape[1]})")
    # GQA: query head h reads key/value head h // (Hq / Hkv), beta shared by the group
    formulation = formulation or choose_formulation(_platform(q), q.shape[-1])
    if formulation not in FORMULATIONS:
        raise ValueError(f"hrr_jax: unknown formulation {formulation!r}; "
                         f"valid: {', '.join(FORMULATIONS)}")
    return _compiled(key_padding_mask is not None, formulation)(q, k, v, key_padding_mask)
