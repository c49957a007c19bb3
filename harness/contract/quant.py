"""FP8 key/value inputs (the ``kv_dtype`` axis): formats, scales, quantise and dequantise.

Keys and values are stored in an FP8 format with one scale per tensor (``SCALE_GRANULARITY``:
one k_scale for all of k, one v_scale for all of v, as FlashInfer's and vLLM's ``k_scale`` /
``v_scale``): ``scale = amax / FP8 max`` (rounded to float32, the precision kernels take it in),
``codes = round(x / scale)`` clamped to the format's range, and the method's inputs are
``codes * scale``. q stays in the point's dtype. Pure numpy: the rounding to the FP8 grid is
done here (round half to even, as torch's and ml_dtypes' casts), so that the gate's float64
reference of the dequantised inputs needs no framework.

A method that takes FP8 keys and values receives k and v in the FP8 dtype and the two scales
as the keywords ``k_scale`` and ``v_scale`` (Python floats).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from harness.contract.parsers import _items
from harness.errors import UsageError

SCALE_GRANULARITY = "per_tensor"
# an FP8 key/value cache is an inference input: no method is asked for gradients through it
FP8_BACKWARD_REASON = ("FP8 keys and values are an inference cache: forward pass only (no "
                       "gradient through FP8 k, v)")


@dataclass(frozen=True)
class Fp8Format:
    """One FP8 format: mantissa bits, the smallest normal exponent, the largest finite value."""

    mantissa_bits: int
    min_exponent: int
    max: float
    short: str          # the label's name: 'fp8e4m3'


FORMATS = {
    "float8_e4m3fn": Fp8Format(3, -6, 448.0, "fp8e4m3"),
    "float8_e5m2": Fp8Format(2, -14, 57344.0, "fp8e5m2"),
}
KV_DTYPES = tuple(FORMATS)
ALIASES = {"float8_e4m3fn": "float8_e4m3fn", "fp8_e4m3": "float8_e4m3fn",
           "fp8e4m3": "float8_e4m3fn", "e4m3": "float8_e4m3fn", "fp8": "float8_e4m3fn",
           "float8_e5m2": "float8_e5m2", "fp8_e5m2": "float8_e5m2", "fp8e5m2": "float8_e5m2",
           "e5m2": "float8_e5m2", "none": "", "default": ""}


def parse_kv_dtypes(text: str | Iterable[Any]) -> tuple[str, ...]:
    """'float8_e4m3fn,none' -> ('float8_e4m3fn', ''): '' (none) is the point's dtype."""
    out = []
    for item in _items(text, flag="--kv-dtype"):
        name = ALIASES.get(item.lower())
        if name is None:
            raise UsageError(f"--kv-dtype: unknown key/value dtype {item!r}; valid: "
                             f"{', '.join(KV_DTYPES)}, none")
        out.append(name)
    return tuple(dict.fromkeys(out))


def label(kv_dtype: str) -> str:
    """'kv=fp8e4m3'."""
    fmt = FORMATS.get(kv_dtype)
    return f"kv={fmt.short if fmt else kv_dtype}"


def fp8_format(kv_dtype: str) -> Fp8Format:
    try:
        return FORMATS[kv_dtype]
    except KeyError:
        raise ValueError(f"unknown key/value dtype {kv_dtype!r}; valid: "
                         f"{', '.join(KV_DTYPES)}") from None


def scale_for(amax: float, kv_dtype: str) -> float:
    """The per-tensor scale that maps |x| <= amax onto the format's range (float32-rounded;
    1.0 for an all-zero tensor)."""
    amax = float(amax)
    if not np.isfinite(amax) or amax <= 0:
        return 1.0
    return float(np.float32(amax / fp8_format(kv_dtype).max))


def round_to_fp8(x: np.ndarray, kv_dtype: str) -> np.ndarray:
    """x (already scaled) rounded to the nearest value of the format (ties to even), clamped to
    +-max: float64 values that the FP8 dtype holds exactly."""
    fmt = fp8_format(kv_dtype)
    x = np.clip(np.asarray(x, dtype=np.float64), -fmt.max, fmt.max)
    magnitude = np.abs(x)
    exponent = np.floor(np.log2(np.where(magnitude > 0, magnitude, 1.0)))
    exponent = np.maximum(exponent, fmt.min_exponent)   # subnormals share the smallest step
    step = np.exp2(exponent - fmt.mantissa_bits)
    return np.clip(np.round(x / step) * step, -fmt.max, fmt.max)


def quantise(x: np.ndarray, kv_dtype: str) -> tuple[np.ndarray, float]:
    """(codes, scale): x ~ codes * scale with codes on the FP8 grid (float64 array)."""
    scale = scale_for(float(np.abs(x).max()) if np.size(x) else 0.0, kv_dtype)
    return round_to_fp8(np.asarray(x, dtype=np.float64) / scale, kv_dtype), scale


def dequantise(codes: np.ndarray, scale: float) -> np.ndarray:
    """The values a method computes with: codes * scale, in float64."""
    return np.asarray(codes, dtype=np.float64) * scale


def scales_note(k_scale: float, v_scale: float) -> dict[str, Any]:
    """What a record keeps of the scales (record.extra['kv_scales'])."""
    return {"granularity": SCALE_GRANULARITY, "k_scale": k_scale, "v_scale": v_scale}
