"""Framework adapters: the few operations the harness needs from torch and from JAX.

Each adapter module offers the same functions (device_present, tiny_run, from_numpy, to_numpy,
synchronize, ...), so that the runner and the numpy entry point never branch on the framework.
Imports are lazy: a machine without JAX can still use every torch implementation.
"""

from __future__ import annotations

import importlib
from types import ModuleType

_MODULES = {"torch": "harness.contract.frameworks.torch_fw", "jax": "harness.contract.frameworks.jax_fw"}


def get(framework: str) -> ModuleType:
    try:
        return importlib.import_module(_MODULES[framework])
    except KeyError:
        raise ValueError(f"unknown framework {framework!r}; valid: {', '.join(_MODULES)}") from None


def device_kind(device: str) -> str:
    """'cuda:1' -> 'cuda'."""
    return device.split(":", 1)[0]


def best_device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"
