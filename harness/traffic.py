"""Bytes moved: a lower-bound traffic model per implementation, and % of the machine's peaks.

Each implementation declares a model (``register(..., traffic=...)``); one without a
declaration gets ``compulsory``. A model counts

- the compulsory traffic of the pass: read q, k, v and write o (forward); read q, k, v and dO
  and write dq, dk, dv (backward); forward+backward is both;
- plus what the method must store between its steps, each written once and read once: the
  T x T scores and weights of a method that materialises them, the T x m random features of
  Performer, the per-token scores of HRR (and what a backward reads back of them).

It is a lower bound: re-reads that a cache may or may not absorb are not counted, so the
achieved bytes/s (bytes_moved / median time) cannot exceed the copy bandwidth unless a model or
a peak is wrong. Elements are counted in the input dtype, except where a method computes in
float32 whatever the input (Performer and HRR on float16/bfloat16).

Pure functions of a Point; the shapes are read from its batch, heads, seq_len and head_dim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

DTYPE_BYTES = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}
STATS_BYTES = 4  # per-row statistics (log-sum-exp, HRR's per-token scores) are float32


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


def _qkvo(point: PointLike) -> float:
    """Bytes of one (B, H, T, D) tensor in the input dtype."""
    return float(point.batch * point.heads * point.seq_len * point.head_dim
                 * element_bytes(point.dtype))


def _units(point: PointLike) -> tuple[int, int]:
    """(forward, backward) multiples of one (B, H, T, D) tensor in the compulsory traffic."""
    forward = 4                       # read q, k, v; write o
    backward = 7                      # read q, k, v, dO; write dq, dk, dv
    return forward, backward


def _by_pass(point: PointLike, forward: float, backward: float) -> float:
    return {"forward": forward, "backward": backward,
            "forward_backward": forward + backward}[point.pass_]


COMPULSORY_TEXT = ("compulsory: read q, k, v, write o (forward); read q, k, v, dO, write dq, "
                   "dk, dv (backward)")


def compulsory(point: PointLike) -> Traffic:
    """Only what any attention must read and write."""
    fwd, bwd = _units(point)
    size = _qkvo(point)
    return Traffic(_by_pass(point, fwd * size, bwd * size), COMPULSORY_TEXT)


def undeclared(point: PointLike) -> Traffic:
    base = compulsory(point)
    return Traffic(base.bytes_moved, base.model + " (the implementation declares no model)")


def materialised_scores(point: PointLike) -> Traffic:
    """Exact attention that holds the T x T scores S and weights P in memory."""
    fwd, bwd = _units(point)
    size = _qkvo(point)
    square = float(point.batch * point.heads * point.seq_len * point.seq_len
                   * element_bytes(point.dtype))
    # forward: S and P each written once, read once; backward: P read, dP and dS each
    # written once and read once
    total = _by_pass(point, fwd * size + 4 * square, bwd * size + 5 * square)
    return Traffic(total, COMPULSORY_TEXT + "; + T x T scores and weights written and read "
                          "once each (forward), weights read and their two gradients written "
                          "and read once each (backward)")


def tiled_exact(point: PointLike) -> Traffic:
    """Flash-style exact attention: never holds T x T; the backward reads o and the
    per-row log-sum-exp saved by the forward."""
    fwd, bwd = _units(point)
    size = _qkvo(point)
    rows = float(point.batch * point.heads * point.seq_len * STATS_BYTES)
    lse_written = rows if point.pass_ == "forward_backward" else 0.0
    total = _by_pass(point, fwd * size, (bwd + 1) * size + rows) + lse_written
    return Traffic(total, COMPULSORY_TEXT + "; + o and the per-row log-sum-exp read by the "
                          "backward (and the log-sum-exp written by the forward before it)")


def random_features(num_features: int) -> TrafficModel:
    """Performer (FAVOR+) with ``num_features`` features: phi(q), phi(k) of (B, H, T, m)."""

    def model(point: PointLike) -> Traffic:
        fwd, bwd = _units(point)
        size = _qkvo(point)
        work = max(element_bytes(point.dtype), 4)
        features = float(point.batch * point.heads * point.seq_len * num_features * work)
        # forward: phi(q), phi(k) written and read once; backward: both read back, their
        # gradients written and read once
        total = _by_pass(point, fwd * size + 4 * features, bwd * size + 6 * features)
        return Traffic(total, COMPULSORY_TEXT + f"; + phi(q), phi(k) (T x {num_features} "
                              "features each, float32 or wider) written and read once (forward), "
                              "read back and their gradients written and read once (backward)")

    return model


def hrr(point: PointLike) -> Traffic:
    """HRR attention: the per-token scores (all T of them before the softmax over T)."""
    fwd, bwd = _units(point)
    size = _qkvo(point)
    rows = float(point.batch * point.heads * point.seq_len * STATS_BYTES)
    total = _by_pass(point, fwd * size + 2 * rows, bwd * size + rows)
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
