"""Framework adapters: the few operations the harness needs from torch and from JAX.

Each adapter module offers the same functions (device_present, tiny_run, from_numpy, to_numpy,
synchronize, ...), so that the runner and the numpy entry point never branch on the framework.
Imports are lazy: a machine without JAX can still use every torch implementation.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

_MODULES = {"torch": "harness.contract.frameworks.torch_fw",
            "jax": "harness.contract.frameworks.jax_fw"}


def get(framework: str) -> ModuleType:
    try:
        return importlib.import_module(_MODULES[framework])
    except KeyError:
        raise ValueError(f"unknown framework {framework!r}; valid: {', '.join(_MODULES)}") from None


def device_kind(device: str) -> str:
    """'cuda:1' -> 'cuda'."""
    return device.split(":", 1)[0]


def best_device() -> str:
    """'cuda' where a GPU is visible, else 'cpu'; asked without creating a device context
    (NVML: harness.contract.visible_gpus; the sweep's parent never starts a GPU runtime)."""
    from harness.contract import visible_gpus

    try:
        import torch
    except ImportError:
        return "cuda" if visible_gpus.cuda_device_count() else "cpu"
    return "cuda" if visible_gpus.torch_device_count(torch) else "cpu"


def call(impl: Any, q: Any, k: Any, v: Any, *, causal: bool = False,
         key_padding_mask: Any = None, **mask: Any) -> Any:
    """Call a method on framework-native q, k, v (each adapter's ``call``: the same for both).
    ``mask``: window, alibi_slopes, document_ids; passed on only when given, so that a method
    receives only the keywords its capabilities declare."""
    extra = {name: value for name, value in mask.items() if value is not None}
    return impl.fn(q, k, v, causal=causal, key_padding_mask=key_padding_mask, **extra)
