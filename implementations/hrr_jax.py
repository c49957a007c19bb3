"""HRR attention in JAX, jit-compiled; the same formulation and conventions as hrr_torch.

See implementations/hrr_torch.py for the definition, the masking convention and the guard.
"""

from __future__ import annotations

import functools

from harness.errors import UnsupportedError
from harness.registry import Capabilities, register

COSINE_EPS = 1e-12


@functools.cache
def _compiled(masked: bool):
    import jax
    import jax.numpy as jnp

    def attention(q, k, v, key_padding_mask):
        out_dtype = v.dtype
        work = jnp.float32 if q.dtype in (jnp.float16, jnp.bfloat16) else q.dtype
        q, k, v = q.astype(work), k.astype(work), v.astype(work)
        dim = q.shape[-1]
        q_f, k_f, v_f = (jnp.fft.rfft(x, axis=-1) for x in (q, k, v))
        bound = k_f * v_f
        if masked:
            keep = key_padding_mask.astype(bool)
            bound = bound * keep[:, None, :, None].astype(work)
        beta_f = bound.sum(axis=-2, keepdims=True)
        vhat_f = beta_f * jnp.conj(q_f)
        bins = dim // 2 + 1
        weights = jnp.full((bins,), 2.0, dtype=work).at[0].set(1.0)
        if dim % 2 == 0:
            weights = weights.at[-1].set(1.0)
        weights = weights / dim
        dot = (jnp.real(v_f * jnp.conj(vhat_f)) * weights).sum(-1)
        vhat_sq = ((jnp.real(vhat_f) ** 2 + jnp.imag(vhat_f) ** 2) * weights).sum(-1)
        v_sq = (v * v).sum(-1)
        scores = dot / jnp.maximum(jnp.sqrt(v_sq * vhat_sq), COSINE_EPS)
        if masked:
            keep_bh = keep[:, None, :]
            probs = jax.nn.softmax(jnp.where(keep_bh, scores, -jnp.inf), axis=-1)
            probs = jnp.where(keep_bh, probs, 0.0)
        else:
            probs = jax.nn.softmax(scores, axis=-1)
        return (probs[..., None] * v).astype(out_dtype)

    return jax.jit(attention)


@register("hrr_jax", framework="jax", family="hrr", requires=("jax",),
          capabilities=Capabilities(devices=("cpu", "cuda"),
                                    dtypes=("float64", "float32", "float16", "bfloat16"),
                                    causal=False, key_padding_mask=True, backward=True))
def hrr_jax(q, k, v, *, causal=False, key_padding_mask=None):
    """HRR attention in JAX: rfft, beta in the frequency domain, Parseval scores."""
    if causal:
        raise UnsupportedError("hrr_jax: HRR attention has no causal variant")
    return _compiled(key_padding_mask is not None)(q, k, v, key_padding_mask)
