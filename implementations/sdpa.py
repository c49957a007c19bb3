"""torch.nn.functional.scaled_dot_product_attention pinned to one backend each.

Pinning uses ``torch.nn.attention.sdpa_kernel``; availability is probed by really running a
tiny input on the target device and dtype (on CPU only MATH and FLASH_ATTENTION run).
"""

from __future__ import annotations

from harness.registry import Capabilities, Query, register
from harness.traffic import materialised_scores, tiled_exact
from implementations._torch_masks import allowed_keys

ALL_DTYPES = ("float64", "float32", "float16", "bfloat16")

# name -> (SDPBackend member, devices, dtypes)
BACKENDS = {
    "sdpa_math": ("MATH", ("cpu", "cuda"), ALL_DTYPES),
    "sdpa_flash": ("FLASH_ATTENTION", ("cpu", "cuda"), ALL_DTYPES),
    "sdpa_efficient": ("EFFICIENT_ATTENTION", ("cuda",), ("float32", "float16", "bfloat16")),
    "sdpa_cudnn": ("CUDNN_ATTENTION", ("cuda",), ("float16", "bfloat16")),
}


def sdpa_attention(q, k, v, *, causal=False, key_padding_mask=None, backend: str = "MATH"):
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(getattr(SDPBackend, backend)):
        if key_padding_mask is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        mask = allowed_keys(q, k, causal=causal, key_padding_mask=key_padding_mask)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _cuda_flash_constraints(query: Query) -> list[str]:
    reasons = []
    if query.device == "cuda" and query.key_padding_mask:
        reasons.append("the CUDA flash kernel takes no attn_mask (key-padding mask unsupported "
                       "on cuda)")
    if query.device == "cuda" and query.dtype not in ("float16", "bfloat16"):
        reasons.append(f"the CUDA flash kernel needs float16/bfloat16, not {query.dtype}")
    return reasons


def _pinned(backend: str):
    def attention(q, k, v, *, causal=False, key_padding_mask=None):
        return sdpa_attention(q, k, v, causal=causal, key_padding_mask=key_padding_mask,
                              backend=backend)
    return attention


for _name, (_backend, _devices, _dtypes) in BACKENDS.items():
    register(_name, framework="torch", family="exact",
             capabilities=Capabilities(devices=_devices, dtypes=_dtypes, causal=True,
                                       key_padding_mask=True, backward=True),
             description=f"torch SDPA pinned to SDPBackend.{_backend}",
             constraints=_cuda_flash_constraints if _name == "sdpa_flash" else None,
             # MATH forms the T x T scores; the other backends are tiled kernels
             traffic=materialised_scores if _backend == "MATH" else tiled_exact,
             )(_pinned(_backend))
