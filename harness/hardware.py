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


def gpu_info() -> dict[str, Any]:
    """Name, memory, driver, clocks and temperature of each GPU via NVML; {} when absent."""
    try:
        import pynvml
    except ImportError:
        return {"nvml": "nvidia-ml-py not installed"}
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound without a GPU driver
        return {"nvml": f"unavailable: {type(exc).__name__}"}
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            gpus.append(_gpu_state(pynvml, handle, index))
        return {"nvml": "ok", "driver": _decode(pynvml.nvmlSystemGetDriverVersion()),
                "cuda_driver": pynvml.nvmlSystemGetCudaDriverVersion(), "gpus": gpus}
    finally:
        pynvml.nvmlShutdown()


def _gpu_state(pynvml: Any, handle: Any, index: int) -> dict[str, Any]:
    def safe(fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception:
            return None

    memory = safe(pynvml.nvmlDeviceGetMemoryInfo, handle)
    return {
        "index": index,
        "name": _decode(safe(pynvml.nvmlDeviceGetName, handle)),
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
    if torch.cuda.is_available():
        info.update(cuda_available=True, cudnn=torch.backends.cudnn.version(),
                    devices=[torch.cuda.get_device_name(i)
                             for i in range(torch.cuda.device_count())])
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
