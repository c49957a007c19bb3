"""xformers.ops.memory_efficient_attention (CUDA; xformers refuses CPU tensors)."""

from __future__ import annotations

from harness.registry import Capabilities, register
from harness.traffic import tiled_exact


@register("xformers", framework="torch", family="exact", requires=("xformers",),
          capabilities=Capabilities(devices=("cuda",), dtypes=("float32", "float16", "bfloat16"),
                                    causal=True, key_padding_mask=False, backward=True),
          traffic=tiled_exact)
def xformers_attention(q, k, v, *, causal=False, key_padding_mask=None):
    """memory_efficient_attention with a LowerTriangularMask bias when causal."""
    import xformers.ops as xops

    bias = xops.LowerTriangularMask() if causal else None
    out = xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2),
                                          v.transpose(1, 2), attn_bias=bias)
    return out.transpose(1, 2)
