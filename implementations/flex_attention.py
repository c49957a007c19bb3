"""FlexAttention (torch.nn.attention.flex_attention) compiled with ``torch.compile``.

Masks are block masks built by ``create_block_mask`` from one ``mask_mod`` (bottom-right
causal, windows, packed documents, key padding, combined with ``and_masks``); ALiBi is a
``score_mod``; GQA/MQA is ``enable_gqa=True`` (k, v not copied). Runs on the CPU as well as on
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


RECOMPILE_LIMIT = 64   # one compilation per (shape, mask structure) seen in one process


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
                 key_padding_mask=None):
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
    if not mods:
        return None
    return mods[0] if len(mods) == 1 else and_masks(*mods)


def alibi_score_mod(slopes, *, t_q: int, t_k: int):
    """score - slope_h * |i + Tk - Tq - j|."""
    offset = t_k - t_q

    def score_mod(score, b, h, q_idx, kv_idx):
        return score - slopes[h] * (q_idx + offset - kv_idx).abs()

    return score_mod


def prepare(q, k, v, *, causal=False, key_padding_mask=None, window=None, alibi_slopes=None,
            document_ids=None, kv_dtype="", k_scale=None, v_scale=None):
    """Build the block mask and score_mod once; returns the call (q, k, v) -> out. FP8 k, v
    (``k_scale``, ``v_scale``) are dequantised inside the call, before the compiled kernel
    (flex_attention takes no FP8 inputs)."""
    from torch.nn.attention.flex_attention import create_block_mask

    batch, _, t_q, _ = q.shape
    t_k = k.shape[2]
    mask_mod = mask_mod_for(t_q=t_q, t_k=t_k, causal=causal, window=window,
                            document_ids=None if document_ids is None
                            else document_ids.to(q.device),
                            key_padding_mask=None if key_padding_mask is None
                            else key_padding_mask.to(q.device))
    per_row = document_ids is not None or key_padding_mask is not None
    block_mask = None if mask_mod is None else create_block_mask(
        mask_mod, batch if per_row else None, None, t_q, t_k, device=q.device)
    score_mod = None if alibi_slopes is None else alibi_score_mod(
        alibi_slopes.to(device=q.device, dtype=q.dtype), t_q=t_q, t_k=t_k)
    gqa = k.shape[1] != q.shape[1]
    flex = _compiled()

    def call(q_, k_, v_):
        k_, v_ = fp8.dequantised(q_, k_, v_, k_scale, v_scale)
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
              alibi=True, documents=True, fp8_kv=True,
              paths=(("gqa", "enable_gqa=True"),
                     ("masks", "create_block_mask from one mask_mod (and_masks)"),
                     ("alibi", "score_mod"),
                     ("fp8_kv", fp8.PATH + ", before the compiled kernel"))),
          # fused: the T x T scores are never stored; FP8 k, v dequantised into a copy
          traffic=dequant_copy(tiled_exact))
def flex_attention(q, k, v, *, causal=False, key_padding_mask=None, window=None,
                   alibi_slopes=None, document_ids=None, kv_dtype="", k_scale=None,
                   v_scale=None):
    """torch.compile'd flex_attention with a block mask and an ALiBi score_mod."""
    return prepare(q, k, v, causal=causal, key_padding_mask=key_padding_mask, window=window,
                   alibi_slopes=alibi_slopes, document_ids=document_ids, k_scale=k_scale,
                   v_scale=v_scale)(q, k, v)
