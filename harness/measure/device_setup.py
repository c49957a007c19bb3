"""CUDA set-up inside a worker: the point's device made current, --max-memory handed to the
framework that runs the point (torch's caching allocator, or JAX's memory fraction), and the
check for a CUDA context left unusable by a sticky error. Nothing here runs without CUDA."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

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


def cap_cuda_allocator(max_bytes: int, device: str) -> None:
    """torch's caching allocator refuses to grow past max_bytes on that device."""
    try:
        import torch
    except ImportError:
        return
    if torch.cuda.is_available():
        index = cuda_index(device)
        total = torch.cuda.get_device_properties(index).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, max_bytes / total), index)


def cap_jax_memory(max_bytes: int, device: str) -> None:
    """JAX's GPU allocator stops at max_bytes: its memory fraction of the device's total memory.

    Read when JAX creates its GPU client, i.e. before the first JAX call in this worker. The
    total comes from NVML (no CUDA context); without NVML from torch's device properties.
    jaxlib refuses both variable names at once, so the deprecated one
    (XLA_PYTHON_CLIENT_MEM_FRACTION) is set only when the user already uses it.
    """
    from harness.store.hardware import cuda_device_total_bytes

    total = cuda_device_total_bytes(cuda_index(device))
    if not total:
        try:
            import torch

            total = torch.cuda.get_device_properties(cuda_index(device)).total_memory
        except Exception:  # noqa: BLE001 - no way to size the fraction: JAX runs uncapped
            return
    fraction = f"{min(1.0, max_bytes / total):.6f}"
    name = "XLA_PYTHON_CLIENT_MEM_FRACTION" if "XLA_PYTHON_CLIENT_MEM_FRACTION" in os.environ \
        else "XLA_CLIENT_MEM_FRACTION"
    os.environ[name] = fraction


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
