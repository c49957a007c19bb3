"""The numpy entry point: ``harness.attention(name, q, k, v, ...)`` for tests and notebooks."""

from __future__ import annotations

import numpy as np

from harness import frameworks
from harness.errors import UsageError
from harness.registry import REGISTRY


def attention(name: str, q: np.ndarray, k: np.ndarray, v: np.ndarray, *, causal: bool = False,
              key_padding_mask: np.ndarray | None = None, device: str = "cpu") -> np.ndarray:
    """Run registered implementation ``name`` on numpy q, k, v of shape (B, H, T, D).

    float32 or float64 in, the same dtype out. ``key_padding_mask`` is (B, T), True = keep.
    Raises UnknownNameError for an unknown name and UnsupportedError (with the reason) when the
    implementation cannot run this way here.
    """
    impl = REGISTRY.get(name)
    arrays = [np.asarray(x) for x in (q, k, v)]
    dtypes = {a.dtype for a in arrays}
    if len(dtypes) != 1 or arrays[0].dtype not in (np.float32, np.float64):
        raise UsageError(f"q, k, v must all be float32 or all float64, got "
                         f"{', '.join(str(a.dtype) for a in arrays)}")
    if any(a.ndim != 4 for a in arrays):
        raise UsageError(f"q, k, v must be (B, H, T, D), got shapes "
                         f"{', '.join(str(a.shape) for a in arrays)}")
    if arrays[1].shape != arrays[2].shape or arrays[0].shape[:2] != arrays[1].shape[:2] or \
            arrays[0].shape[-1] != arrays[1].shape[-1]:
        raise UsageError(f"incompatible shapes q {arrays[0].shape}, k {arrays[1].shape}, "
                         f"v {arrays[2].shape}")
    if key_padding_mask is not None:
        key_padding_mask = np.asarray(key_padding_mask, dtype=bool)
        expected = (arrays[1].shape[0], arrays[1].shape[2])
        if key_padding_mask.shape != expected:
            raise UsageError(f"key_padding_mask must be (B, T) = {expected}, "
                             f"got {key_padding_mask.shape}")
    dtype = str(arrays[0].dtype)
    impl.check_call(device=device, dtype=dtype, causal=causal,
                    masked=key_padding_mask is not None)
    fw = frameworks.get(impl.framework)
    with fw.precision(dtype):
        q_n, k_n, v_n = (fw.from_numpy(a, device, dtype) for a in arrays)
        mask_n = None if key_padding_mask is None else fw.from_numpy(key_padding_mask, device)
        out = fw.call(impl, q_n, k_n, v_n, causal=causal, key_padding_mask=mask_n)
        return fw.to_numpy(out).astype(arrays[0].dtype, copy=False)

