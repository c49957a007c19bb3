"""The masks of a sweep point: its window, ALiBi slopes, packed documents and ragged lengths
as arrays."""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.contract.masking import alibi_slopes, packed_document_ids
from harness.contract.ragged import point_lengths
from harness.contract.records import Point

DOCUMENT_SEED = 0   # the packed-documents split of a point (the same in every worker)


def document_ids(point: Point) -> np.ndarray | None:
    """The (B, T) packed-document ids of a point with ``documents``, else None."""
    if not point.documents:
        return None
    return packed_document_ids(point.batch, point.seq_len, point.documents, seed=DOCUMENT_SEED)


def point_mask(point: Point) -> dict[str, Any]:
    """window (left, right), alibi_slopes (Hq,) and document_ids (B, T) where the point has
    them (numpy values; absent keys = none)."""
    mask: dict[str, Any] = {}
    if point.window_pair is not None:
        mask["window"] = point.window_pair
    if point.alibi:
        mask["alibi_slopes"] = alibi_slopes(point.heads)
    docs = document_ids(point)
    if docs is not None:
        mask["document_ids"] = docs
    mask.update(point_lengths_mask(point))
    return mask


def point_lengths_mask(point: Point) -> dict[str, Any]:
    """q_lengths and kv_lengths (B,) int32 of a ragged point (harness.contract.ragged)."""
    lengths = point_lengths(point)
    if lengths is None:
        return {}
    return {"q_lengths": lengths.q.astype(np.int32), "kv_lengths": lengths.kv.astype(np.int32)}
