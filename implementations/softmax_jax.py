"""Exact softmax attention in JAX (explicit, T x T scores), the JAX methods' baseline."""

from __future__ import annotations

import functools

from harness.registry import Capabilities, register
from harness.traffic import materialised_scores


@functools.cache
def _compiled(causal: bool, masked: bool):
    import jax
    import jax.numpy as jnp

    def attention(q, k, v, key_padding_mask):
        scores = jnp.einsum("bhqd,bhkd->bhqk", q, k) * (q.shape[-1] ** -0.5)
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
        return jnp.einsum("bhqk,bhkd->bhqd", weights.astype(v.dtype), v)

    return jax.jit(attention)


@register("softmax_jax", framework="jax", family="exact", requires=("jax",),
          capabilities=Capabilities(devices=("cpu", "cuda"),
                                    dtypes=("float64", "float32", "float16", "bfloat16"),
                                    causal=True, key_padding_mask=True, backward=True),
          traffic=materialised_scores)
def softmax_jax(q, k, v, *, causal=False, key_padding_mask=None):
    """jit-compiled softmax(Q K^T / sqrt(D)) V in JAX."""
    return _compiled(bool(causal), key_padding_mask is not None)(q, k, v, key_padding_mask)
