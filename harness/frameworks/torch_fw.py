"""torch adapter: devices, dtypes, conversion, synchronisation, and the tiny availability run."""

from __future__ import annotations

import contextlib
import importlib.util
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from harness.registry import Availability, device_kind, first_line

if TYPE_CHECKING:
    from harness.registry import Implementation

TINY_SHAPE = (1, 2, 16, 16)


def installed() -> Availability:
    if importlib.util.find_spec("torch") is None:
        return Availability(False, "package torch not installed")
    return Availability(True)


def torch_dtype(name: str) -> Any:
    import torch

    return {"float64": torch.float64, "float32": torch.float32,
            "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def device_present(device: str) -> Availability:
    ok = installed()
    if not ok:
        return ok
    import torch

    kind = device_kind(device)
    if kind == "cpu":
        return Availability(True)
    if kind == "cuda":
        if not torch.cuda.is_available():
            return Availability(False, "no CUDA device: torch.cuda.is_available() is False")
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            return Availability(False, f"no CUDA device {index} "
                                       f"({torch.cuda.device_count()} visible)")
        return Availability(True)
    return Availability(False, f"unknown device {device!r}")


@contextlib.contextmanager
def precision(dtype: str) -> Iterator[None]:
    """Nothing to switch in torch (JAX needs its x64 mode for float64)."""
    yield


def from_numpy(array: np.ndarray, device: str, dtype: str | None = None) -> Any:
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(array)).to(device)
    if dtype is not None and array.dtype != np.bool_:
        tensor = tensor.to(torch_dtype(dtype))
    return tensor


def to_numpy(tensor: Any) -> np.ndarray:
    import torch

    tensor = tensor.detach()
    if tensor.dtype in (torch.float16, torch.bfloat16):
        tensor = tensor.float()
    return tensor.cpu().numpy()


def synchronize(device: str) -> None:
    if device_kind(device) == "cuda":
        import torch

        torch.cuda.synchronize(device)


def call(impl: "Implementation", q: Any, k: Any, v: Any, *, causal: bool = False,
         key_padding_mask: Any = None) -> Any:
    return impl.fn(q, k, v, causal=causal, key_padding_mask=key_padding_mask)


def tiny_run(impl: "Implementation", device: str, dtype: str) -> Availability:
    """Really run a tiny input; report the first line of whatever goes wrong."""
    import torch

    try:
        gen = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(TINY_SHAPE, generator=gen).to(device=device,
                                                                 dtype=torch_dtype(dtype))
                   for _ in range(3))
        out = impl.fn(q, k, v, causal=False, key_padding_mask=None)
        synchronize(device)
        if tuple(out.shape) != TINY_SHAPE:
            return Availability(False, f"{impl.name}: returned shape {tuple(out.shape)} "
                                       f"for input {TINY_SHAPE}")
        if not bool(torch.isfinite(out.float()).all()):
            return Availability(False, f"{impl.name}: non-finite output on a tiny input")
    except Exception as exc:
        return Availability(False, f"{impl.name}: fails on {device}/{dtype}: "
                                   f"{type(exc).__name__}: {first_line(str(exc))}")
    return Availability(True, "")
