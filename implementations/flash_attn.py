"""The FlashAttention package (flash_attn_func): CUDA only, fp16/bf16, layout (B, T, H, D)."""

from __future__ import annotations

from harness.errors import UnsupportedError
from harness.registry import Capabilities, register
from harness.traffic import tiled_exact

# flash_attn's C++ entry (csrc/flash_attn/flash_api.cpp, mha_fwd) refuses larger head dims with
# "FlashAttention forward only supports head dimension at most 256"
MAX_HEAD_DIM = 256


@register("flash_attn", framework="torch", family="exact", requires=("flash_attn",),
          capabilities=Capabilities(devices=("cuda",), dtypes=("float16", "bfloat16"),
                                    causal=True, key_padding_mask=False, backward=True),
          traffic=tiled_exact)
def flash_attn(q, k, v, *, causal=False, key_padding_mask=None):
    """flash_attn.flash_attn_func; key-padding masks need its varlen API (not wired here)."""
    from flash_attn import flash_attn_func

    if q.shape[-1] > MAX_HEAD_DIM:
        raise UnsupportedError(f"flash_attn: head dim {q.shape[-1]} > {MAX_HEAD_DIM} "
                               "(FlashAttention's limit)")
    out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                          causal=causal)
    return out.transpose(1, 2)
