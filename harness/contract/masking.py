"""Which (query, key) pairs attention may use, and the biases on them: pure numpy functions.

attnbench's conventions (those of FlashAttention >= 2.1):
- q has Tq positions, k and v have Tk; query i sits at key position i' = i + (Tk - Tq)
  (bottom-right alignment: the last query is the newest token, as when decoding with a KV cache).
- causal: query i sees key j iff j <= i'.
- ``window = (left, right)``: query i sees key j iff i' - left <= j <= i' + right; -1 means
  unbounded on that side. With causal the right side is effectively 0.
- ALiBi: the score of (i, j) gets ``-slope_h * |i' - j|`` added before the softmax.
- ``document_ids`` (B, T), Tq == Tk: query i sees key j only when both are in the same document.
- ``key_padding_mask`` (B, Tk), True = keep.
- ``q_lengths``, ``kv_lengths`` (B,): a ragged batch padded to Tq x Tk with each sequence
  right-aligned (harness.contract.ragged): row b's real queries are its last q_lengths[b] and
  its real keys its last kv_lengths[b]; the others see nothing and are seen by none. Aligned
  right, the bottom-right rules above hold per sequence unchanged.
A query that sees no key outputs zeros.
"""

from __future__ import annotations

import math

import numpy as np

Window = tuple[int, int]


def check_window(window: object) -> Window | None:
    """(left, right) ints >= -1, or None; ValueError otherwise."""
    if window is None:
        return None
    try:
        left, right = (int(x) for x in window)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"window must be (left, right), got {window!r}") from None
    if left < -1 or right < -1:
        raise ValueError(f"window sides must be >= 0 or -1 (unbounded), got {window!r}")
    return left, right


def allowed_mask(t_q: int, t_k: int, *, causal: bool = False, window: Window | None = None,
                 document_ids: np.ndarray | None = None,
                 key_padding_mask: np.ndarray | None = None,
                 q_lengths: np.ndarray | None = None,
                 kv_lengths: np.ndarray | None = None) -> np.ndarray | None:
    """Boolean (B or 1, 1, Tq, Tk) mask of the allowed pairs, or None when all are allowed."""
    rows = np.arange(t_q)[:, None] + (t_k - t_q)       # i'
    cols = np.arange(t_k)[None, :]
    allowed = None

    def both(a: np.ndarray | None, b: np.ndarray) -> np.ndarray:
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
        docs = np.asarray(document_ids)
        if docs.shape[-1] != t_q or t_q != t_k:
            raise ValueError("document_ids need Tq == Tk == document_ids.shape[-1]")
        allowed = both(allowed, (docs[:, :, None] == docs[:, None, :])[:, None])
    if key_padding_mask is not None:
        allowed = both(allowed, np.asarray(key_padding_mask, dtype=bool)[:, None, None, :])
    if q_lengths is not None or kv_lengths is not None:
        allowed = both(allowed, lengths_mask(t_q, t_k, q_lengths, kv_lengths))
    return allowed


def lengths_mask(t_q: int, t_k: int, q_lengths: np.ndarray | None,
                 kv_lengths: np.ndarray | None) -> np.ndarray:
    """(B, 1, Tq, Tk): the pairs of a right-aligned ragged batch's real queries and keys."""
    lengths = q_lengths if q_lengths is not None else kv_lengths
    batch = len(np.asarray(lengths))
    q_n = np.full(batch, t_q) if q_lengths is None else np.asarray(q_lengths)
    k_n = np.full(batch, t_k) if kv_lengths is None else np.asarray(kv_lengths)
    real_q = np.arange(t_q)[None, :] >= (t_q - q_n)[:, None]
    real_k = np.arange(t_k)[None, :] >= (t_k - k_n)[:, None]
    return (real_q[:, :, None] & real_k[:, None, :])[:, None]


def alibi_bias(t_q: int, t_k: int, slopes: np.ndarray) -> np.ndarray:
    """(1, H, Tq, Tk) float64: -slope_h * |i' - j|."""
    rows = np.arange(t_q)[:, None] + (t_k - t_q)
    distance = np.abs(rows - np.arange(t_k)[None, :]).astype(np.float64)
    return -np.asarray(slopes, dtype=np.float64)[None, :, None, None] * distance[None, None]


def alibi_slopes(n_heads: int) -> np.ndarray:
    """BLOOM's / the ALiBi paper's slopes: 2^(-8k/n), k = 1..n for n a power of two; otherwise
    those of the largest power of two below n, then every other slope of twice that many."""
    def power_of_two(n: int) -> list[float]:
        return [2.0 ** (-8.0 * k / n) for k in range(1, n + 1)]

    if n_heads <= 0:
        raise ValueError(f"n_heads must be positive, got {n_heads}")
    closest = 2 ** int(math.floor(math.log2(n_heads)))
    slopes = power_of_two(closest)
    if closest < n_heads:
        slopes += power_of_two(2 * closest)[0::2][: n_heads - closest]
    return np.asarray(slopes, dtype=np.float64)


def packed_document_ids(batch: int, length: int, documents: int, *, seed: int = 0) -> np.ndarray:
    """(B, T) int32: each row is T tokens split into ``documents`` packed documents of seeded
    random lengths (each at least 1 token; the same split for the same arguments)."""
    if documents <= 0 or documents > length:
        raise ValueError(f"documents must be in 1..T={length}, got {documents}")
    rng = np.random.default_rng(seed)
    out = np.empty((batch, length), dtype=np.int32)
    for b in range(batch):
        cuts = np.sort(rng.choice(np.arange(1, length), size=documents - 1, replace=False)) \
            if documents > 1 else np.array([], dtype=int)
        lengths = np.diff(np.concatenate([[0], cuts, [length]]))
        out[b] = np.repeat(np.arange(documents, dtype=np.int32), lengths)
    return out


def allowed_pairs(t_q: int, t_k: int, *, causal: bool = False, window: Window | None = None,
                  document_ids: np.ndarray | None = None,
                  key_padding_mask: np.ndarray | None = None, batch: int = 1) -> int:
    """Exact number of allowed (query, key) pairs summed over the batch, in O(B * Tq) memory.

    Each query's allowed keys are one interval [lo, hi] (causal, window, its document) counted
    through the prefix sums of the kept keys; ``batch`` multiplies when neither per-row input
    is given.
    """
    rows = np.arange(t_q, dtype=np.int64) + (t_k - t_q)
    lo = np.zeros(t_q, dtype=np.int64)
    hi = np.full(t_q, t_k - 1, dtype=np.int64)
    if causal:
        hi = np.minimum(hi, rows)
    if window is not None:
        left, right = window
        if left >= 0:
            lo = np.maximum(lo, rows - left)
        if right >= 0:
            hi = np.minimum(hi, rows + right)
    docs = None if document_ids is None else np.asarray(document_ids)
    keep = None if key_padding_mask is None else np.asarray(key_padding_mask, dtype=bool)
    rows_b = docs.shape[0] if docs is not None else keep.shape[0] if keep is not None else 1
    total = 0
    for b in range(rows_b):
        lo_b, hi_b = lo, hi
        if docs is not None:
            if t_q != t_k:
                raise ValueError("document_ids need Tq == Tk")
            ids = docs[b]
            if np.any(np.diff(ids) < 0):   # not contiguous documents: count the mask itself
                mask = allowed_mask(t_q, t_k, causal=causal, window=window,
                                    document_ids=docs[b:b + 1],
                                    key_padding_mask=None if keep is None else keep[b:b + 1])
                total += int(mask.sum())
                continue
            starts = np.searchsorted(ids, ids, side="left")     # ids are sorted (packed)
            ends = np.searchsorted(ids, ids, side="right") - 1
            lo_b, hi_b = np.maximum(lo_b, starts), np.minimum(hi_b, ends)
        if keep is not None:
            prefix = np.concatenate([[0], np.cumsum(keep[b], dtype=np.int64)])
            counts = prefix[np.clip(hi_b + 1, 0, t_k)] - prefix[np.clip(lo_b, 0, t_k)]
        else:
            counts = hi_b - lo_b + 1
        total += int(np.where(hi_b >= lo_b, counts, 0).sum())
    return total if (docs is not None or keep is not None) else total * batch
