"""What float32 matmuls really compute in: torch's fp32 precision settings, JAX's default.

On Ampere and later GPUs, TF32 (10-bit mantissa) silently replaces float32 in matmuls when
torch is told so, and in JAX when ``jax_default_matmul_precision`` asks for it (on GPU JAX's
default already lets XLA use TF32). Every run and record carries these settings so that two
float32 GPU numbers cannot differ silently.

torch has two ways to say it. The ``fp32_precision`` settings (torch >= 2.9): a generic one
(``torch.backends.fp32_precision``), one per CUDA backend (``torch.backends.cudnn.fp32_precision``,
torch's ("cuda", "all")) and one per operator (``torch.backends.cuda.matmul.fp32_precision``,
``torch.backends.cudnn.conv.fp32_precision``), each "ieee", "tf32" (or "bf16" on mkldnn) or
"none", which inherits from the level above (operator, then backend, then generic; "none"
throughout is plain float32). The legacy getters (``allow_tf32``, ``get_float32_matmul_precision``)
raise once the two ways have been mixed, so they are read only where the new settings are
missing or as a second opinion, and a setting that cannot be read is recorded as unknown with
the reason: reading never raises and never warns.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any, Callable

NONE = "none"
# (name in the record, attribute path under torch.backends) of the fp32_precision settings
FP32_SETTINGS = (("generic", ("fp32_precision",)),
                 ("cuda", ("cudnn", "fp32_precision")),
                 ("cuda.matmul", ("cuda", "matmul", "fp32_precision")),
                 ("cudnn.conv", ("cudnn", "conv", "fp32_precision")))
# fp32_precision -> the float32_matmul_precision name that asks for the same
MATMUL_NAMES = {"ieee": "highest", "tf32": "high", "bf16": "medium"}


def _read(get: Callable[[], Any]) -> tuple[Any, str]:
    """(value, "") or (None, the reason it could not be read); warnings silenced."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return get(), ""
    except Exception as exc:  # noqa: BLE001 - any failure of a getter is "unknown"
        text = str(exc).strip().splitlines()
        return None, f"{type(exc).__name__}: {text[0][:160] if text else ''}".rstrip(": ")


def _attribute(root: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        root = getattr(root, name)
    return root


def effective(*levels: str | None) -> str:
    """The setting in force: the first of operator, backend, generic that is not "none"
    ("ieee", plain float32, when all are)."""
    for value in levels:
        if value is not None and value != NONE:
            return str(value)
    return "ieee"


def fp32_settings(torch: Any) -> tuple[dict[str, str], dict[str, str]] | None:
    """The fp32_precision settings ({name: value}, {name: why unreadable}); None where this
    torch has none of them (before 2.9)."""
    backends = getattr(torch, "backends", None)
    if backends is None or not hasattr(backends, "fp32_precision"):
        return None
    values: dict[str, str] = {}
    unreadable: dict[str, str] = {}
    for name, path in FP32_SETTINGS:
        value, why = _read(lambda: _attribute(backends, path))
        if why:
            unreadable[f"fp32_precision {name}"] = why
        else:
            values[name] = str(value)
    return values, unreadable


def torch_precision(torch_module: Any = None) -> dict[str, Any] | None:
    """torch's float32 settings: ``float32_matmul_precision`` (a name as
    ``torch.get_float32_matmul_precision`` gives it, or "unknown"), ``cuda_matmul_allow_tf32``
    and ``cudnn_allow_tf32`` (True, False, or None when unknown), ``source`` ("fp32_precision"
    or "legacy"), ``fp32_precision`` (the raw settings, where this torch has them) and
    ``unreadable`` ({setting: reason}, only where something could not be read).
    ``torch_module`` stands in for torch (tests)."""
    torch = torch_module
    if torch is None:
        try:
            import torch
        except ImportError:
            return None
    unreadable: dict[str, str] = {}
    out: dict[str, Any] = {}
    new = fp32_settings(torch)
    legacy_name, why = _read(torch.get_float32_matmul_precision)
    if why:
        unreadable["float32_matmul_precision"] = why
    if new is not None:
        values, new_unreadable = new
        unreadable.update(new_unreadable)
        generic, cuda = values.get("generic"), values.get("cuda")
        matmul = effective(values.get("cuda.matmul"), cuda, generic) \
            if "cuda.matmul" in values else None
        conv = effective(values.get("cudnn.conv"), cuda, generic) \
            if "cudnn.conv" in values else None
        out["source"] = "fp32_precision"
        out["fp32_precision"] = values
        if legacy_name is None and matmul is not None:
            legacy_name = MATMUL_NAMES.get(matmul)
        out["float32_matmul_precision"] = legacy_name or "unknown"
        out["cuda_matmul_allow_tf32"] = None if matmul is None else matmul == "tf32"
        out["cudnn_allow_tf32"] = None if conv is None else conv == "tf32"
    else:
        out["source"] = "legacy"
        out["float32_matmul_precision"] = legacy_name or "unknown"
        for key, path in (("cuda_matmul_allow_tf32", ("cuda", "matmul", "allow_tf32")),
                          ("cudnn_allow_tf32", ("cudnn", "allow_tf32"))):
            value, why = _read(lambda: _attribute(torch.backends, path))
            out[key] = None if why else bool(value)
            if why:
                unreadable[key] = why
    if unreadable:
        out["unreadable"] = unreadable
    return out


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


def _on_off(value: bool | None) -> str:
    return "unknown" if value is None else ("on" if value else "off")


def describe(framework: str) -> str:
    """One short line for a record: the setting that governs this framework's float32 matmuls
    (never raises: an unreadable setting reads "unknown")."""
    try:
        if framework == "torch":
            p = torch_precision()
            if p is None:
                return ""
            line = (f"torch {p['float32_matmul_precision']} (tf32 matmul "
                    f"{_on_off(p['cuda_matmul_allow_tf32'])}, cudnn "
                    f"{_on_off(p['cudnn_allow_tf32'])})")
            if p.get("unreadable") and (p["cuda_matmul_allow_tf32"] is None
                                        or p["cudnn_allow_tf32"] is None):
                line += "; unreadable: " + "; ".join(f"{k}: {v}"
                                                     for k, v in p["unreadable"].items())
            return line
        if framework == "jax":
            p = jax_precision()
            return "" if p is None else f"jax {p['default_matmul_precision']}"
    except Exception as exc:  # noqa: BLE001 - a record is never lost to this line
        return f"{framework} precision unknown ({type(exc).__name__}: {exc})"[:200]
    return ""
