"""The GPUs CUDA would show this process, asked of NVML: no CUDA driver initialised, no device
context created.

The parent process of a sweep (planning, listing, the hardware fingerprint) must never create a
device context: JAX's GPU backend, once started, holds its allocator's memory (75% of the device
when it preallocates) for the life of the process, and any context blocks the workers of a GPU in
exclusive-process mode. The frameworks' own queries (``jax.devices()``, ``torch.cuda``'s device
properties) belong in the workers; the parent counts devices here.
"""

from __future__ import annotations

import os
from typing import Any


def uuid_key(uuid: str | None) -> str:
    """NVML says 'GPU-8c1e...', torch's device properties '8c1e...': compare without prefix."""
    return str(uuid or "").lower().removeprefix("gpu-")


def cuda_order(nvml_uuids: list[str | None],
               cuda_uuids: list[str] | None = None) -> tuple[list[int], str]:
    """NVML indices of the GPUs CUDA sees, in CUDA's order, and how that was decided.

    By the UUIDs CUDA reports (``cuda_uuids``, from torch) when given; else from
    CUDA_VISIBLE_DEVICES (ordinals are NVML indices, as torch reads them; 'GPU-' entries are
    UUID prefixes); else every GPU.
    """
    if cuda_uuids:
        keys = [uuid_key(u) for u in nvml_uuids]
        order = [keys.index(uuid_key(u)) for u in cuda_uuids if uuid_key(u) in keys]
        if len(order) == len(cuda_uuids):
            return order, "uuid"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return list(range(len(nvml_uuids))), "all"
    order = []
    for entry in (e.strip() for e in visible.split(",")):
        if entry.isdigit() and int(entry) < len(nvml_uuids):
            index = int(entry)
        elif entry.lower().startswith("gpu-"):
            matches = [i for i, u in enumerate(nvml_uuids)
                       if u and uuid_key(u).startswith(uuid_key(entry))]
            if len(matches) != 1:
                break
            index = matches[0]
        else:  # CUDA stops at the first entry it cannot use (MIG-..., out of range, -1)
            break
        if index in order:  # a repeated entry makes CUDA see no device at all
            return [], "CUDA_VISIBLE_DEVICES"
        order.append(index)
    return order, "CUDA_VISIBLE_DEVICES"


def nvml_uuids() -> list[str | None] | None:
    """The UUID of every GPU of the machine, in NVML's order (None for one NVML cannot read);
    None when NVML cannot be asked (no nvidia-ml-py, no driver)."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - NVMLError_LibraryNotFound without a GPU driver
        return None
    try:
        uuids: list[str | None] = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            try:
                value: Any = pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(index))
                uuids.append(value.decode() if isinstance(value, bytes) else str(value))
            except Exception:  # noqa: BLE001 - one GPU NVML cannot read
                uuids.append(None)
        return uuids
    except Exception:  # noqa: BLE001 - nvmlDeviceGetCount failed
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


def cuda_device_count() -> int | None:
    """How many GPUs CUDA would show this process (CUDA_VISIBLE_DEVICES applied), from NVML;
    None when NVML cannot tell."""
    uuids = nvml_uuids()
    if uuids is None:
        return None
    return len(cuda_order(uuids)[0])


def torch_device_count(torch: Any) -> int:
    """The CUDA devices torch would see here, without creating a device context: torch's own
    count where its CUDA is initialised (a worker), else NVML's; without NVML, torch's
    NVML-based check (at most the CUDA driver initialised, no context: torch.cuda.is_available's
    note)."""
    if not torch.backends.cuda.is_built():
        return 0
    if torch.cuda.is_initialized():
        return torch.cuda.device_count()
    count = cuda_device_count()
    if count is not None:
        return count
    saved = os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK")
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"
    try:
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    finally:
        if saved is None:
            os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
        else:
            os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = saved
