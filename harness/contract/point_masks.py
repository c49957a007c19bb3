"""The masks of a sweep point: its window, ALiBi slopes, packed documents and ragged lengths
as arrays, and its score modifications (softcap, sink logits)."""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.contract.masking import alibi_slopes, packed_document_ids
from harness.contract.ragged import point_lengths
from harness.contract.records import Point

DOCUMENT_SEED = 0   # the packed-documents split of a point (the same in every worker)
SINK_STREAM = 27    # the sink logits' random stream beside the inputs' seed (q, k, v unchanged)
# the axes without a Point field whose inputs point_mask builds (the gate checks them)
SCORE_MOD_AXES = ("softcap", "sinks")


def document_ids(point: Point) -> np.ndarray | None:
    """The (B, T) packed-document ids of a point with ``documents``, else None."""
    if not point.documents:
        return None
    return packed_document_ids(point.batch, point.seq_len, point.documents, seed=DOCUMENT_SEED)


def sink_logits(heads: int, seed: int = 0) -> np.ndarray:
    """(Hq,) sink logits ~ N(0, 1), seeded like the inputs (a stream of their seed apart from
    q, k and v's, which stay as they are without sinks)."""
    return np.random.default_rng([seed, SINK_STREAM]).standard_normal(heads)


def point_mask(point: Point, *, seed: int = 0) -> dict[str, Any]:
    """window (left, right), alibi_slopes (Hq,), document_ids (B, T), softcap (the cap) and
    sinks (Hq,; drawn from the inputs' ``seed``) where the point has them (numpy values;
    absent keys = none)."""
    mask: dict[str, Any] = {}
    if point.window_pair is not None:
        mask["window"] = point.window_pair
    if point.alibi:
        mask["alibi_slopes"] = alibi_slopes(point.heads)
    docs = document_ids(point)
    if docs is not None:
        mask["document_ids"] = docs
    mask.update(point_lengths_mask(point))
    mask.update(score_mods(point, seed=seed))
    return mask


def score_mods(point: Point, *, seed: int = 0) -> dict[str, Any]:
    """softcap (a float) and sinks (Hq,) where the point has them."""
    mods: dict[str, Any] = {}
    if point.value("softcap"):
        mods["softcap"] = float(point.value("softcap"))
    if point.value("sinks"):
        mods["sinks"] = sink_logits(point.heads, seed)
    return mods


def point_lengths_mask(point: Point) -> dict[str, Any]:
    """q_lengths and kv_lengths (B,) int32 of a ragged point (harness.contract.ragged)."""
    lengths = point_lengths(point)
    if lengths is None:
        return {}
    return {"q_lengths": lengths.q.astype(np.int32), "kv_lengths": lengths.kv.astype(np.int32)}
