"""FlexAttention (torch.nn.attention.flex_attention) compiled with ``torch.compile``.

Masks are block masks built by ``create_block_mask`` from one ``mask_mod`` (bottom-right
causal, windows, packed documents, key padding, combined with ``and_masks``); ALiBi and the
softcap are one ``score_mod`` (cap * tanh(s / cap), then ALiBi); sinks rescale the output by
exp(lse) / (exp(lse) + exp(sink)) = sigmoid(lse - sink) from the log-sum-exp flex_attention
returns (exact); GQA/MQA is ``enable_gqa=True`` (k, v not copied). Runs on the CPU as well as on
CUDA. The runner builds the block mask once per point (``prepare``, recorded as
``mask_build_s``) and records the first call's compilation apart (``compile_time_s``), as a
model builds its mask once per batch and compiles once; ``COMPILE_MODE`` says how often it
compiles (in each record's extra).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from harness.contract.registry import Capabilities, Query, register
from harness.contract.traits import Traits
from harness.metrics.traffic import dequant_copy, tiled_exact
from implementations import _fp8 as fp8


RECOMPILE_LIMIT = 64
PAGED_Q_BLOCK = 128    # the query block of a paged block mask (its KV block is one page)   # one compilation per (shape, mask structure) seen in one process


# How it compiles: static shapes, one compilation per distinct shape and mask structure. Both
# passes of a point share one workload, hence one compilation; a new prepare() with the same
# shape and mask structure does not recompile either (its new mask_mod closures pass dynamo's
# guards: checked with dynamo's unique_graphs counter). Dynamic shapes were measured on a 2-core
# CPU (forward, B=1 H=8 D=64, T=512..4096, full and causal): medians within 5% of static ones
# and one compilation instead of one per T; but with torch 2.13 Inductor's CPU FlexAttention
# template fails to compile (C++: 'cur_qSplitSize5' was not declared) for some of the
# workload cases (tests/test_workloads.py), so static shapes stay.
COMPILE_MODE = "static shapes (one compilation per distinct shape and mask, shared by the " \
               "memory and timing passes)"


@functools.cache
def _compiled() -> Callable[..., Any]:
    """torch.compile(flex_attention), static shapes (see COMPILE_MODE). Dynamo's default limit
    of 8 recompilations would, past it, run flex_attention uncompiled (its slow reference path)
    without a word: raised here so that a process calling many shapes (tests, notebooks) keeps
    the compiled kernel."""
    import torch
    from torch.nn.attention.flex_attention import flex_attention

    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), RECOMPILE_LIMIT))
    return torch.compile(flex_attention, dynamic=False)


def mask_mod_for(*, t_q: int, t_k: int, causal: bool, window=None, document_ids=None,
                 key_padding_mask=None, q_lengths=None, kv_lengths=None):
    """The mask_mod of attnbench's conventions (query i at key position i + Tk - Tq), or None
    when every pair is allowed."""
    from torch.nn.attention.flex_attention import and_masks

    offset = t_k - t_q
    mods = []
    if causal:
        mods.append(lambda b, h, q_idx, kv_idx: kv_idx <= q_idx + offset)
    if window is not None:
        left, right = int(window[0]), int(window[1])
        if left >= 0:
            mods.append(lambda b, h, q_idx, kv_idx: kv_idx >= q_idx + offset - left)
        if right >= 0:
            mods.append(lambda b, h, q_idx, kv_idx: kv_idx <= q_idx + offset + right)
    if document_ids is not None:
        docs = document_ids
        mods.append(lambda b, h, q_idx, kv_idx: docs[b, q_idx] == docs[b, kv_idx])
    if key_padding_mask is not None:
        keep = key_padding_mask.to(bool)
        mods.append(lambda b, h, q_idx, kv_idx: keep[b, kv_idx])
    if q_lengths is not None:   # a ragged batch, right-aligned (harness.contract.ragged)
        q_n = q_lengths
        mods.append(lambda b, h, q_idx, kv_idx: q_idx >= t_q - q_n[b])
    if kv_lengths is not None:
        kv_n = kv_lengths
        mods.append(lambda b, h, q_idx, kv_idx: kv_idx >= t_k - kv_n[b])
    if not mods:
        return None
    return mods[0] if len(mods) == 1 else and_masks(*mods)


def alibi_score_mod(slopes, *, t_q: int, t_k: int):
    """score - slope_h * |i + Tk - Tq - j|."""
    offset = t_k - t_q

    def score_mod(score, b, h, q_idx, kv_idx):
        return score - slopes[h] * (q_idx + offset - kv_idx).abs()

    return score_mod


def softcap_score_mod(cap: float):
    """cap * tanh(score / cap): Gemma 2's logit softcap on the scaled score."""
    import torch

    def score_mod(score, b, h, q_idx, kv_idx):
        return cap * torch.tanh(score / cap)

    return score_mod


def chained_score_mod(*mods):
    """The score_mods applied in order (None entries skipped); None when there are none."""
    mods = tuple(m for m in mods if m is not None)
    if len(mods) <= 1:
        return mods[0] if mods else None

    def score_mod(score, b, h, q_idx, kv_idx):
        for mod in mods:
            score = mod(score, b, h, q_idx, kv_idx)
        return score

    return score_mod


def flex_with_lse(device_type: str):
    """flex_attention returning (out, lse (B, Hq, Tq), natural log). On CUDA the compiled
    kernel; on the CPU torch.compile's kernel has no log-sum-exp ('return_lse is not supported
    yet' in torch 2.13), so the uncompiled flex_attention (its unfused reference path)."""
    import warnings

    from torch.nn.attention import flex_attention as flex_module

    fn = _compiled() if device_type == "cuda" else flex_module.flex_attention
    aux_request = getattr(flex_module, "AuxRequest", None)

    def call(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*without torch.compile.*")
            if aux_request is not None:      # torch >= 2.9: return_aux; return_lse deprecated
                out, aux = fn(*args, return_aux=aux_request(lse=True), **kwargs)
                return out, aux.lse
            return fn(*args, return_lse=True, **kwargs)

    return call


def sink_rescaled(out, lse, sinks):
    """out * exp(lse) / (exp(lse) + exp(sink_h)) = out * sigmoid(lse - sink_h), in float32 (no
    exp overflows; a row without keys has lse = -inf and stays 0)."""
    import torch

    sink = sinks.to(device=lse.device, dtype=torch.float32)[None, :, None]
    return (out.float() * torch.sigmoid(lse.float() - sink)[..., None]).to(out.dtype)


def prepare(q, k, v, *, causal=False, key_padding_mask=None, window=None, alibi_slopes=None,
            document_ids=None, softcap=None, sinks=None, q_lengths=None, kv_lengths=None,
            page_table=None, kv_dtype="", k_scale=None, v_scale=None):
    """Build the block mask and score_mod once; returns the call (q, k, v) -> out. FP8 k, v
    (``k_scale``, ``v_scale``) are dequantised inside the call, before the compiled kernel
    (flex_attention takes no FP8 inputs)."""
    from torch.nn.attention.flex_attention import create_block_mask

    if page_table is not None:
        return prepare_paged(q, k, v, page_table, kv_lengths, causal=causal, window=window,
                             alibi_slopes=alibi_slopes, q_lengths=q_lengths,
                             key_padding_mask=key_padding_mask, document_ids=document_ids,
                             softcap=softcap, sinks=sinks, k_scale=k_scale, v_scale=v_scale)
    batch, _, t_q, _ = q.shape
    t_k = k.shape[2]

    def on(x):
        return None if x is None else x.to(q.device)

    mask_mod = mask_mod_for(t_q=t_q, t_k=t_k, causal=causal, window=window,
                            document_ids=on(document_ids), key_padding_mask=on(key_padding_mask),
                            q_lengths=on(q_lengths), kv_lengths=on(kv_lengths))
    per_row = document_ids is not None or key_padding_mask is not None or \
        q_lengths is not None or kv_lengths is not None
    block_mask = None if mask_mod is None else create_block_mask(
        mask_mod, batch if per_row else None, None, t_q, t_k, device=q.device)
    score_mod = chained_score_mod(
        softcap_score_mod(float(softcap)) if softcap else None,
        None if alibi_slopes is None else alibi_score_mod(
            alibi_slopes.to(device=q.device, dtype=q.dtype), t_q=t_q, t_k=t_k))
    gqa = k.shape[1] != q.shape[1]
    if sinks is not None:
        flex_lse = flex_with_lse(q.device.type)
        sink_logits = sinks.to(q.device)

        def call_with_sinks(q_, k_, v_):
            k_, v_ = fp8.dequantised(q_, k_, v_, k_scale, v_scale)
            out, lse = flex_lse(q_, k_, v_, score_mod=score_mod, block_mask=block_mask,
                                enable_gqa=gqa)
            return sink_rescaled(out, lse, sink_logits)

        return call_with_sinks
    flex = _compiled()

    def call(q_, k_, v_):
        k_, v_ = fp8.dequantised(q_, k_, v_, k_scale, v_scale)
        return flex(q_, k_, v_, score_mod=score_mod, block_mask=block_mask, enable_gqa=gqa)

    return call


def paged_attention_class():
    """torch's PagedAttention (torch.nn.attention.experimental; private, so looked up here)."""
    from torch.nn.attention.experimental._paged_attention import PagedAttention

    return PagedAttention


def prepare_paged(q, k_pool, v_pool, page_table, kv_lengths, *, causal=False, window=None,
                  alibi_slopes=None, q_lengths=None, key_padding_mask=None,
                  document_ids=None, softcap=None, sinks=None, k_scale=None, v_scale=None):
    """A paged cache (harness.contract.paging) through torch's PagedAttention: the logical
    block mask (KV block = one page) over each sequence's keys, converted to the physical
    pages by ``convert_logical_block_mask``; the NHD pools are laid out once as its cache
    (1, Hkv, pages x page_size, D) (the layout a flex-attention server keeps its cache in)."""
    import torch
    from torch.nn.attention.flex_attention import create_block_mask

    if key_padding_mask is not None or document_ids is not None:
        raise ValueError("a paged cache takes kv_lengths, not a key-padding mask or documents")
    num_pages, page_size, heads, _ = k_pool.shape
    batch, _, t_q, _ = q.shape
    device = q.device
    table = page_table.to(device=device, dtype=torch.int64)
    lengths = kv_lengths.to(device=device, dtype=torch.int64)
    t_k = table.shape[1] * page_size                 # the logical keys of the longest
    paged = paged_attention_class()(num_pages, page_size, batch, device=str(device))
    full = torch.full((batch, num_pages), -1, dtype=torch.int64, device=device)
    used = (torch.arange(table.shape[1], device=device)[None, :] * page_size) < lengths[:, None]
    full[:, :table.shape[1]] = torch.where(used, table, -1)
    paged.page_table = full
    to_logical = torch.full((batch, num_pages), -1, dtype=torch.int64, device=device)
    rows = torch.arange(batch, device=device)[:, None].expand_as(table)
    logical = torch.arange(table.shape[1], device=device)[None, :].expand_as(table)
    to_logical[rows[used], table[used]] = logical[used]
    paged.physical_to_logical = to_logical
    # logical key j of sequence b sits at dense position t_k - Lk_b + j (right-aligned)
    shift = t_k - lengths
    dense_mod = mask_mod_for(t_q=t_q, t_k=t_k, causal=causal, window=window,
                             q_lengths=None if q_lengths is None else q_lengths.to(device))

    def logical_mod(b, h, q_idx, kv_idx):
        live = kv_idx < lengths[b]
        return live if dense_mod is None else live & dense_mod(b, h, q_idx, kv_idx + shift[b])

    logical_mask = create_block_mask(logical_mod, batch, None, t_q, t_k, device=device,
                                     BLOCK_SIZE=(PAGED_Q_BLOCK, page_size))
    block_mask = paged.convert_logical_block_mask(logical_mask, kv_len=lengths)
    score_mod = None
    dense_score = chained_score_mod(
        softcap_score_mod(float(softcap)) if softcap else None,
        None if alibi_slopes is None else alibi_score_mod(
            alibi_slopes.to(device=device, dtype=q.dtype), t_q=t_q, t_k=t_k))
    if dense_score is not None:
        def logical_score(score, b, h, q_idx, kv_idx):
            return dense_score(score, b, h, q_idx, kv_idx + shift[b])

        score_mod = paged.get_score_mod(logical_score, kv_len=lengths)
    # each pool with its own head dim (v's is D_v)
    cache_k, cache_v = (pool.reshape(num_pages * page_size, heads, pool.shape[-1])
                        .transpose(0, 1).unsqueeze(0).contiguous() for pool in (k_pool, v_pool))
    gqa = heads != q.shape[1]
    if sinks is not None:
        flex_lse = flex_with_lse(device.type)
        sink_logits = sinks.to(device)

        def call_with_sinks(q_, k_, v_):
            k_, v_ = fp8.dequantised(q_, cache_k, cache_v, k_scale, v_scale)
            out, lse = flex_lse(q_, k_, v_, score_mod=score_mod,
                                block_mask=block_mask, enable_gqa=gqa)
            return sink_rescaled(out, lse, sink_logits)

        return call_with_sinks
    flex = _compiled()

    def call(q_, k_, v_):   # k_, v_: the pools, read as the cache laid out above
        k_, v_ = fp8.dequantised(q_, cache_k, cache_v, k_scale, v_scale)
        return flex(q_, k_, v_, score_mod=score_mod, block_mask=block_mask, enable_gqa=gqa)

    return call


def cpu_backward_constraint(query: Query) -> list[str]:
    """torch's FlexAttention has no backward on the CPU (NotImplementedError in torch 2.13)."""
    if query.device == "cpu" and query.backward:
        return ["FlexAttention has no backward on the CPU (torch raises NotImplementedError)"]
    return []


@register("flex_attention", framework="torch", family="exact", prepare=prepare, compiles=True,
          compile_mode=COMPILE_MODE,
          traits=Traits(memory="tiled"),
          constraints=cpu_backward_constraint,
          capabilities=Capabilities(
              devices=("cpu", "cuda"), dtypes=("float32", "float16", "bfloat16"), causal=True,
              key_padding_mask=True, backward=True, gqa=True, q_len=True, window=True,
              alibi=True, documents=True, softcap=True, sinks=True, paged=True, ragged=True,
              head_dim_v=True, fp8_kv=True,
              paths=(("gqa", "enable_gqa=True"),
                     ("head_dim_v", "v of its own head dim (flex_attention's output takes v's)"),
                     ("masks", "create_block_mask from one mask_mod (and_masks)"),
                     ("alibi", "score_mod"),
                     ("softcap", "score_mod cap * tanh(score / cap), before ALiBi's"),
                     ("sinks", "output * sigmoid(lse - sink) from the returned log-sum-exp "
                               "(return_aux=AuxRequest(lse=True)); on the CPU uncompiled: "
                               "torch.compile's CPU kernel returns no log-sum-exp"),
                     ("paged", "torch's PagedAttention: block mask over the page table "
                               "(convert_logical_block_mask, KV block = page), pools laid "
                               "out once in prepare as its (1, Hkv, pages x page_size, D) "
                               "cache"),
                     ("ragged", "per-row mask_mod on the lengths: padded tensors, fully "
                                "masked blocks skipped"),
                     ("fp8_kv", fp8.PATH + ", before the compiled kernel"))),
          # fused: the T x T scores are never stored; FP8 k, v dequantised into a copy
          traffic=dequant_copy(tiled_exact))
def flex_attention(q, k, v, *, causal=False, key_padding_mask=None, window=None,
                   alibi_slopes=None, document_ids=None, softcap=None, sinks=None,
                   q_lengths=None, kv_lengths=None, page_table=None, kv_dtype="",
                   k_scale=None, v_scale=None):
    """torch.compile'd flex_attention with a block mask, a softcap and ALiBi score_mod and the
    sinks' rescaling."""
    return prepare(q, k, v, causal=causal, key_padding_mask=key_padding_mask, window=window,
                   alibi_slopes=alibi_slopes, document_ids=document_ids, softcap=softcap,
                   sinks=sinks, q_lengths=q_lengths, kv_lengths=kv_lengths,
                   page_table=page_table, k_scale=k_scale, v_scale=v_scale)(q, k, v)
