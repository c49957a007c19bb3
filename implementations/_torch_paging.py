"""A paged KV cache gathered back to a dense tensor, inside the method's timed call.

For the methods without a native paged path (softmax_torch, SDPA): reading the pages into a
dense tensor is part of their work on a paged cache, so it runs inside the call and is timed
(their recorded path: "gather to dense, timed"). Layout: harness.contract.paging.
"""

from __future__ import annotations

import torch

# how the methods without a native paged or varlen path take those workloads
PAGED_PATH = "gather to dense, timed (inside the call), then as a dense cache"
RAGGED_PATH = "padded to the longest sequence, masked by the lengths (padded work)"


def gathered_length(page_table: torch.Tensor, pool: torch.Tensor) -> int:
    """The dense length the gather builds: every page slot of the table (no host sync)."""
    return page_table.shape[1] * pool.shape[1]


def gather_dense(pool: torch.Tensor, page_table: torch.Tensor,
                 kv_lengths: torch.Tensor) -> torch.Tensor:
    """(num_pages, page_size, Hkv, D) pool -> (B, Hkv, Tk', D), each sequence's keys
    right-aligned (Tk' = max pages x page_size); the slots left of a sequence hold other
    keys of the pool, which its kv_lengths mask keeps out. One indexed copy."""
    page_size, heads, dim = pool.shape[1], pool.shape[2], pool.shape[3]
    t_k = gathered_length(page_table, pool)
    table = page_table.to(torch.int64)
    shift = t_k - kv_lengths.to(device=pool.device, dtype=torch.int64)
    logical = (torch.arange(t_k, device=pool.device)[None, :] - shift[:, None]).clamp_min(0)
    pages = torch.gather(table, 1, logical // page_size)
    slots = pages * page_size + logical % page_size                     # (B, Tk')
    return pool.reshape(-1, heads, dim)[slots].transpose(1, 2)          # (B, Hkv, Tk', D)


def dense_kv(k: torch.Tensor, v: torch.Tensor, page_table: torch.Tensor | None,
             kv_lengths: torch.Tensor | None,
             key_padding_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """k, v as given (dense), or gathered from their pools when a page table comes with them."""
    if page_table is None:
        return k, v
    if key_padding_mask is not None:
        raise ValueError("a paged cache takes kv_lengths, not a key-padding mask")
    return gather_dense(k, page_table, kv_lengths), gather_dense(v, page_table, kv_lengths)


def refuse_ragged(q_lengths, kv_lengths, *, t_q: int, paged: bool, dense_reason: str,
                  queries_reason: str) -> None:
    """For a kernel that takes per-request key lengths only through its paged cache and one
    query count for every request: UnsupportedError(dense_reason) for a ragged batch on a dense
    cache, UnsupportedError(queries_reason) when the query lengths are not all ``t_q``."""
    from harness.errors import UnsupportedError

    if q_lengths is None and kv_lengths is None:
        return
    if not paged:
        raise UnsupportedError(dense_reason)
    if q_lengths is not None and any(int(n) != t_q for n in q_lengths.tolist()):
        raise UnsupportedError(queries_reason)
