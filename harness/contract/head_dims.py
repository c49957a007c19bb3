"""Head dimensions of a point: q and k have ``head_dim`` (D), v and the output ``head_dim_v``
(D_v; the axis' default 0 means D).

Multi-head latent attention (DeepSeek-V3, arXiv 2412.19437, section 2.1.1) is the workload with
D_v != D: in prefill each of the 128 query heads has a 128-dim no-position part and a 64-dim
rotary part for q and k (D = 192) and a 128-dim value (D_v = 128); in the absorbed decode form
every query head reads one shared latent key/value head of 512 dims plus the 64-dim rotary key
(D = 576, D_v = 512, kv_heads = 1, q_len = 1), the latent itself being the value.
"""

from __future__ import annotations

from typing import Any

# (head_dim, head_dim_v) of DeepSeek-V3's attention, and the absorbed decode's key/value heads
MLA_PREFILL_DIMS = (192, 128)
MLA_DECODE_DIMS = (576, 512)
MLA_DECODE_KV_HEADS = 1
MLA_QUERY_HEADS = 128


def value_dim(point: Any) -> int:
    """D_v of a point (its head_dim where the point does not set head_dim_v, or where it is
    not a Point but something with a head_dim)."""
    value = point.value("head_dim_v") if hasattr(point, "value") else 0
    return int(value or point.head_dim)


def value_shapes(point: Any) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """(v's shape (B, Hkv, Tk, D_v), the output's shape (B, Hq, Tq, D_v)): the frameworks'
    workload builders draw v and the backward's output gradient with them."""
    dim_v = value_dim(point)
    return ((point.batch, point.n_kv_heads, point.seq_len, dim_v),
            (point.batch, point.heads, point.n_queries, dim_v))


# why HRR attention takes no D_v != D (hrr_torch, hrr_jax, hrr_triton): it binds each key to its
# value by circular convolution and unbinds the sum with the query, both elementwise products
# of spectra of one length, and scores each value against its unbound estimate by cosine
HRR_HEAD_DIMS = ("HRR binds each key to its value by circular convolution (k_t * v_t) and "
                 "unbinds with the query, which needs q, k and v of one dimension (D_v == D)")
