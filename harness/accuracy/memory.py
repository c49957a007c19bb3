"""Peak memory of a training run: the CUDA allocator's peak, or the process's peak RSS on CPU.

The CPU readers are the runner's (harness.measure.timing); only the training-specific wording is here.
"""

from __future__ import annotations

import torch

from harness.measure.memory import peak_rss_bytes, reset_peak_rss

CPU_METHOD = "process peak RSS (VmHWM, reset before training; includes the data and the model)"
CUDA_METHOD = "torch.cuda.max_memory_allocated (reset before training)"


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        reset_peak_rss()


def read_peak(device: torch.device) -> tuple[int | None, str]:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), CUDA_METHOD
    peak = peak_rss_bytes()
    return (peak, CPU_METHOD) if peak is not None else (None, "")
