#!/usr/bin/env python3
"""Do the APIs attnbench relies on on a GPU exist on this stack? A few-second check, run by
scripts/gpu_validate.sh's environment step before anything is measured.

One line per check: ``ok``, ``missing`` (the harness would fail or silently lose a figure),
``n/a`` (a CUDA-only check without CUDA: the attribute checks still run) or ``failed`` (the call
raised). Exit status 1 when any check is missing or failed, else 0.

What is checked, and where the harness reads it:
- JAX's GPU memory fraction (harness.measure.device_setup): the CUDA plugin's options are built
  by ``jaxlib.xla_client.generate_pjrt_gpu_plugin_options`` from XLA_CLIENT_MEM_FRACTION (or the
  deprecated XLA_PYTHON_CLIENT_MEM_FRACTION); called here with the variable set.
- torch's allocator figures (torch_fw.memory_peak, accuracy.memory): reset_peak_memory_stats,
  memory_allocated, max_memory_allocated, memory_stats; JAX's device memory_stats() keys
  (jax_fw): peak_bytes_in_use, bytes_in_use.
- the L2 size (torch_fw's flush buffer): get_device_properties().L2_cache_size.
- torch's fp32 matmul precision (harness.contract.precision): the ``fp32_precision`` setting of
  newer torch, else the legacy ``allow_tf32``.
- SDPA backend pinning (implementations/sdpa.py): torch.nn.attention.sdpa_kernel, SDPBackend.
- CUDA graphs and events (harness.measure.timers).
- every pynvml function and constant the harness names (found in harness/ by their names).
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NVML_NAME = re.compile(r"\b(?:pynvml|nvml)\.((?:nvml|NVML_)\w+)")
TORCH_CUDA_FUNCTIONS = ("memory_stats", "reset_peak_memory_stats", "memory_allocated",
                        "max_memory_allocated", "get_device_properties",
                        "set_per_process_memory_fraction", "CUDAGraph", "graph", "Event",
                        "Stream", "synchronize")
SDPA_BACKENDS = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH")
JAX_MEMORY_KEYS = ("peak_bytes_in_use", "bytes_in_use")


@dataclass
class Check:
    name: str
    status: str     # ok, missing, n/a, failed
    detail: str = ""

    def line(self) -> str:
        return f"{self.status:8s} {self.name}" + (f": {self.detail}" if self.detail else "")


def nvml_names(root: Path = ROOT) -> list[str]:
    """The pynvml functions and constants the harness's sources name (pure: reads files)."""
    names: set[str] = set()
    for path in (root / "harness").rglob("*.py"):
        names.update(NVML_NAME.findall(path.read_text(encoding="utf-8")))
    return sorted(names)


def attribute(name: str, owner: object, attr: str) -> Check:
    return Check(name, "ok" if hasattr(owner, attr) else "missing")


def jax_checks(cuda: bool) -> list[Check]:
    try:
        from jaxlib import xla_client
    except Exception as exc:
        return [Check("jaxlib", "n/a", f"not importable ({type(exc).__name__})")]
    checks = []
    options = getattr(xla_client, "generate_pjrt_gpu_plugin_options", None)
    name = "jax CUDA plugin reads XLA_CLIENT_MEM_FRACTION"
    if options is None:
        checks.append(Check(name, "missing", "no jaxlib.xla_client."
                                             "generate_pjrt_gpu_plugin_options"))
    else:
        saved = {k: os.environ.pop(k, None) for k in ("XLA_CLIENT_MEM_FRACTION",
                                                      "XLA_PYTHON_CLIENT_MEM_FRACTION")}
        try:
            for variable in ("XLA_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_MEM_FRACTION"):
                os.environ[variable] = "0.125"
                try:
                    got = options().get("memory_fraction")
                finally:
                    del os.environ[variable]
                checks.append(Check(name.replace("XLA_CLIENT_MEM_FRACTION", variable),
                                    "ok" if got == 0.125 else "missing",
                                    "" if got == 0.125 else f"memory_fraction={got!r}"))
        except Exception as exc:
            checks.append(Check(name, "failed", f"{type(exc).__name__}: {exc}"))
        finally:
            os.environ.update({k: v for k, v in saved.items() if v is not None})
    name = "jax GPU memory_stats() keys"
    if not cuda:
        checks.append(Check(name, "n/a", "no CUDA"))
        return checks
    try:
        import jax

        stats = jax.devices("gpu")[0].memory_stats() or {}
        absent = [key for key in JAX_MEMORY_KEYS if key not in stats]
        checks.append(Check(name, "missing" if absent else "ok",
                            f"absent: {', '.join(absent)}" if absent else ""))
    except Exception as exc:
        checks.append(Check(name, "failed", f"{type(exc).__name__}: {exc}"))
    return checks


def torch_checks(cuda: bool) -> list[Check]:
    try:
        import torch
    except Exception as exc:
        return [Check("torch", "missing", f"not importable ({type(exc).__name__})")]
    checks = [attribute(f"torch.cuda.{f}", torch.cuda, f) for f in TORCH_CUDA_FUNCTIONS]
    matmul = torch.backends.cuda.matmul
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if hasattr(matmul, "fp32_precision"):
                checks.append(Check("torch fp32 matmul precision", "ok",
                                    f"fp32_precision={matmul.fp32_precision!r}"))
            elif hasattr(matmul, "allow_tf32"):
                checks.append(Check("torch fp32 matmul precision", "ok",
                                    f"legacy allow_tf32={matmul.allow_tf32}"))
            else:
                checks.append(Check("torch fp32 matmul precision", "missing"))
        except Exception as exc:
            checks.append(Check("torch fp32 matmul precision", "failed",
                                f"{type(exc).__name__}: {exc}"))
    if caught:
        checks[-1].detail += f" (warned: {str(caught[0].message).splitlines()[0][:120]})"
    try:
        from torch.nn import attention

        checks.append(attribute("torch.nn.attention.sdpa_kernel", attention, "sdpa_kernel"))
        backend = getattr(attention, "SDPBackend", None)
        absent = [b for b in SDPA_BACKENDS if not hasattr(backend, b)]
        checks.append(Check("torch.nn.attention.SDPBackend", "missing" if absent else "ok",
                            f"absent: {', '.join(absent)}" if absent else ""))
    except Exception as exc:
        checks.append(Check("torch.nn.attention", "missing", f"{type(exc).__name__}: {exc}"))
    if not cuda:
        props = getattr(torch._C, "_CudaDeviceProperties", None)
        present = props is not None and hasattr(props, "L2_cache_size")
        checks.append(Check("get_device_properties().L2_cache_size", "n/a",
                            "no CUDA" + ("; the attribute exists" if present else "")))
        checks.append(Check("torch.cuda allocator calls", "n/a", "no CUDA"))
        return checks
    try:
        l2 = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", None)
        checks.append(Check("get_device_properties().L2_cache_size",
                            "ok" if l2 else "missing", f"{l2} bytes" if l2 else ""))
        torch.cuda.reset_peak_memory_stats(0)
        x = torch.empty(1 << 20, dtype=torch.uint8, device="cuda")
        peak = torch.cuda.max_memory_allocated(0)
        stats = torch.cuda.memory_stats(0)
        del x
        checks.append(Check("torch.cuda allocator calls", "ok" if peak >= 1 << 20 else "missing",
                            f"peak {peak} bytes, {len(stats)} memory_stats keys"))
    except Exception as exc:
        checks.append(Check("torch.cuda allocator calls", "failed", f"{type(exc).__name__}: {exc}"))
    return checks


def nvml_checks(cuda: bool, root: Path = ROOT) -> list[Check]:
    try:
        import pynvml
    except Exception as exc:
        return [Check("pynvml", "n/a" if not cuda else "missing",
                      f"not importable ({type(exc).__name__}); records carry no clocks")]
    names = nvml_names(root)
    absent = [n for n in names if not hasattr(pynvml, n)]
    checks = [Check(f"pynvml names the harness uses ({len(names)})",
                    "missing" if absent else "ok", ", ".join(absent))]
    if not cuda:
        checks.append(Check("pynvml calls", "n/a", "no CUDA"))
        return checks
    try:
        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            clock = pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)
            checks.append(Check("pynvml calls", "ok", f"SM clock {clock} MHz"))
        finally:
            pynvml.nvmlShutdown()
    except Exception as exc:
        checks.append(Check("pynvml calls", "failed", f"{type(exc).__name__}: {exc}"))
    return checks


def cuda_present() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def run_checks(cuda: bool | None = None) -> list[Check]:
    cuda = cuda_present() if cuda is None else cuda
    return torch_checks(cuda) + jax_checks(cuda) + nvml_checks(cuda)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # --device cpu: the attribute checks only; else the CUDA calls too, where CUDA is present
    cpu = "--device" in argv and argv[argv.index("--device") + 1] == "cpu"
    checks = run_checks(False if cpu else None)
    for check in checks:
        print(check.line())
    bad = [c.name for c in checks if c.status in ("missing", "failed")]
    print(f"api probe: {len(checks)} checks, " +
          (f"missing or failed: {', '.join(bad)}" if bad else "none missing"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
