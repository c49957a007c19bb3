"""torch.nn.functional.scaled_dot_product_attention pinned to one backend each.

Pinning uses ``torch.nn.attention.sdpa_kernel``; availability is probed by really running a
tiny input on the target device and dtype (on CPU only MATH and FLASH_ATTENTION run).
"""

from __future__ import annotations

import warnings

from harness.errors import UnsupportedError
from harness.contract.registry import Capabilities, Query, first_line, register
from harness.contract.traits import Traits
from harness.metrics.traffic import dequant_copy, materialised, tiled
from implementations import _fp8 as fp8
from implementations._torch_masks import alibi_bias, allowed_keys
from implementations._torch_paging import PAGED_PATH, RAGGED_PATH, dense_kv

ALL_DTYPES = ("float64", "float32", "float16", "bfloat16")

# name -> (SDPBackend member, devices, dtypes)
BACKENDS = {
    "sdpa_math": ("MATH", ("cpu", "cuda"), ALL_DTYPES),
    "sdpa_flash": ("FLASH_ATTENTION", ("cpu", "cuda"), ALL_DTYPES),
    "sdpa_efficient": ("EFFICIENT_ATTENTION", ("cuda",), ("float32", "float16", "bfloat16")),
    "sdpa_cudnn": ("CUDNN_ATTENTION", ("cuda",), ("float16", "bfloat16")),
}
# MATH forms the T x T scores (the report's second baseline choice, after softmax_torch); the
# other backends are tiled kernels
TRAITS = {
    "MATH": Traits(memory="scores", baseline=1),
    "FLASH_ATTENTION": Traits(memory="tiled"),
    "EFFICIENT_ATTENTION": Traits(memory="tiled"),
    "CUDNN_ATTENTION": Traits(memory="tiled"),
}


def sdpa_mask(q, k, *, causal=False, key_padding_mask=None, window=None, alibi_slopes=None,
              document_ids=None, q_lengths=None, kv_lengths=None):
    """(attn_mask, is_causal) for SDPA with attnbench's conventions.

    Plain causal with Tq == Tk uses ``is_causal``; causal with Tq != Tk uses
    ``causal_lower_right`` (SDPA's ``is_causal`` is aligned top-left there, which is not
    attnbench's convention); padding, windows and documents become one boolean mask, ALiBi a
    float bias with -inf on the masked pairs.
    """
    t_q, t_k = q.shape[-2], k.shape[-2]
    explicit = key_padding_mask is not None or window is not None or \
        document_ids is not None or q_lengths is not None or kv_lengths is not None
    if alibi_slopes is None and not explicit:
        if not causal:
            return None, False
        if t_q == t_k:
            return None, True
        from torch.nn.attention.bias import causal_lower_right

        return causal_lower_right(t_q, t_k), False
    allowed = allowed_keys(q, k, causal=causal, key_padding_mask=key_padding_mask,
                           window=window, document_ids=document_ids, q_lengths=q_lengths,
                           kv_lengths=kv_lengths)
    if alibi_slopes is None:
        return allowed, False
    bias = alibi_bias(q, k, alibi_slopes)
    if allowed is not None:
        bias = bias.masked_fill(~allowed, float("-inf"))
    return bias, False


def sdpa_attention(q, k, v, *, causal=False, key_padding_mask=None, window=None,
                   alibi_slopes=None, document_ids=None, backend: str = "MATH",
                   q_lengths=None, kv_lengths=None, page_table=None):
    """SDPA pinned to one backend; an input that backend has no kernel for (head dim, alignment,
    dtype, mask) raises UnsupportedError with torch's own reasons, not RuntimeError. A paged
    cache is gathered to dense first, inside the call (timed); a ragged batch is masked."""
    k, v = dense_kv(k, v, page_table, kv_lengths, key_padding_mask)
    features = {"causal": causal, "key_padding_mask": key_padding_mask, "window": window,
                "alibi_slopes": alibi_slopes, "document_ids": document_ids,
                "q_lengths": q_lengths, "kv_lengths": kv_lengths}
    try:
        return _pinned_call(q, k, v, backend, **features)
    except RuntimeError as exc:
        if not no_kernel_error(exc):
            raise
        reasons = _kernel_reasons(lambda: _pinned_call(q, k, v, backend, **features), backend)
        shape = "x".join(str(n) for n in q.shape)
        raise UnsupportedError(
            f"SDPBackend.{backend} has no kernel for this input ({shape}, "
            f"{str(q.dtype).removeprefix('torch.')}, {q.device.type}): "
            f"{reasons or first_line(str(exc))}") from exc


def _pinned_call(q, k, v, backend, *, causal, key_padding_mask, window, alibi_slopes,
                 document_ids, q_lengths=None, kv_lengths=None):
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    mask, is_causal = sdpa_mask(q, k, causal=causal, key_padding_mask=key_padding_mask,
                                window=window, alibi_slopes=alibi_slopes,
                                document_ids=document_ids, q_lengths=q_lengths,
                                kv_lengths=kv_lengths)
    gqa = k.shape[1] != q.shape[1]
    with sdpa_kernel(getattr(SDPBackend, backend)):
        if gqa:  # native grouped-query attention: no copy of k, v
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                                  enable_gqa=True)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)


# torch's select_sdp_backend (aten/src/ATen/native/transformers/cuda/sdp_utils.cpp): when the
# allowed backends cannot run an input it warns, per backend, "<X> kernel not used because:"
# followed by one warning per failed check, then raises "No available kernel. Aborting
# execution."; on the CPU the message is "No viable backend for scaled_dot_product_attention".
NO_KERNEL = ("No available kernel", "No viable backend")
REASON_HEADERS = {"FLASH_ATTENTION": "flash attention", "EFFICIENT_ATTENTION": "memory efficient",
                  "CUDNN_ATTENTION": "cudnn attention", "MATH": "math"}
MAX_REASON_CHARS = 300


def no_kernel_error(exc: BaseException) -> bool:
    return isinstance(exc, RuntimeError) and any(s in str(exc) for s in NO_KERNEL)


def _kernel_reasons(call, backend: str) -> str:
    """Run the failing call again, recording torch's warnings: the pinned backend's reasons."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            call()
        except RuntimeError:
            pass
    return kernel_reasons([str(w.message) for w in caught], backend)


def kernel_reasons(messages: list[str], backend: str) -> str:
    """The warnings under the pinned backend's "... not used because:" header, joined."""
    header = REASON_HEADERS.get(backend, backend.lower())
    lines = [first_line(m.split(" (Triggered internally at")[0], MAX_REASON_CHARS)
             for m in messages]
    reasons: list[str] = []
    inside = False
    for line in lines:
        if line.rstrip().endswith("not used because:"):
            inside = line.lower().startswith(header)
        elif inside and line:
            reasons.append(line.rstrip("."))
    return "; ".join(reasons)[:MAX_REASON_CHARS]


# What the CUDA flash kernel cannot take: an attn_mask tensor (padding, windows, documents and
# ALiBi all become one). Causal with Tq != Tk is not among them: sdpa_mask passes it as
# torch.nn.attention.bias.causal_lower_right, whose dispatch (CausalBias._dispatch) checks
# can_use_flash_attention with no mask and is_causal False, then calls the flash kernel with
# is_causal=True, which the flash kernel aligns lower-right (query i sees keys j <= i + Tk - Tq).
CUDA_FLASH_MASK_FEATURES = ("key_padding_mask", "window", "alibi", "documents", "ragged",
                            "paged")


def _cuda_flash_constraints(query: Query) -> list[str]:
    reasons = []
    if query.device == "cuda" and any(query.has(f) for f in CUDA_FLASH_MASK_FEATURES):
        reasons.append("the CUDA flash kernel takes no attn_mask (key-padding mask, window, "
                       "documents, ALiBi and ragged lengths unsupported on cuda)")
    if query.device == "cuda" and query.dtype not in ("float16", "bfloat16"):
        reasons.append(f"the CUDA flash kernel needs float16/bfloat16, not {query.dtype}")
    return reasons


# SDPA adds an attn_mask to the scores and nothing else
SCORE_MOD_REASONS = (
    ("softcap", "SDPA has no softcap: cap * tanh(s / cap) is no additive attn_mask"),
    ("sinks", "SDPA has no sink term; one extra zero key and value with a float attn_mask "
              "column of sink logits would be exact, but it copies K and V and materialises "
              "a Hq x Tq x (Tk + 1) bias in every call: not the workload of a native sink"))
# torch's sdp_utils (check_head_dim_size_flash, CPU and CUDA): "Flash attention requires q,k,v
# to have the same last dimension". The efficient and cuDNN kernels take D_v != D within their
# own limits (alignment, head dims at most 128/256), refused at run time with torch's reasons.
SDPA_FLASH_HEAD_DIMS = ("SDPA's flash kernel needs q, k and v of one head dim (torch's "
                        "check_head_dim_size_flash), so D_v != D is unsupported")
# FP8 k, v: SDPA takes no float8 inputs in any backend; the math backend is given them
# dequantised inside the timed call (implementations._fp8: the naive path). The fused backends
# are not: a dequantised copy before a fused kernel is not that kernel's FP8 path.
NO_FP8_REASON = ("torch SDPA takes no FP8 inputs; its fused backends have no FP8 key/value "
                 "path (sdpa_math records the dequantise-then-attend baseline)")


def _pinned(backend: str):
    def attention(q, k, v, *, causal=False, key_padding_mask=None, window=None,
                  alibi_slopes=None, document_ids=None, q_lengths=None, kv_lengths=None,
                  page_table=None, kv_dtype="", k_scale=None, v_scale=None):
        k, v = fp8.dequantised(q, k, v, k_scale, v_scale)
        return sdpa_attention(q, k, v, causal=causal, key_padding_mask=key_padding_mask,
                              window=window, alibi_slopes=alibi_slopes,
                              document_ids=document_ids, backend=backend,
                              q_lengths=q_lengths, kv_lengths=kv_lengths,
                              page_table=page_table)
    return attention


for _name, (_backend, _devices, _dtypes) in BACKENDS.items():
    register(_name, framework="torch", family="exact",
             traits=TRAITS[_backend],
             capabilities=Capabilities(
                 devices=_devices, dtypes=_dtypes, causal=True, key_padding_mask=True,
                 backward=True, gqa=True, q_len=True, window=True, alibi=True, documents=True,
                 paged=True, ragged=True, head_dim_v=_backend != "FLASH_ATTENTION",
                 fp8_kv=_backend == "MATH",
                 reasons=SCORE_MOD_REASONS + (("head_dim_v", SDPA_FLASH_HEAD_DIMS),) + (
                     () if _backend == "MATH" else (("fp8_kv", NO_FP8_REASON),)),
                 paths=(("gqa", "enable_gqa=True"),
                        ("paged", PAGED_PATH), ("ragged", RAGGED_PATH),
                        ("causal Tq != Tk", "torch.nn.attention.bias.causal_lower_right"),
                        ("masks", "boolean attn_mask (padding, window, documents)"),
                        ("alibi", "float attn_mask bias"),
                        *((("fp8_kv", fp8.PATH),) if _backend == "MATH" else ()))),
             description=f"torch SDPA pinned to SDPBackend.{_backend}",
             constraints=_cuda_flash_constraints if _name == "sdpa_flash" else None,
             # MATH forms the Tq x Tk scores and copies k, v to the query heads under
             # enable_gqa (repeat_interleave inside aten); the other backends are tiled
             # kernels with native GQA. ALiBi is a float attn_mask, per batch row with documents
             traffic=(dequant_copy(materialised(kv_copy=True, alibi_bias="rows"))
                      if _backend == "MATH" else tiled(alibi_bias="rows")),
             )(_pinned(_backend))
