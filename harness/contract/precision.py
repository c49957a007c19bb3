"""What float32 matmuls really compute in: torch's matmul precision and TF32 flags, JAX's default.

On Ampere and later GPUs, TF32 (10-bit mantissa) silently replaces float32 in matmuls when
torch's ``float32_matmul_precision`` is "high"/"medium" or ``allow_tf32`` is set, and in JAX
when ``jax_default_matmul_precision`` asks for it (on GPU JAX's default already lets XLA use
TF32). Every run and record carries these settings so that two float32 GPU numbers cannot differ
silently.
"""

from __future__ import annotations

import sys
from typing import Any


def torch_precision() -> dict[str, Any] | None:
    try:
        import torch
    except ImportError:
        return None
    return {"float32_matmul_precision": torch.get_float32_matmul_precision(),
            "cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
            "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32)}


def jax_precision() -> dict[str, Any] | None:
    """JAX's setting, only where JAX is already imported (never imported here for this)."""
    jax = sys.modules.get("jax")
    if jax is None:
        return None
    try:
        value = jax.config.jax_default_matmul_precision
    except AttributeError:
        value = None
    return {"default_matmul_precision": value if value is not None else "default"}


def matmul_precision() -> dict[str, Any]:
    """Both frameworks' settings (those importable here)."""
    out: dict[str, Any] = {}
    for name, read in (("torch", torch_precision), ("jax", jax_precision)):
        value = read()
        if value is not None:
            out[name] = value
    return out


def describe(framework: str) -> str:
    """One short line for a record: the setting that governs this framework's float32 matmuls."""
    if framework == "torch":
        p = torch_precision()
        if p is None:
            return ""
        return (f"torch {p['float32_matmul_precision']} (tf32 matmul "
                f"{'on' if p['cuda_matmul_allow_tf32'] else 'off'}, cudnn "
                f"{'on' if p['cudnn_allow_tf32'] else 'off'})")
    if framework == "jax":
        p = jax_precision()
        return "" if p is None else f"jax {p['default_matmul_precision']}"
    return ""
