"""The paged KV cache of a point: the page pool's layout and its seeded page table.

Layout (``--page-size N``): keys and values each live in a pool of shape
(num_pages, page_size, Hkv, D), the NHD page layout of FlashInfer (its paged_kv_cache without
the k/v dimension: two pools), of vLLM's FlashAttention backend and of flash_attn's
``flash_attn_with_kvcache(k_cache=...)``. Sequence b's key j (its logical position, 0 ..
Lk_b - 1) is in page ``page_table[b, j // page_size]`` at slot ``j % page_size``. The pool holds
exactly the pages the sequences need (sum of ceil(Lk_b / page_size)); the pages are handed out
in a seeded shuffled order, so that consecutive pages of one sequence are not neighbours in
memory (locality is not flattered). Unused page-table entries are 0 (read past Lk_b never).

Semantics equal those of the dense cache: the gathered keys and values, right-aligned in their
row as a ragged batch lays them out (harness.contract.ragged), are the dense ones; the float64
reference is the dense attention of them.

A method with the ``paged`` capability receives the pools as ``k`` and ``v`` and the keywords
``page_table`` (B, max_pages) int32 and ``kv_lengths`` (B,) int32 (with and without
``--lengths``); ``q`` is the dense (B, Hq, Tq, D) tensor.
"""

from __future__ import annotations

import numpy as np

PAGE_SEED = 0   # the page order of a point (the same in every worker)
# a paged cache is an inference input: no method is asked for gradients through its pools
PAGED_BACKWARD_REASON = ("a paged KV cache is an inference cache: forward pass only (no "
                         "gradient through the page pools)")


def pages_needed(kv_lengths: np.ndarray, page_size: int) -> np.ndarray:
    return -(-np.asarray(kv_lengths, dtype=np.int64) // page_size)


def page_table(kv_lengths: np.ndarray, page_size: int, *,
               seed: int = PAGE_SEED) -> tuple[np.ndarray, int]:
    """(the (B, max_pages) int32 page table, the number of pages in the pool): each sequence's
    pages drawn from one seeded permutation of the pool."""
    if page_size <= 0:
        raise ValueError(f"page_size must be positive, got {page_size}")
    counts = pages_needed(kv_lengths, page_size)
    total = int(counts.sum())
    order = np.random.default_rng(seed).permutation(total).astype(np.int32)
    table = np.zeros((len(counts), int(counts.max())), dtype=np.int32)
    start = 0
    for b, count in enumerate(counts):
        table[b, :count] = order[start:start + count]
        start += count
    return table, total


def slot_index(kv_lengths: np.ndarray, t_k: int, page_size: int,
               table: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(batch rows, dense key positions, flat pool slots) of every real key: sequence b's
    logical key j sits at dense position t_k - Lk_b + j and pool slot page * page_size + j %
    page_size."""
    rows, cols, slots = [], [], []
    for b, length in enumerate(np.asarray(kv_lengths, dtype=np.int64)):
        j = np.arange(length)
        rows.append(np.full(length, b))
        cols.append(t_k - length + j)
        slots.append(table[b, j // page_size].astype(np.int64) * page_size + j % page_size)
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(slots)


def to_pages(x: np.ndarray, kv_lengths: np.ndarray, page_size: int,
             table: np.ndarray, num_pages: int) -> np.ndarray:
    """Dense (B, Hkv, Tk, D), right-aligned -> the pool (num_pages, page_size, Hkv, D)."""
    batch, heads, t_k, dim = x.shape
    rows, cols, slots = slot_index(kv_lengths, t_k, page_size, table)
    pool = np.zeros((num_pages * page_size, heads, dim), dtype=x.dtype)
    pool[slots] = x[rows, :, cols]
    return pool.reshape(num_pages, page_size, heads, dim)


def from_pages(pool: np.ndarray, kv_lengths: np.ndarray, table: np.ndarray,
               t_k: int) -> np.ndarray:
    """The pool back to dense (B, Hkv, Tk, D), right-aligned, zeros in the padding."""
    num_pages, page_size, heads, dim = pool.shape
    rows, cols, slots = slot_index(kv_lengths, t_k, page_size, table)
    out = np.zeros((len(kv_lengths), heads, t_k, dim), dtype=pool.dtype)
    out[rows, :, cols] = pool.reshape(-1, heads, dim)[slots]
    return out


def paged_kv(k: np.ndarray, v: np.ndarray, page_size: int,
             kv_lengths: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Dense right-aligned k, v (B, Hkv, Tk, D) -> the keywords a paged method receives: the
    pools ``k`` and ``v``, ``page_table`` and ``kv_lengths`` (int32)."""
    batch, _, t_k, _ = k.shape
    lengths = np.full(batch, t_k, dtype=np.int64) if kv_lengths is None \
        else np.asarray(kv_lengths, dtype=np.int64)
    table, num_pages = page_table(lengths, page_size)
    return {"k": to_pages(k, lengths, page_size, table, num_pages),
            "v": to_pages(v, lengths, page_size, table, num_pages),
            "page_table": table, "kv_lengths": lengths.astype(np.int32)}
