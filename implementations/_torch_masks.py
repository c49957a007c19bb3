"""Mask helpers shared by the torch implementations.

Convention across attnbench: ``key_padding_mask`` is (B, T) with True = keep; a query row that
can see no key at all (fully masked) gets an all-zero output.
"""

from __future__ import annotations

import torch


def allowed_keys(q: torch.Tensor, k: torch.Tensor, *, causal: bool,
                 key_padding_mask: torch.Tensor | None) -> torch.Tensor | None:
    """Boolean (B or 1, 1, Tq, Tk) mask of the keys each query may attend to, or None."""
    t_q, t_k = q.shape[-2], k.shape[-2]
    allowed = None
    if causal:
        allowed = torch.ones(t_q, t_k, dtype=torch.bool, device=q.device).tril(t_k - t_q)
        allowed = allowed[None, None]
    if key_padding_mask is not None:
        keep = key_padding_mask.to(device=q.device, dtype=torch.bool)[:, None, None, :]
        allowed = keep if allowed is None else allowed & keep
    return allowed
