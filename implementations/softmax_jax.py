"""Exact softmax attention in JAX (explicit Tq x Tk scores), the JAX methods' baseline.

GQA/MQA without copying k and v: q is viewed as (B, Hkv, group, Tq, D) and contracted with the
shared key/value head. Masks follow attnbench's conventions (harness.contract.masking): bottom-right
causal and windows, documents, key padding, ALiBi as a bias, a softcap cap * tanh(s / cap) on the
scaled scores (before ALiBi and the mask), sinks as one extra softmax column dropped before P V.
"""

from __future__ import annotations

import functools

from harness.contract.registry import Capabilities, register
from harness.contract.traits import Traits
from harness.metrics.traffic import materialised_scores


def matmul_precision(dtype):
    """HIGHEST for float32 (and float64): JAX's DEFAULT precision lets XLA use TF32 on Ampere
    and newer GPUs (10-bit mantissa), which fails the float32 gate; None (DEFAULT) for
    float16/bfloat16, whose inputs are already that narrow."""
    import jax
    import jax.numpy as jnp

    return jax.lax.Precision.HIGHEST if dtype in (jnp.float32, jnp.float64) else None


@functools.cache
def _compiled(causal: bool, masked: bool, window: tuple[int, int] | None, alibi: bool,
              documents: bool, softcap: float = 0.0, sinks: bool = False, fp8: bool = False):
    import jax
    import jax.numpy as jnp

    def attention(q, k, v, key_padding_mask, alibi_slopes, document_ids, sink_logits=None,
                  k_scale=None, v_scale=None):
        if fp8:   # FP8 k, v dequantised in the jitted call (XLA may fuse it into the einsum)
            k = k.astype(q.dtype) * k_scale.astype(q.dtype)
            v = v.astype(q.dtype) * v_scale.astype(q.dtype)
        batch, q_heads, t_q, dim = q.shape
        kv_heads, t_k = k.shape[1], k.shape[2]
        group = q_heads // kv_heads
        q5 = q.reshape(batch, kv_heads, group, t_q, dim)
        precision = matmul_precision(q.dtype)
        scores = jnp.einsum("bhgqd,bhkd->bhgqk", q5, k, precision=precision).reshape(
            batch, q_heads, t_q, t_k)
        scores = scores * (dim ** -0.5)
        if softcap:
            scores = softcap * jnp.tanh(scores / softcap)
        rows = jnp.arange(t_q)[:, None] + (t_k - t_q)
        cols = jnp.arange(t_k)[None, :]
        if alibi:
            distance = jnp.abs(rows - cols).astype(scores.dtype)
            scores = scores - alibi_slopes.astype(scores.dtype)[None, :, None, None] * distance
        allowed = None

        def both(a, b):
            return b if a is None else a & b

        if causal:
            allowed = both(allowed, (cols <= rows)[None, None])
        if window is not None:
            left, right = window
            if left >= 0:
                allowed = both(allowed, (cols >= rows - left)[None, None])
            if right >= 0:
                allowed = both(allowed, (cols <= rows + right)[None, None])
        if documents:
            allowed = both(allowed, (document_ids[:, :, None] == document_ids[:, None, :])
                           [:, None])
        if masked:
            allowed = both(allowed, key_padding_mask.astype(bool)[:, None, None, :])
        if allowed is not None:
            scores = jnp.where(allowed, scores, -jnp.inf)
        work = jnp.float32 if q.dtype in (jnp.float16, jnp.bfloat16) else q.dtype
        if sinks:   # one sink column per row, dropped after the softmax
            column = jnp.broadcast_to(sink_logits.astype(work)[None, :, None, None],
                                      (*scores.shape[:-1], 1))
            weights = jax.nn.softmax(jnp.concatenate([scores.astype(work), column], axis=-1),
                                     axis=-1)[..., :-1]
        else:
            weights = jax.nn.softmax(scores.astype(work), axis=-1)
        if allowed is not None:
            weights = jnp.where(allowed, weights, 0.0)
        weights = weights.astype(v.dtype).reshape(batch, kv_heads, group, t_q, t_k)
        out = jnp.einsum("bhgqk,bhkd->bhgqd", weights, v, precision=precision)
        return out.reshape(batch, q_heads, t_q, v.shape[-1])

    return jax.jit(attention)


@register("softmax_jax", framework="jax", family="exact", requires=("jax",),
          traits=Traits(memory="scores"),
          capabilities=Capabilities(
              devices=("cpu", "cuda"), dtypes=("float64", "float32", "float16", "bfloat16"),
              causal=True, key_padding_mask=True, backward=True, gqa=True, q_len=True,
              window=True, alibi=True, documents=True, softcap=True, sinks=True,
              head_dim_v=True, fp8_kv=True,
              paths=(("gqa", "q viewed as (B, Hkv, group, Tq, D): k, v not copied"),
                     ("masks", "explicit boolean Tq x Tk mask"),
                     ("alibi", "explicit Tq x Tk bias"),
                     ("softcap", "cap * tanh(s / cap) on the Tq x Tk scores"),
                     ("sinks", "one sink column in the softmax, dropped before P V"),
                     ("fp8_kv", "k.astype(q.dtype) * k_scale inside the jitted call "
                                "(jnp.float8_e4m3fn / float8_e5m2 inputs; XLA may fuse the "
                                "dequantisation)"))),
          # FP8 k, v read at 1 byte each; no dequantised copy counted (XLA may fuse it, and
          # the model is a lower bound)
          traffic=materialised_scores)
def softmax_jax(q, k, v, *, causal=False, key_padding_mask=None, window=None,
                alibi_slopes=None, document_ids=None, softcap=None, sinks=None, kv_dtype="",
                k_scale=None, v_scale=None):
    """jit-compiled softmax(Q K^T / sqrt(D)) V in JAX."""
    import numpy as np

    window = None if window is None else (int(window[0]), int(window[1]))
    fp8 = k_scale is not None
    fn = _compiled(bool(causal), key_padding_mask is not None, window,
                   alibi_slopes is not None, document_ids is not None,
                   float(softcap or 0.0), sinks is not None, fp8)
    scales = (np.float32(k_scale), np.float32(v_scale)) if fp8 else (None, None)
    return fn(q, k, v, key_padding_mask, alibi_slopes, document_ids, sinks, *scales)
