"""Exact softmax attention in JAX (explicit, T x T scores), the JAX methods' baseline."""

from __future__ import annotations

import functools

from harness.registry import Capabilities, register
from harness.traffic import materialised_scores


def matmul_precision(dtype):
    """HIGHEST for float32 (and float64): JAX's DEFAULT precision lets XLA use TF32 on Ampere
    and newer GPUs (10-bit mantissa), which fails the float32 gate; None (DEFAULT) for
    float16/bfloat16, whose inputs are already that narrow."""
    import jax
    import jax.numpy as jnp

    return jax.lax.Precision.HIGHEST if dtype in (jnp.float32, jnp.float64) else None


@functools.cache
def _compiled(causal: bool, masked: bool):
    import jax
    import jax.numpy as jnp

    def attention(q, k, v, key_padding_mask):
        precision = matmul_precision(q.dtype)
        scores = jnp.einsum("bhqd,bhkd->bhqk", q, k, precision=precision) * \
            (q.shape[-1] ** -0.5)
        t_q, t_k = q.shape[-2], k.shape[-2]
        allowed = None
        if causal:
            allowed = jnp.tril(jnp.ones((t_q, t_k), dtype=bool), t_k - t_q)[None, None]
        if masked:
            keep = key_padding_mask.astype(bool)[:, None, None, :]
            allowed = keep if allowed is None else allowed & keep
        if allowed is not None:
            scores = jnp.where(allowed, scores, -jnp.inf)
        work = jnp.float32 if q.dtype in (jnp.float16, jnp.bfloat16) else q.dtype
        weights = jax.nn.softmax(scores.astype(work), axis=-1)
        if allowed is not None:
            weights = jnp.where(allowed, weights, 0.0)
        return jnp.einsum("bhqk,bhkd->bhqd", weights.astype(v.dtype), v, precision=precision)

    return jax.jit(attention)


@register("softmax_jax", framework="jax", family="exact", requires=("jax",),
          capabilities=Capabilities(devices=("cpu", "cuda"),
                                    dtypes=("float64", "float32", "float16", "bfloat16"),
                                    causal=True, key_padding_mask=True, backward=True),
          traffic=materialised_scores)
def softmax_jax(q, k, v, *, causal=False, key_padding_mask=None):
    """jit-compiled softmax(Q K^T / sqrt(D)) V in JAX."""
    return _compiled(bool(causal), key_padding_mask is not None)(q, k, v, key_padding_mask)
