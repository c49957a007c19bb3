"""The correctness gate: an implementation is checked against its reference before it is timed.

Pure with respect to results: it returns a GateResult, the caller decides what to record.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness import frameworks
from harness.reference import GATE_TOLERANCE, exact_attention, reference_output, relative_error
from harness.registry import Implementation

GATE_SHAPE = (1, 2, 64, 32)  # small enough for the float64 reference on any machine


@dataclass(frozen=True)
class GateResult:
    passed: bool
    max_error: float | None      # against the family's reference (None: approximate family)
    tolerance: float | None
    deviation_from_softmax: float | None  # relative Frobenius error vs exact attention
    message: str = ""


def gate_inputs(shape: tuple[int, int, int, int], *, seed: int = 0,
                masked: bool = False) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal(shape) for _ in range(3))
    mask = None
    if masked:
        mask = np.ones((shape[0], shape[2]), dtype=bool)
        mask[:, shape[2] - max(1, shape[2] // 4):] = False
    return q, k, v, mask


def run_impl_numpy(impl: Implementation, q: np.ndarray, k: np.ndarray, v: np.ndarray, *,
                   device: str, dtype: str, causal: bool, mask: np.ndarray | None) -> np.ndarray:
    fw = frameworks.get(impl.framework)
    with fw.precision(dtype):
        args = [fw.from_numpy(x, device, dtype) for x in (q, k, v)]
        mask_n = None if mask is None else fw.from_numpy(mask, device)
        out = fw.call(impl, *args, causal=causal, key_padding_mask=mask_n)
        return fw.to_numpy(out).astype(np.float64)


def check(impl: Implementation, *, device: str, dtype: str, causal: bool = False,
          masked: bool = False, shape: tuple[int, int, int, int] = GATE_SHAPE,
          seed: int = 0) -> GateResult:
    """Compare one implementation with its reference at a small shape; never raises."""
    q, k, v, mask = gate_inputs(shape, seed=seed, masked=masked)
    try:
        out = run_impl_numpy(impl, q, k, v, device=device, dtype=dtype, causal=causal, mask=mask)
    except Exception as exc:
        return GateResult(False, None, None, None, f"{type(exc).__name__}: {exc}")
    if not np.isfinite(out).all():
        return GateResult(False, None, None, None, "non-finite output")
    exact = exact_attention(q, k, v, causal=causal, key_padding_mask=mask)
    deviation = relative_error(out, exact)
    ref = reference_output(impl.family, q, k, v, causal=causal, key_padding_mask=mask)
    if ref is None:
        return GateResult(True, None, None, deviation,
                          "approximate method: no exact reference, deviation recorded")
    scale = max(1.0, float(np.abs(ref).max()))
    max_error = float(np.abs(out - ref).max() / scale)
    tolerance = (impl.gate_tolerance or {}).get(dtype, GATE_TOLERANCE[dtype])
    passed = max_error <= tolerance
    message = "" if passed else (f"output differs from the {impl.family} reference: max error "
                                 f"{max_error:.3g} > tolerance {tolerance:.3g} ({dtype})")
    return GateResult(passed, max_error, tolerance, deviation, message)
