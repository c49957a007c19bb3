"""Mask helpers shared by the torch implementations.

Convention across attnbench (see harness.contract.masking): ``key_padding_mask`` is (B, Tk) with
True = keep; causal and windows are aligned bottom-right (query i sits at key position
i + Tk - Tq); ``document_ids`` (B, T) keeps pairs within one document; a query row that can see
no key at all (fully masked) gets an all-zero output.
"""

from __future__ import annotations

import torch


def allowed_keys(q: torch.Tensor, k: torch.Tensor, *, causal: bool,
                 key_padding_mask: torch.Tensor | None, window: tuple[int, int] | None = None,
                 document_ids: torch.Tensor | None = None,
                 q_lengths: torch.Tensor | None = None,
                 kv_lengths: torch.Tensor | None = None) -> torch.Tensor | None:
    """Boolean (B or 1, 1, Tq, Tk) mask of the keys each query may attend to, or None.
    ``q_lengths``, ``kv_lengths`` (B,): a ragged batch, each sequence right-aligned in its row
    (harness.contract.ragged): only its last q_lengths[b] queries and kv_lengths[b] keys."""
    t_q, t_k = q.shape[-2], k.shape[-2]
    device = q.device
    rows = torch.arange(t_q, device=device)[:, None] + (t_k - t_q)
    cols = torch.arange(t_k, device=device)[None, :]
    allowed = None

    def both(a: torch.Tensor | None, b: torch.Tensor) -> torch.Tensor:
        return b if a is None else a & b

    if causal:
        allowed = both(allowed, (cols <= rows)[None, None])
    if window is not None:
        left, right = window
        if left >= 0:
            allowed = both(allowed, (cols >= rows - left)[None, None])
        if right >= 0:
            allowed = both(allowed, (cols <= rows + right)[None, None])
    if document_ids is not None:
        docs = document_ids.to(device)
        allowed = both(allowed, (docs[:, :, None] == docs[:, None, :])[:, None])
    if key_padding_mask is not None:
        keep = key_padding_mask.to(device=device, dtype=torch.bool)[:, None, None, :]
        allowed = both(allowed, keep)
    if q_lengths is not None:
        real_q = rows - (t_k - t_q) >= (t_q - q_lengths.to(device))[:, None, None]  # (B, Tq, 1)
        allowed = both(allowed, real_q[:, None])
    if kv_lengths is not None:
        real_k = cols >= (t_k - kv_lengths.to(device))[:, None, None]              # (B, 1, Tk)
        allowed = both(allowed, real_k[:, None])
    return allowed


def alibi_bias(q: torch.Tensor, k: torch.Tensor, slopes: torch.Tensor) -> torch.Tensor:
    """(1, Hq, Tq, Tk) in q's dtype: -slope_h * |i' - j| (bottom-right aligned)."""
    t_q, t_k = q.shape[-2], k.shape[-2]
    rows = torch.arange(t_q, device=q.device)[:, None] + (t_k - t_q)
    distance = (rows - torch.arange(t_k, device=q.device)[None, :]).abs()
    slopes = slopes.to(device=q.device, dtype=torch.float32)
    return (-slopes[None, :, None, None] * distance[None, None]).to(q.dtype)


def softmax_with_sinks(scores: torch.Tensor, sinks: torch.Tensor) -> torch.Tensor:
    """Row weights exp(s_ij) / (exp(sink_h) + sum_j exp(s_ij)) of (B, Hq, Tq, Tk) scores (-inf:
    masked) and (Hq,) sink logits: the softmax over the scores with one sink column appended,
    the sink's column dropped (float32 for half inputs). A row without keys weighs nothing."""
    work = torch.float32 if scores.dtype in (torch.float16, torch.bfloat16) else scores.dtype
    sink = sinks.to(device=scores.device, dtype=work)[None, :, None, None]
    column = sink.expand(*scores.shape[:-1], 1)
    both = torch.cat([scores.to(work), column], dim=-1)
    return torch.softmax(both, dim=-1)[..., :-1]
