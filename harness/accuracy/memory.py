"""Peak memory of a training run: the CUDA allocator's peak, or the process's peak RSS on CPU."""

from __future__ import annotations

from pathlib import Path

import torch

CPU_METHOD = "process peak RSS (VmHWM, reset before training; includes the data and the model)"
CUDA_METHOD = "torch.cuda.max_memory_allocated (reset before training)"


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def read_peak(device: torch.device) -> tuple[int | None, str]:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), CUDA_METHOD
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024, CPU_METHOD
    except OSError:
        pass
    return None, ""
