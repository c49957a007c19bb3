"""The numpy entry point: ``harness.attention(name, q, k, v, ...)`` for tests and notebooks."""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.contract import frameworks
from harness.errors import UsageError
from harness.contract.masking import check_window
from harness.contract.registry import REGISTRY


def attention(name: str, q: np.ndarray, k: np.ndarray, v: np.ndarray, *, causal: bool = False,
              key_padding_mask: np.ndarray | None = None,
              window: tuple[int, int] | None = None, alibi_slopes: np.ndarray | None = None,
              document_ids: np.ndarray | None = None, device: str = "cpu") -> np.ndarray:
    """Run registered implementation ``name`` on numpy arrays; the conventions are those of
    harness.contract.masking.

    q is (B, Hq, Tq, D); k and v are (B, Hkv, Tk, D) with Hq a multiple of Hkv (query head h
    reads key/value head h // (Hq / Hkv)). float32 or float64 in, the same dtype out.
    ``key_padding_mask`` is (B, Tk), True = keep; causal is aligned bottom-right;
    ``window=(left, right)`` with -1 = unbounded; ``alibi_slopes`` (Hq,) adds
    -slope_h * |i + Tk - Tq - j| to the scores; ``document_ids`` int (B, T) needs Tq == Tk.
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
        raise UsageError(f"q must be (B, Hq, Tq, D) and k, v (B, Hkv, Tk, D), got shapes "
                         f"{', '.join(str(a.shape) for a in arrays)}")
    q_a, k_a, v_a = arrays
    if k_a.shape != v_a.shape or q_a.shape[0] != k_a.shape[0] or \
            q_a.shape[-1] != k_a.shape[-1] or q_a.shape[1] % k_a.shape[1]:
        raise UsageError(f"incompatible shapes q {q_a.shape}, k {k_a.shape}, v {v_a.shape} "
                         f"(need the same B and D, k and v equal, Hq a multiple of Hkv)")
    batch, q_heads, t_q, _ = q_a.shape
    t_k = k_a.shape[2]
    if key_padding_mask is not None:
        key_padding_mask = np.asarray(key_padding_mask, dtype=bool)
        if key_padding_mask.shape != (batch, t_k):
            raise UsageError(f"key_padding_mask must be (B, Tk) = {(batch, t_k)}, "
                             f"got {key_padding_mask.shape}")
    try:
        window = check_window(window)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if alibi_slopes is not None:
        alibi_slopes = np.asarray(alibi_slopes, dtype=q_a.dtype)
        if alibi_slopes.shape != (q_heads,):
            raise UsageError(f"alibi_slopes must be (Hq,) = ({q_heads},), "
                             f"got {alibi_slopes.shape}")
    if document_ids is not None:
        document_ids = np.asarray(document_ids)
        if not np.issubdtype(document_ids.dtype, np.integer):
            raise UsageError(f"document_ids must be integers, got {document_ids.dtype}")
        if t_q != t_k or document_ids.shape != (batch, t_k):
            raise UsageError(f"document_ids must be (B, T) = {(batch, t_k)} with Tq == Tk, "
                             f"got {document_ids.shape} for Tq={t_q}, Tk={t_k}")
        document_ids = document_ids.astype(np.int32)
    dtype = str(q_a.dtype)
    impl.check_call(device=device, dtype=dtype, causal=causal,
                    masked=key_padding_mask is not None, gqa=k_a.shape[1] != q_heads,
                    q_len=t_q != t_k, window=window is not None,
                    alibi=alibi_slopes is not None, documents=document_ids is not None)
    fw = frameworks.get(impl.framework)
    with fw.precision(dtype):
        q_n, k_n, v_n = (fw.from_numpy(a, device, dtype) for a in arrays)
        extra: dict[str, Any] = {"window": window}
        if key_padding_mask is not None:
            extra["key_padding_mask"] = fw.from_numpy(key_padding_mask, device)
        if alibi_slopes is not None:
            extra["alibi_slopes"] = fw.from_numpy(alibi_slopes, device, dtype)
        if document_ids is not None:
            extra["document_ids"] = fw.from_numpy(document_ids, device)
        out = fw.call(impl, q_n, k_n, v_n, causal=causal, **extra)
        return fw.to_numpy(out).astype(q_a.dtype, copy=False)
