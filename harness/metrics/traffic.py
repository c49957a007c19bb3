"""Bytes moved: a lower-bound traffic model per implementation, and % of the machine's peaks.

Each implementation declares a model (``register(..., traffic=...)``); one without a
declaration gets ``compulsory``. A model counts

- the compulsory traffic of the pass: read q, k, v and write o (forward); read q, k, v and dO
  and write dq, dk, dv (backward); forward+backward is both. q, o, dO, dq have Hq heads and Tq
  positions; k, v, dk, dv have Hkv heads and Tk positions (the point's kv_heads, q_len and
  seq_len): a kernel with native grouped-query attention reads each key/value head once;
  q, dq, k, dk have the head dim D, v, dv, o, dO the head dim D_v (head_dim_v);
- plus what the method must store between its steps, each written once and read once: the
  Tq x Tk scores and weights of a method that materialises them, the random features of
  Performer, the per-token scores of HRR (and what a backward reads back of them).

Workload axes (windows, documents, ALiBi, Tq != Tk), decided simply:
- A materialising method forms the full Tq x Tk scores and reads every key, however few pairs
  the mask allows. A tiled (flash-style) kernel skips fully masked blocks: it reads only the
  keys that at least one query may see (fewer than Tk only for a window with Tq < Tk, e.g. a
  decode step reads the last window + 1 keys), and no scores.
- A method that expands k, v to the Hq query heads (``kv_copy``: softmax_torch's
  repeat_interleave, SDPA's math backend) runs on Hq-head copies: its traffic is that of
  Hkv = Hq, plus the copy (read k, v, write Hq heads) in the forward and the reduction of
  dk, dv back to Hkv heads in the backward.
- An ALiBi bias built as a tensor (``alibi_bias``: SDPA's float attn_mask, softmax_torch's
  explicit bias; one Hq x Tq x Tk bias, per batch row when it also holds a document mask) is
  written once and read once by the forward (and read again by a tiled backward). Boolean
  masks and head-broadcast additive masks are not counted: at most 1 / (2 Hq) of the scores'
  traffic, and positions a kernel can compute (so square self-attention keeps the numbers it
  had before the workload axes). Packed documents otherwise cost no extra bytes (varlen,
  block-diagonal and block masks read each token once). Key padding is not a sweep axis.
- A ragged batch (--lengths) reads and writes its real tokens in the compulsory traffic (the
  lower bound, whatever a method pads); scores and copies a materialising method forms on the
  padded batch stay at their padded size. A paged cache reads the same keys and values (the
  page table's bytes are not counted).

FP8 keys and values (kv_dtype): k and v are read at 1 byte per element, which is FP8's point; a
method that dequantises them into a copy first (``dequant_copy``) also writes and reads that
copy in the point's dtype. The dequantising multiply adds no counted FLOPs.

It is a lower bound: re-reads that a cache may or may not absorb are not counted, so the
achieved bytes/s (bytes_moved / median time) cannot exceed the copy bandwidth unless a model or
a peak is wrong. Elements are counted in the input dtype, except where a method computes in
float32 whatever the input (Performer and HRR on float16/bfloat16).

Pure functions of a Point; the shapes are read from its batch, heads, seq_len, head_dim and
workload axes (n_kv_heads, n_queries, window_pair, alibi, documents, head_dim_v).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np

from harness.contract.ragged import point_lengths
from harness.contract.head_dims import value_dim

DTYPE_BYTES = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}
STATS_BYTES = 4  # per-row statistics (log-sum-exp, HRR's per-token scores) are float32
ALIBI_BIAS = ("heads", "rows")   # a (1, Hq, Tq, Tk) bias; "rows": (B, ...) with documents


class PointLike(Protocol):
    batch: int
    heads: int
    seq_len: int
    head_dim: int
    dtype: str
    causal: bool
    pass_: str


@dataclass(frozen=True)
class Traffic:
    bytes_moved: float
    model: str        # what was counted, in words


TrafficModel = Callable[[Any], Traffic]


def element_bytes(dtype: str) -> int:
    return DTYPE_BYTES[dtype]


# -- the workload, read from a point (defaults: square self-attention) -------------------------
def kv_heads(point: PointLike) -> int:
    return int(getattr(point, "n_kv_heads", point.heads))


def q_len(point: PointLike) -> int:
    return int(getattr(point, "n_queries", point.seq_len))


def keys_seen(point: PointLike) -> int:
    """Keys (per batch row and head) that at least one query may see: all Tk unless a window
    leaves the oldest keys to no query (Tq < Tk): min(Tk, Tq + left). Packed documents leave
    none unseen (each key sees itself)."""
    window = getattr(point, "window_pair", None)
    if window is None or window[0] < 0:
        return point.seq_len
    return min(point.seq_len, q_len(point) + window[0])


def _q_bytes(point: PointLike, dim: int | None = None) -> float:
    """Bytes of one (B, Hq, Tq, dim) tensor (q, dq: D; o, dO: D_v) in the input dtype
    (``dim`` None: D)."""
    return float(point.batch * point.heads * q_len(point) * (dim or point.head_dim)
                 * element_bytes(point.dtype))


def kv_element_bytes(point: PointLike) -> int:
    """Bytes of one stored key/value element: 1 for FP8 (the kv_dtype axis), else the dtype's."""
    return 1 if getattr(point, "kv_dtype", "") else element_bytes(point.dtype)


def _kv_bytes(point: PointLike, heads: int, keys: int, dim: int | None = None) -> float:
    """Bytes of one (B, heads, keys, dim) tensor (k, dk: D; v, dv: D_v) as stored (FP8: 1 byte
    each; ``dim`` None: D)."""
    return float(point.batch * heads * keys * (dim or point.head_dim)
                 * kv_element_bytes(point))


def _scores_bytes(point: PointLike, *, rows: int | None = None) -> float:
    """Bytes of one (B, Hq, Tq, Tk) tensor in the input dtype (``rows``: its batch dim)."""
    return float((point.batch if rows is None else rows) * point.heads * q_len(point)
                 * point.seq_len * element_bytes(point.dtype))


def _by_pass(point: PointLike, forward: float, backward: float) -> float:
    return {"forward": forward, "backward": backward,
            "forward_backward": forward + backward}[point.pass_]


def _compulsory_bytes(point: PointLike, *, heads: int, keys: int) -> float:
    """read q, k, v, write o (forward); read q, k, v, dO, write dq, dk, dv (backward), with
    k, v, dk, dv of ``heads`` heads and ``keys`` positions, v, dv, o, dO of D_v; a ragged
    batch at its real tokens (a lower bound for padded methods too)."""
    dim_v = value_dim(point)
    q, o = _q_bytes(point), _q_bytes(point, dim_v)
    k, v = _kv_bytes(point, heads, keys), _kv_bytes(point, heads, keys, dim_v)
    ragged = _ragged_tokens(point, keys)
    if ragged is not None:
        size = element_bytes(point.dtype)
        q, o = (float(point.heads * ragged[0] * d * size) for d in (point.head_dim, dim_v))
        k, v = (float(heads * ragged[1] * d * kv_element_bytes(point))
                for d in (point.head_dim, dim_v))
    return _by_pass(point, q + o + k + v, 2 * q + o + 2 * k + 2 * v)


def _ragged_tokens(point: PointLike, keys: int) -> tuple[int, int] | None:
    """(query tokens, key tokens read) of a ragged batch at its real lengths (each sequence
    reads min(Lk, Lq + window left) keys when a window leaves older ones unseen), else None."""
    lengths = point_lengths(point) if hasattr(point, "value") else None
    if lengths is None:
        return None
    window = getattr(point, "window_pair", None)
    seen = lengths.kv if window is None or window[0] < 0 or keys == point.seq_len else \
        np.minimum(lengths.kv, lengths.q + window[0])
    return int(lengths.q.sum()), int(seen.sum())


def _kv_copy_bytes(point: PointLike) -> float:
    """Expanding k, v to Hq heads: read them, write the copies (forward); reduce dk, dv of Hq
    heads back to Hkv (backward). Nothing when Hkv = Hq."""
    if kv_heads(point) == point.heads:
        return 0.0
    both = sum(_kv_bytes(point, heads, point.seq_len, dim)
               for heads in (kv_heads(point), point.heads)
               for dim in (point.head_dim, value_dim(point)))
    return _by_pass(point, both, both)


def _alibi_bias_bytes(point: PointLike, alibi_bias: str | None, *, backward_reads: int) -> float:
    """An ALiBi bias tensor written once and read once (forward), read ``backward_reads``
    times by the backward."""
    if alibi_bias is None or not getattr(point, "alibi", False):
        return 0.0
    rows = point.batch if alibi_bias == "rows" and getattr(point, "documents", 0) else 1
    bias = _scores_bytes(point, rows=rows)
    return _by_pass(point, 2 * bias, backward_reads * bias)


COMPULSORY_TEXT = ("compulsory: read q, k, v, write o (forward); read q, k, v, dO, write dq, "
                   "dk, dv (backward)")
KV_COPY_TEXT = ("; k, v expanded to the query heads (the copy written and read, dk, dv reduced "
                "back) when kv_heads < heads")
ALIBI_TEXT = "; the ALiBi bias tensor written and read once"


def dequant_copy(model: TrafficModel) -> TrafficModel:
    """``model`` for a method that dequantises FP8 k, v into a copy in the point's dtype inside
    its call (the naive path): on kv_dtype points, + that copy of k and of v written once and
    read once (the FP8 tensors themselves are read at 1 byte per element by ``model``)."""
    def with_copy(point: PointLike) -> Traffic:
        base = model(point)
        if not getattr(point, "kv_dtype", ""):
            return base
        copy = float(point.batch * kv_heads(point) * point.seq_len * point.head_dim
                     * element_bytes(point.dtype))
        return Traffic(base.bytes_moved + 2 * 2 * copy,
                       base.model + f"; k, v read as FP8 (1 byte each) and dequantised into a "
                                    f"{point.dtype} copy, written and read once each")

    return with_copy


def compulsory(point: PointLike) -> Traffic:
    """Only what any attention must read and write (k, v once per key/value head, only the
    keys some query may see)."""
    total = _compulsory_bytes(point, heads=kv_heads(point), keys=keys_seen(point))
    return Traffic(total, COMPULSORY_TEXT)


def undeclared(point: PointLike) -> Traffic:
    base = compulsory(point)
    return Traffic(base.bytes_moved, base.model + " (the implementation declares no model)")


def materialised(*, kv_copy: bool = False, alibi_bias: str | None = None) -> TrafficModel:
    """Exact attention that holds the Tq x Tk scores S and weights P in memory (all of them,
    however few pairs the mask allows) and reads every key. ``kv_copy``: it expands k, v to
    the query heads; ``alibi_bias``: it builds ALiBi as a bias tensor (ALIBI_BIAS)."""
    if alibi_bias is not None and alibi_bias not in ALIBI_BIAS:
        raise ValueError(f"alibi_bias must be one of {ALIBI_BIAS} or None, got {alibi_bias!r}")

    def model(point: PointLike) -> Traffic:
        heads = point.heads if kv_copy else kv_heads(point)
        square = _scores_bytes(point)
        # forward: S and P each written once, read once; backward: P read, dP and dS each
        # written once and read once
        total = (_compulsory_bytes(point, heads=heads, keys=point.seq_len)
                 + _by_pass(point, 4 * square, 5 * square)
                 + (_kv_copy_bytes(point) if kv_copy else 0.0)
                 + _alibi_bias_bytes(point, alibi_bias, backward_reads=0))
        text = (COMPULSORY_TEXT + "; + Tq x Tk scores and weights written and read once each "
                "(forward), weights read and their two gradients written and read once each "
                "(backward)" + (KV_COPY_TEXT if kv_copy else "")
                + (ALIBI_TEXT if alibi_bias else ""))
        return Traffic(total, text)

    return model


def materialised_scores(point: PointLike) -> Traffic:
    """Materialised scores, k and v read once per key/value head, masks and ALiBi fused (no
    mask or bias tensor): softmax_jax under jit."""
    return _MATERIALISED(point)


_MATERIALISED = materialised()


def tiled(*, alibi_bias: str | None = None) -> TrafficModel:
    """Flash-style exact attention: never holds Tq x Tk; reads the keys some query may see
    (fully masked blocks skipped), once per key/value head; the backward reads o and the
    per-row log-sum-exp saved by the forward. ``alibi_bias``: ALiBi comes as a bias tensor."""
    if alibi_bias is not None and alibi_bias not in ALIBI_BIAS:
        raise ValueError(f"alibi_bias must be one of {ALIBI_BIAS} or None, got {alibi_bias!r}")

    def model(point: PointLike) -> Traffic:
        rows = float(point.batch * point.heads * q_len(point) * STATS_BYTES)
        lse_written = rows if point.pass_ == "forward_backward" else 0.0
        total = (_compulsory_bytes(point, heads=kv_heads(point), keys=keys_seen(point))
                 + _by_pass(point, 0.0, _q_bytes(point, value_dim(point)) + rows)
                 + lse_written
                 + _alibi_bias_bytes(point, alibi_bias, backward_reads=1))
        text = (COMPULSORY_TEXT + "; + o and the per-row log-sum-exp read by the backward (and "
                "the log-sum-exp written by the forward before it)"
                + (ALIBI_TEXT + " (read again by the backward)" if alibi_bias else ""))
        return Traffic(total, text)

    return model


def tiled_exact(point: PointLike) -> Traffic:
    """Tiled exact attention with native GQA, windows, documents and ALiBi (no bias tensor):
    flash_attn, flex_attention, xformers."""
    return _TILED(point)


_TILED = tiled()


def random_features(num_features: int) -> TrafficModel:
    """Performer (FAVOR+) with ``num_features`` features: phi(q) of (B, Hq, Tq, m) and phi(k)
    of (B, Hkv, Tk, m), the key features shared by the query heads of a group."""

    def model(point: PointLike) -> Traffic:
        work = max(element_bytes(point.dtype), 4)
        phi_q = float(point.batch * point.heads * q_len(point) * num_features * work)
        phi_k = float(point.batch * kv_heads(point) * point.seq_len * num_features * work)
        # forward: phi(q), phi(k) written and read once; backward: both read back, their
        # gradients written and read once
        total = (_compulsory_bytes(point, heads=kv_heads(point), keys=point.seq_len)
                 + _by_pass(point, 2 * (phi_q + phi_k), 3 * (phi_q + phi_k)))
        return Traffic(total, COMPULSORY_TEXT + f"; + phi(q), phi(k) ({num_features} "
                              "features a position, float32 or wider) written and read once "
                              "(forward), read back and their gradients written and read once "
                              "(backward)")

    return model


def hrr(point: PointLike) -> Traffic:
    """HRR attention: the per-token scores (all T of them before the softmax over T), one per
    query head; k, v once per key/value head (the key/value heads shared by each group; a copy
    to the query heads, where an implementation still makes one, is not counted)."""
    rows = float(point.batch * point.heads * q_len(point) * STATS_BYTES)
    total = (_compulsory_bytes(point, heads=kv_heads(point), keys=point.seq_len)
             + _by_pass(point, 2 * rows, rows))
    return Traffic(total, COMPULSORY_TEXT + "; + the per-token scores written and read once "
                          "(forward) and read back (backward); float32")


# -- % of peak ---------------------------------------------------------------------------------
def utilisation(*, bytes_moved: float | None, flops: float | None, time_s: float | None,
                peak_bytes_per_s: float | None,
                peak_flops_per_s: float | None) -> dict[str, float | None]:
    """achieved bytes/s, % of the peak bandwidth, % of the peak FLOP/s and FLOP per byte."""
    out: dict[str, float | None] = {"achieved_bytes_per_s": None, "pct_peak_bandwidth": None,
                                    "pct_peak_flops": None, "arithmetic_intensity": None}
    if not time_s or time_s <= 0:
        return out
    if bytes_moved:
        out["achieved_bytes_per_s"] = bytes_moved / time_s
        if peak_bytes_per_s:
            out["pct_peak_bandwidth"] = 100.0 * bytes_moved / time_s / peak_bytes_per_s
        if flops:
            out["arithmetic_intensity"] = flops / bytes_moved
    if flops and peak_flops_per_s:
        out["pct_peak_flops"] = 100.0 * flops / time_s / peak_flops_per_s
    return out


def traffic_metrics(point: Any, model: TrafficModel | None, *, time_s: float | None,
                    flops: float | None, peak_bytes_per_s: float | None,
                    peak_flops_per_s: float | None) -> dict[str, Any]:
    """A record's bytes_moved, bytes_model, achieved bytes/s and % of the peaks."""
    traffic = (model or undeclared)(point)
    return {"bytes_moved": traffic.bytes_moved, "bytes_model": traffic.model,
            **utilisation(bytes_moved=traffic.bytes_moved, flops=flops, time_s=time_s,
                          peak_bytes_per_s=peak_bytes_per_s, peak_flops_per_s=peak_flops_per_s)}
