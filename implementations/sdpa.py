"""torch.nn.functional.scaled_dot_product_attention pinned to one backend each.

Pinning uses ``torch.nn.attention.sdpa_kernel``; availability is probed by really running a
tiny input on the target device and dtype (on CPU only MATH and FLASH_ATTENTION run).
"""

from __future__ import annotations

from harness.registry import Capabilities, Query, register
from harness.traffic import materialised_scores, tiled_exact
from implementations._torch_masks import alibi_bias, allowed_keys

ALL_DTYPES = ("float64", "float32", "float16", "bfloat16")

# name -> (SDPBackend member, devices, dtypes)
BACKENDS = {
    "sdpa_math": ("MATH", ("cpu", "cuda"), ALL_DTYPES),
    "sdpa_flash": ("FLASH_ATTENTION", ("cpu", "cuda"), ALL_DTYPES),
    "sdpa_efficient": ("EFFICIENT_ATTENTION", ("cuda",), ("float32", "float16", "bfloat16")),
    "sdpa_cudnn": ("CUDNN_ATTENTION", ("cuda",), ("float16", "bfloat16")),
}


def sdpa_mask(q, k, *, causal=False, key_padding_mask=None, window=None, alibi_slopes=None,
              document_ids=None):
    """(attn_mask, is_causal) for SDPA with attnbench's conventions.

    Plain causal with Tq == Tk uses ``is_causal``; causal with Tq != Tk uses
    ``causal_lower_right`` (SDPA's ``is_causal`` is aligned top-left there, which is not
    attnbench's convention); padding, windows and documents become one boolean mask, ALiBi a
    float bias with -inf on the masked pairs.
    """
    t_q, t_k = q.shape[-2], k.shape[-2]
    explicit = key_padding_mask is not None or window is not None or document_ids is not None
    if alibi_slopes is None and not explicit:
        if not causal:
            return None, False
        if t_q == t_k:
            return None, True
        from torch.nn.attention.bias import causal_lower_right

        return causal_lower_right(t_q, t_k), False
    allowed = allowed_keys(q, k, causal=causal, key_padding_mask=key_padding_mask,
                           window=window, document_ids=document_ids)
    if alibi_slopes is None:
        return allowed, False
    bias = alibi_bias(q, k, alibi_slopes)
    if allowed is not None:
        bias = bias.masked_fill(~allowed, float("-inf"))
    return bias, False


def sdpa_attention(q, k, v, *, causal=False, key_padding_mask=None, window=None,
                   alibi_slopes=None, document_ids=None, backend: str = "MATH"):
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    mask, is_causal = sdpa_mask(q, k, causal=causal, key_padding_mask=key_padding_mask,
                                window=window, alibi_slopes=alibi_slopes,
                                document_ids=document_ids)
    gqa = k.shape[1] != q.shape[1]
    with sdpa_kernel(getattr(SDPBackend, backend)):
        if gqa:  # native grouped-query attention: no copy of k, v
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                                  enable_gqa=True)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)


def _cuda_flash_constraints(query: Query) -> list[str]:
    reasons = []
    if query.device == "cuda" and query.explicit_mask:
        reasons.append("the CUDA flash kernel takes no attn_mask (key-padding mask, window, "
                       "documents, ALiBi and causal with Tq != Tk unsupported on cuda)")
    if query.device == "cuda" and query.dtype not in ("float16", "bfloat16"):
        reasons.append(f"the CUDA flash kernel needs float16/bfloat16, not {query.dtype}")
    return reasons


def _pinned(backend: str):
    def attention(q, k, v, *, causal=False, key_padding_mask=None, window=None,
                  alibi_slopes=None, document_ids=None):
        return sdpa_attention(q, k, v, causal=causal, key_padding_mask=key_padding_mask,
                              window=window, alibi_slopes=alibi_slopes,
                              document_ids=document_ids, backend=backend)
    return attention


for _name, (_backend, _devices, _dtypes) in BACKENDS.items():
    register(_name, framework="torch", family="exact",
             capabilities=Capabilities(
                 devices=_devices, dtypes=_dtypes, causal=True, key_padding_mask=True,
                 backward=True, gqa=True, q_len=True, window=True, alibi=True, documents=True,
                 paths=(("gqa", "enable_gqa=True"),
                        ("causal Tq != Tk", "torch.nn.attention.bias.causal_lower_right"),
                        ("masks", "boolean attn_mask (padding, window, documents)"),
                        ("alibi", "float attn_mask bias"))),
             description=f"torch SDPA pinned to SDPBackend.{_backend}",
             constraints=_cuda_flash_constraints if _name == "sdpa_flash" else None,
             # MATH forms the T x T scores; the other backends are tiled kernels
             traffic=materialised_scores if _backend == "MATH" else tiled_exact,
             )(_pinned(_backend))
