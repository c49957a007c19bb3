"""FP8 keys and values in the torch methods without a native FP8 path (the kv_dtype axis).

Such a method dequantises inside its timed call: ``k.to(q.dtype) * k_scale`` (and v), a copy
in the compute dtype that the attention then reads: the naive path, recorded as such
(``PATH``). Scales are per tensor (harness.contract.quant).
"""

from __future__ import annotations

PATH = "k, v dequantised inside the timed call: k.to(q.dtype) * k_scale (a copy; naive path)"


def dequantised(q, k, v, k_scale=None, v_scale=None):
    """(k, v) in q's dtype: FP8 codes times their scales; inputs without scales unchanged."""
    if k_scale is not None:
        k = k.to(q.dtype) * k_scale
    if v_scale is not None:
        v = v.to(q.dtype) * v_scale
    return k, v
