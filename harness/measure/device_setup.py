"""CUDA set-up inside a worker: the point's device made current, the GPU memory cap (--max-memory,
or one default share of the device for every framework) handed to the framework that runs the
point (torch's caching allocator, or JAX's memory fraction), and the
check for a CUDA context left unusable by a sticky error. Nothing here runs without CUDA."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Iterator

from harness.contract.registry import device_kind, first_line


def cuda_index(device: str) -> int:
    """'cuda' -> 0, 'cuda:1' -> 1 (torch's CUDA memory functions refuse 'cuda' without index)."""
    return int(device.split(":", 1)[1]) if ":" in device else 0


def select_torch_cuda_device(device: str) -> None:
    """torch.cuda.set_device for the point's device (a no-op without CUDA)."""
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(cuda_index(device))


@dataclass(frozen=True)
class DeviceMemoryCap:
    """The GPU memory a worker's framework may allocate: ``cap_bytes`` (None where the device's
    total is unknown: then ``fraction`` of it), and where the cap comes from ("--max-memory",
    or "default": harness.grid.settings.DEFAULT_DEVICE_MEMORY_FRACTION)."""
    fraction: float
    cap_bytes: int | None
    source: str

    def as_note(self) -> dict[str, Any]:
        """The record's ``extra["device_memory_cap"]``."""
        return {"bytes": self.cap_bytes, "fraction": round(self.fraction, 6),
                "source": self.source}


def memory_cap(total_bytes: int | None, max_bytes: int | None, extra_bytes: int,
               default_fraction: float) -> DeviceMemoryCap:
    """The cap of one worker (pure): --max-memory plus what the harness itself allocates on the
    device (``extra_bytes``: the timing pass's L2-flush buffer), else ``default_fraction`` of
    the device plus that; as a fraction of the device's total memory, at most 1."""
    extra = max(0, int(extra_bytes))
    if max_bytes:
        cap = int(max_bytes) + extra
        fraction = min(1.0, cap / total_bytes) if total_bytes else 1.0
        return DeviceMemoryCap(fraction, min(cap, total_bytes) if total_bytes else cap,
                               "--max-memory")
    if not total_bytes:
        return DeviceMemoryCap(default_fraction, None, "default")
    cap = min(int(total_bytes), int(total_bytes * default_fraction) + extra)
    return DeviceMemoryCap(cap / total_bytes, cap, "default")


def cap_device_memory(framework: str, device: str, *, max_bytes: int | None,
                      default_fraction: float, extra_bytes: int = 0) -> DeviceMemoryCap | None:
    """Cap the framework that runs a point on a CUDA device: JAX's memory fraction (read when
    JAX starts its GPU backend, so before the worker's first JAX call), or torch's caching
    allocator's per-process fraction. The same cap for both; None where nothing was capped."""
    if framework == "jax":
        return cap_jax_memory(device, max_bytes=max_bytes, default_fraction=default_fraction,
                              extra_bytes=extra_bytes)
    return cap_cuda_allocator(device, max_bytes=max_bytes, default_fraction=default_fraction,
                              extra_bytes=extra_bytes)


def cap_cuda_allocator(device: str, *, max_bytes: int | None, default_fraction: float,
                       extra_bytes: int = 0) -> DeviceMemoryCap | None:
    """torch's caching allocator refuses to grow past the cap on that device."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    index = cuda_index(device)
    total = torch.cuda.get_device_properties(index).total_memory
    cap = memory_cap(total, max_bytes, extra_bytes, default_fraction)
    torch.cuda.set_per_process_memory_fraction(float(cap.fraction), index)
    return cap


# jaxlib's generate_pjrt_gpu_plugin_options reads XLA_CLIENT_MEM_FRACTION, and the deprecated
# XLA_PYTHON_CLIENT_MEM_FRACTION in its place; both at once is a ValueError
JAX_FRACTION_VARIABLES = ("XLA_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_MEM_FRACTION")


def cap_jax_memory(device: str, *, max_bytes: int | None, default_fraction: float,
                   extra_bytes: int = 0) -> DeviceMemoryCap:
    """JAX's GPU allocator stops at the cap: its memory fraction of the device's total memory
    (without it JAX's allocator stops at 75%, preallocating or not).

    Read when JAX creates its GPU client, i.e. before the first JAX call in this worker. The
    total comes from NVML (no CUDA context; torch's device properties would start a torch
    CUDA context in a JAX worker); without NVML the default fraction alone is set
    (--max-memory cannot be sized: JAX runs uncapped by it, and the record's cap says so). The deprecated variable name is set only when the user already uses it.
    """
    from harness.store.hardware import cuda_device_total_bytes

    total = cuda_device_total_bytes(cuda_index(device))
    cap = memory_cap(total, max_bytes if total else None, extra_bytes if total else 0,
                     default_fraction)
    name = JAX_FRACTION_VARIABLES[1] if JAX_FRACTION_VARIABLES[1] in os.environ \
        else JAX_FRACTION_VARIABLES[0]
    os.environ[name] = f"{cap.fraction:.6f}"
    return cap


class CudaContextError(RuntimeError):
    """A probe left torch's CUDA context unusable (a sticky error: illegal address, device-side
    assert). Every later CUDA call of this process would fail, so the probe worker ends; the
    runner then probes each combination in a worker of its own."""


@contextlib.contextmanager
def device_scope(framework: str, device: str) -> Iterator[None]:
    """torch on CUDA: the combination's device is the current device while it runs."""
    if framework != "torch" or device_kind(device) != "cuda":
        yield
        return
    import torch

    if not torch.cuda.is_available():
        yield
        return
    with torch.cuda.device(cuda_index(device)):
        yield


def cuda_context_error(framework: str, device: str) -> str | None:
    """The first line of the error a trivial CUDA operation raises now; None when it works
    (or when this process has not initialised torch's CUDA at all)."""
    if framework != "torch" or device_kind(device) != "cuda":
        return None
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    try:
        index = cuda_index(device)
        torch.cuda.synchronize(index)
        torch.ones(1, device=f"cuda:{index}").add_(1).cpu()
    except Exception as exc:  # noqa: BLE001 - any failure means the context is gone
        return f"{type(exc).__name__}: {first_line(str(exc))}"
    return None
