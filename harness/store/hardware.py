"""Machine fingerprint for run metadata: CPU, memory, GPUs (via nvidia-ml-py), software, commit.

Every probe degrades cleanly: no GPU, no NVML library, no git, no JAX just leave fields empty.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import re
import socket
import subprocess
from pathlib import Path
from typing import Any

from harness.contract.visible_gpus import cuda_order

PACKAGES = ("torch", "jax", "jaxlib", "xformers", "flash-attn", "numpy", "pandas", "triton")
REPO_ROOT = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def total_ram_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_state(root: Path = REPO_ROOT) -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                                 timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def gpu_info(ask_torch: bool = True) -> dict[str, Any]:
    """Name, memory, driver, clocks and temperature of each GPU this process can use, via NVML.

    NVML lists every GPU of the machine in PCI-bus order; CUDA sees only CUDA_VISIBLE_DEVICES,
    in its own order. ``gpus`` are the GPUs CUDA sees, in CUDA's order (``index`` is the N of
    ``cuda:N``), matched to NVML by UUID (``nvml_index``, ``uuid``); ``gpus_not_visible``
    counts the others. One GPU whose NVML queries fail is listed with what could be read.
    ``ask_torch=False``: CUDA's order from CUDA_VISIBLE_DEVICES alone (torch's CUDA untouched).
    """
    try:
        import pynvml
    except ImportError:
        return {"nvml": "nvidia-ml-py not installed"}
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound without a GPU driver
        return {"nvml": f"unavailable: {type(exc).__name__}"}
    try:
        try:
            count = pynvml.nvmlDeviceGetCount()
        except Exception as exc:  # noqa: BLE001
            return {"nvml": f"unavailable: nvmlDeviceGetCount: {type(exc).__name__}"}
        handles: list[Any] = []
        uuids: list[str | None] = []
        for nvml_index in range(count):
            handle = _safe(pynvml.nvmlDeviceGetHandleByIndex, nvml_index)
            handles.append(handle)
            uuids.append(None if handle is None else
                         _decode(_safe(pynvml.nvmlDeviceGetUUID, handle)))
        order, how = cuda_order(uuids, torch_cuda_uuids() if ask_torch else None)
        gpus = []
        for cuda_index, nvml_index in enumerate(order):
            handle = handles[nvml_index]
            state = {"index": cuda_index, "nvml_index": nvml_index, "uuid": uuids[nvml_index]}
            if handle is None:
                state["nvml_error"] = "nvmlDeviceGetHandleByIndex failed"
            else:
                state.update(_gpu_state(pynvml, handle))
            gpus.append(state)
        return {"nvml": "ok", "driver": _decode(_safe(pynvml.nvmlSystemGetDriverVersion)),
                "cuda_driver": _safe(pynvml.nvmlSystemGetCudaDriverVersion), "gpus": gpus,
                "gpus_not_visible": count - len(order), "cuda_order": how,
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    finally:
        _safe(pynvml.nvmlShutdown)


def _safe(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:  # noqa: BLE001 - NVMLError_* (not supported, GPU lost, ...)
        return None


def torch_cuda_uuids() -> list[str] | None:
    """UUIDs of the devices CUDA enumerates, in CUDA's order, where this process has already
    initialised torch's CUDA (a worker); None elsewhere: asking would initialise it here (the
    sweep's parent creates no device context, harness.contract.visible_gpus)."""
    try:
        import torch

        if not torch.cuda.is_initialized():
            return None
        return [str(torch.cuda.get_device_properties(i).uuid)
                for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001
        return None


def cuda_device_total_bytes(cuda_index: int) -> int | None:
    """Total memory of cuda:N from NVML (no CUDA initialised here); None if unknown."""
    info = gpu_info(ask_torch=False)
    for gpu in info.get("gpus", []):
        if gpu.get("index") == cuda_index:
            return gpu.get("memory_total_bytes")
    return None


def _gpu_state(pynvml: Any, handle: Any) -> dict[str, Any]:
    safe = _safe
    memory = safe(pynvml.nvmlDeviceGetMemoryInfo, handle)
    pci = safe(pynvml.nvmlDeviceGetPciInfo, handle)
    return {
        "name": _decode(safe(pynvml.nvmlDeviceGetName, handle)),
        "pci_bus_id": _decode(getattr(pci, "busId", None)),
        "memory_total_bytes": getattr(memory, "total", None),
        "sm_clock_mhz": safe(pynvml.nvmlDeviceGetClockInfo, handle, pynvml.NVML_CLOCK_SM),
        "mem_clock_mhz": safe(pynvml.nvmlDeviceGetClockInfo, handle, pynvml.NVML_CLOCK_MEM),
        "max_sm_clock_mhz": safe(pynvml.nvmlDeviceGetMaxClockInfo, handle, pynvml.NVML_CLOCK_SM),
        "temperature_c": safe(pynvml.nvmlDeviceGetTemperature, handle,
                              pynvml.NVML_TEMPERATURE_GPU),
        "power_w": (lambda mw: mw / 1000 if mw else None)(
            safe(pynvml.nvmlDeviceGetPowerUsage, handle)),
    }


def _decode(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def torch_cuda_info() -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {}
    info: dict[str, Any] = {"torch_cuda": torch.version.cuda, "cuda_available": False}
    # the devices from NVML, in CUDA's order: torch's own queries would initialise CUDA in
    # this (the sweep's parent) process
    gpus = gpu_info(ask_torch=False).get("gpus") or [] if torch.backends.cuda.is_built() else []
    if gpus:
        info.update(cuda_available=True, cudnn=torch.backends.cudnn.version(),
                    devices=[gpu.get("name") for gpu in gpus])
    return info


def fingerprint() -> dict[str, Any]:
    """The static description of this machine and its software."""
    torch_threads = None
    try:
        import torch

        torch_threads = torch.get_num_threads()
    except ImportError:
        pass
    info = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_count_logical": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch_threads,
        "ram_bytes": total_ram_bytes(),
        "packages": package_versions(),
        "cuda": torch_cuda_info(),
        "gpu": gpu_info(),
        "git": git_state(),
    }
    info["hardware_id"] = hardware_id(info)
    info["hardware_tag"] = hardware_tag(info)
    return info


def hardware_id(info: dict[str, Any]) -> str:
    """Stable id of the hardware only (not software): CPU model, core count, GPU names."""
    gpus = [g.get("name") for g in info.get("gpu", {}).get("gpus", [])] or \
        info.get("cuda", {}).get("devices", [])
    text = f"{info.get('cpu_model')}|{info.get('cpu_affinity') or info.get('cpu_count_logical')}|" \
           f"{','.join(map(str, gpus))}"
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def hardware_tag(info: dict[str, Any]) -> str:
    """Short human tag for directory names: 'h100-80gb-hbm3' or 'cpu-epyc-7b13-2c'."""
    gpus = [g.get("name") for g in info.get("gpu", {}).get("gpus", [])] or \
        info.get("cuda", {}).get("devices", [])
    if gpus:
        name = str(gpus[0]).lower().replace("nvidia", "")
        return _slug(name) + (f"-x{len(gpus)}" if len(gpus) > 1 else "")
    model = re.sub(r"\(r\)|\(tm\)|cpu|processor|@.*|\d+-core", "", info.get("cpu_model", "").lower())
    model = " ".join(w for w in model.split() if w not in ("amd", "intel", "core"))
    cores = info.get("cpu_affinity") or info.get("cpu_count_logical")
    return f"cpu-{_slug(model)[:24]}-{cores}c"


def hardware_summary(info: dict[str, Any]) -> str:
    gpus = [g.get("name") for g in info.get("gpu", {}).get("gpus", [])] or \
        info.get("cuda", {}).get("devices", [])
    cpu = f"{info.get('cpu_model')} ({info.get('cpu_affinity') or info.get('cpu_count_logical')} cores)"
    return f"{', '.join(map(str, gpus))} + {cpu}" if gpus else cpu


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"
