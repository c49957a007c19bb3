"""The correctness gate: an implementation is checked against its reference before it is timed.

Pure with respect to results: it returns a GateResult, the caller decides what to record.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from harness.contract import frameworks
from harness.contract.axes import method_keywords
from harness.contract.head_dims import value_dim
from harness.contract.masking import alibi_slopes, packed_document_ids
from harness.contract.paging import paged_kv
from harness.contract.point_masks import point_mask, sink_logits
from harness.contract.probe import GateResult
from harness.errors import UnsupportedError
from harness.contract.quant import KV_DTYPES, dequantise, quantise
from harness.contract.records import Point
from harness.contract.reference import (
    GATE_TOLERANCE,
    exact_attention,
    reference_output,
    relative_error,
)
from harness.contract.registry import Implementation

GATE_SHAPE = (1, 2, 64, 32)  # small enough for the float64 reference on any machine
# a ragged gate case's sequences: GATE_SHAPE's one sequence would be at the full length, dense
RAGGED_GATE_BATCH = 3
# the gate's softcap: N(0, 1) inputs give scaled scores of about N(0, 1), which a cap of 50
# leaves all but linear; a cap of 2 bends them enough that ignoring it fails every tolerance
GATE_SOFTCAP = 2.0


def gate_tolerance(impl: Any, dtype: str) -> float:
    """The correctness gate's tolerance for this method and dtype: the method's own where it
    declares one, else the dtype's."""
    return float((impl.gate_tolerance or {}).get(dtype, GATE_TOLERANCE[dtype]))


def workload_inputs(shape: tuple[int, int, int, int], *, seed: int = 0, masked: bool = False,
                    features: Iterable[str] = (), causal: bool = False,
                    **flags: bool) -> tuple[tuple[np.ndarray, ...], dict[str, object]]:
    """q, k, v, padding mask and the mask keywords of a small gate case with these features
    (names, or flags ``gqa=True``): GQA with 2 query heads per key/value head, Tq = 7 queries
    against T keys, a window of T/4 keys back (and T/8 ahead when not causal), BLOOM's slopes,
    3 packed documents, a softcap of GATE_SOFTCAP, seeded sink logits, v's head dimension D/2
    (head_dim_v). Other features (a plug-in axis') leave the inputs as they are."""
    asked = set(features) | {name for name, wanted in flags.items() if wanted}
    gqa, q_len, window, alibi, documents = (name in asked for name in (
        "gqa", "q_len", "window", "alibi", "documents"))
    batch, heads, length, dim = shape
    if "ragged" in asked:
        batch = max(batch, RAGGED_GATE_BATCH)   # lengths that differ need several sequences
    q_heads = 2 * heads if gqa else heads
    t_q = min(7, length) if q_len else length
    q_shape = (batch, q_heads, t_q, dim)
    k_shape = (batch, heads, length, dim)
    v_shape = (*k_shape[:-1], max(1, dim // 2)) if "head_dim_v" in asked else k_shape
    rng = np.random.default_rng(seed)
    q, k, v = rng.standard_normal(q_shape), rng.standard_normal(k_shape), \
        rng.standard_normal(v_shape)
    mask = None
    if masked:
        mask = np.ones((batch, length), dtype=bool)
        mask[:, length - max(1, length // 4):] = False
    extra: dict[str, object] = {}
    if window:
        left = max(1, length // 4)
        extra["window"] = (left, 0 if causal else max(1, length // 8))
    if alibi:
        extra["alibi_slopes"] = alibi_slopes(q_heads)
    if documents and not q_len:
        extra["document_ids"] = packed_document_ids(batch, length, min(3, length), seed=seed)
    extra.update(gate_score_mods(asked, q_heads, seed=seed))
    extra.update(ragged_paged_extra(asked, batch=batch, t_q=t_q, t_k=length, seed=seed))
    return (q, k, v, mask), extra


def gate_score_mods(asked: set[str], q_heads: int, *, seed: int) -> dict[str, object]:
    """softcap (GATE_SOFTCAP) and sinks (Hq,) for the gate cases that ask for them."""
    mods: dict[str, object] = {}
    if "softcap" in asked:
        mods["softcap"] = GATE_SOFTCAP
    if "sinks" in asked:
        mods["sinks"] = sink_logits(q_heads, seed)
    return mods


GATE_PAGE_SIZE = 8   # the gate's pages: several per sequence at its small lengths


def ragged_paged_extra(asked: set[str], *, batch: int, t_q: int, t_k: int,
                       seed: int) -> dict[str, object]:
    """A gate case's ragged lengths (key lengths seeded in [T/4, T], queries one per
    sequence when Tq < Tk, else as many as its keys) and its page size."""
    extra: dict[str, object] = {}
    if "ragged" in asked:
        kv = np.random.default_rng(seed + 1).integers(max(1, t_k // 4), t_k + 1, size=batch)
        kv[0] = t_k   # the longest fills the padded length
        q = np.minimum(kv, t_q) if t_q < t_k else kv
        extra["q_lengths"], extra["kv_lengths"] = q.astype(np.int32), kv.astype(np.int32)
    if "paged" in asked:
        extra["page_size"] = GATE_PAGE_SIZE
    return extra


def run_impl_numpy(impl: Implementation, q: np.ndarray, k: np.ndarray, v: np.ndarray, *,
                   device: str, dtype: str, causal: bool, mask: np.ndarray | None,
                   window: tuple[int, int] | None = None,
                   alibi_slopes: np.ndarray | None = None,
                   document_ids: np.ndarray | None = None,
                   keywords: dict[str, Any] | None = None, softcap: float | None = None,
                   sinks: np.ndarray | None = None, page_size: int = 0, kv_dtype: str = "",
                   **lengths: np.ndarray) -> np.ndarray:
    """``lengths``: q_lengths, kv_lengths of a ragged batch; ``page_size``: k, v reach the
    method as a paged cache (harness.contract.paging) built from these dense ones;
    ``kv_dtype``: k and v are FP8 codes (values on that format's grid) and ``keywords`` holds
    their k_scale and v_scale."""
    fw = frameworks.get(impl.framework)
    layout: dict[str, Any] = {name: value for name, value in lengths.items()
                              if value is not None}
    if page_size:
        layout.update(paged_kv(k, v, page_size, layout.get("kv_lengths")))
        k, v = layout.pop("k"), layout.pop("v")
    with fw.precision(dtype):
        args = [fw.from_numpy(x, device, kv_dtype if kv_dtype and i else dtype)
                for i, x in enumerate((q, k, v))]
        mask_n = None if mask is None else fw.from_numpy(mask, device)
        slopes = None if alibi_slopes is None else fw.from_numpy(alibi_slopes, device, dtype)
        docs = None if document_ids is None else fw.from_numpy(document_ids, device)
        sinks_n = None if sinks is None else fw.from_numpy(sinks, device, dtype)
        ints = {name: fw.from_numpy(value, device) for name, value in layout.items()}
        out = fw.call(impl, *args, causal=causal, key_padding_mask=mask_n, window=window,
                      alibi_slopes=slopes, document_ids=docs, softcap=softcap or None,
                      sinks=sinks_n, **ints, **(keywords or {}))
        return fw.to_numpy(out).astype(np.float64)


def point_inputs(point: Point, *, padded: bool = False,
                 seed: int = 0) -> tuple[tuple[np.ndarray, ...], dict[str, object]]:
    """q (B, Hq, Tq, D), k (B, Hkv, Tk, D), v (B, Hkv, Tk, D_v), the padding mask (last
    quarter of the keys masked when ``padded``) and the mask keywords of a point, as a sweep
    builds them."""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((point.batch, point.heads, point.n_queries, point.head_dim))
    k, v = (rng.standard_normal((point.batch, point.n_kv_heads, point.seq_len, dim))
            for dim in (point.head_dim, value_dim(point)))
    mask = None
    if padded:
        mask = np.ones((point.batch, point.seq_len), dtype=bool)
        mask[:, point.seq_len - max(1, point.seq_len // 4):] = False
    extra = point_mask(point, seed=seed)
    if point.value("page_size"):
        extra["page_size"] = point.value("page_size")
    return (q, k, v, mask), extra


def check_point(impl: Implementation, point: Point, *, padded: bool = False,
                seed: int = 0) -> GateResult:
    """Compare one implementation with its reference on a point's workload (its shape,
    device, dtype, causal, kv_heads, q_len, window, ALiBi, documents, softcap, sinks); never
    raises."""
    (q, k, v, mask), extra = point_inputs(point, padded=padded, seed=seed)
    return compare(impl, q, k, v, mask, extra, device=point.device, dtype=point.dtype,
                   causal=point.causal,
                   keywords=method_keywords(impl.capabilities.features, point.axis_values()),
                   kv_dtype=point.kv_dtype)


def check(impl: Implementation, *, device: str, dtype: str, causal: bool = False,
          masked: bool = False, shape: tuple[int, int, int, int] = GATE_SHAPE,
          seed: int = 0, features: Iterable[str] = (), keywords: dict[str, Any] | None = None,
          **flags: bool) -> GateResult:
    """Compare one implementation with its reference at a small shape; never raises.
    ``features`` (gqa, q_len, window, alibi, documents, ...): see ``workload_inputs``;
    ``keywords``: the values of the keyword axes (name -> value) the case is run with."""
    (q, k, v, mask), extra = workload_inputs(shape, seed=seed, masked=masked, causal=causal,
                                             features=features, **flags)
    return compare(impl, q, k, v, mask, extra, device=device, dtype=dtype, causal=causal,
                   keywords=method_keywords(impl.capabilities.features, keywords or {}),
                   kv_dtype=gate_kv_dtype(set(features) | {n for n, on in flags.items() if on},
                                          keywords or {}))


def gate_kv_dtype(features: set[str], keywords: dict[str, Any]) -> str:
    """The FP8 format a gate case quantises k and v to: the kv_dtype asked, else
    float8_e4m3fn where the case has the fp8_kv feature, else '' (none)."""
    if keywords.get("kv_dtype"):
        return str(keywords["kv_dtype"])
    return KV_DTYPES[0] if "fp8_kv" in features else ""


def compare(impl: Implementation, q: np.ndarray, k: np.ndarray, v: np.ndarray,
            mask: np.ndarray | None, extra: dict[str, object], *, device: str, dtype: str,
            causal: bool, keywords: dict[str, Any] | None = None,
            kv_dtype: str = "") -> GateResult:
    """Run the implementation on these inputs (plus ``keywords``, which the reference does not
    take) and compare it with its family's reference. ``extra["page_size"]``: the method gets
    k, v as a paged cache; the reference the dense attention of the same values.

    ``kv_dtype``: k and v are quantised to that FP8 format first (per-tensor scales,
    harness.contract.quant); the gate's reference is then that of the dequantised inputs (what
    the method computes with), at the point dtype's tolerance, and the deviation is against
    exact attention of the unquantised inputs (what FP8 costs)."""
    extra = dict(extra)
    page_size = int(extra.pop("page_size", 0) or 0)
    exact = exact_attention(q, k, v, causal=causal, key_padding_mask=mask,
                            **extra)  # type: ignore[arg-type]
    call_k, call_v, keywords = k, v, dict(keywords or {})
    if kv_dtype:
        (call_k, keywords["k_scale"]), (call_v, keywords["v_scale"]) = (
            quantise(x, kv_dtype) for x in (k, v))
        k, v = dequantise(call_k, keywords["k_scale"]), dequantise(call_v, keywords["v_scale"])
    try:
        out = run_impl_numpy(impl, q, call_k, call_v, device=device, dtype=dtype,
                             causal=causal, mask=mask, keywords=keywords, kv_dtype=kv_dtype,
                             page_size=page_size,
                             **extra)  # type: ignore[arg-type]
    except UnsupportedError as exc:   # a limit the inputs' shapes show: not a wrong answer
        return GateResult(False, None, None, None, str(exc), unsupported=True)
    except Exception as exc:
        return GateResult(False, None, None, None, f"{type(exc).__name__}: {exc}")
    if not np.isfinite(out).all():
        return GateResult(False, None, None, None, "non-finite output")
    deviation = relative_error(out, exact)
    ref = reference_output(impl.family, q, k, v, causal=causal, key_padding_mask=mask,
                           **extra)
    if ref is None:
        return GateResult(True, None, None, deviation,
                          "approximate method: no exact reference, deviation recorded")
    scale = max(1.0, float(np.abs(ref).max()))
    max_error = float(np.abs(out - ref).max() / scale)
    tolerance = gate_tolerance(impl, dtype)
    passed = max_error <= tolerance
    inputs = f" of the dequantised {kv_dtype} k, v" if kv_dtype else ""
    message = "" if passed else (f"output differs from the {impl.family} reference{inputs}: "
                                 f"max error {max_error:.3g} > tolerance {tolerance:.3g} "
                                 f"({dtype})")
    return GateResult(passed, max_error, tolerance, deviation, message)
