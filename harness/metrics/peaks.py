"""Peaks of the machine: measured by two micro-benchmarks, and data-sheet peaks of known GPUs.

Measured (``measure_peaks``, run in a worker at the start of a sweep, a few seconds):
- ``matmul_flops_per_s``: a large square GEMM, 2 * N^3 FLOPs per call, the best of a few
  timed calls after a warm-up (float32 always; float16 and bfloat16 on a GPU);
- ``memory_bytes_per_s``: a large copy ``dst.copy_(src)`` (on CPU also memcpy through
  ``numpy.copyto``, whichever is faster), counted as bytes read plus bytes written (the STREAM
  "copy" convention: 2 * size per call), best of a few calls.
The best call, not the median, because a peak is what the machine can reach: the timed
points of a sweep are medians, so with a real peak no point can exceed 100% of it.

Table (``table_peaks``): dense (no 2:4 sparsity) tensor-core peaks and memory bandwidth from the
vendors' data sheets, for GPUs recognised by name. The float16 figure is the one with float32
accumulation (what torch and cuBLAS use for float16 matmuls); on data-center parts it equals the
float16-accumulate figure, on the RTX 4090 it is half of it.

The results are cached per machine (``cache_file``) so a later run can reuse them
(``--reuse-peaks``) instead of measuring again.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from harness.contract.registry import device_kind

GEMM_N = {"cpu": 2048, "cuda": 8192}
COPY_BYTES = {"cpu": 256 * 1024 * 1024, "cuda": 2 * 1024 ** 3}
REPEATS = {"cpu": 5, "cuda": 20}
WARMUP = 2
GPU_DTYPES = ("float32", "bfloat16", "float16")
TERA = 1e12


@dataclass(frozen=True)
class GpuPeak:
    """One GPU's dense data-sheet peaks (FLOP/s by dtype; bytes/s of its memory)."""

    name: str
    match: tuple[str, ...]           # all of these (lower case) in the device name
    matmul_flops_per_s: dict[str, float]
    memory_bytes_per_s: float
    citation: str
    exclude: tuple[str, ...] = ()    # none of these in the device name


def _tf(**values: float) -> dict[str, float]:
    return {k: v * TERA for k, v in values.items()}


# Dense peaks (sparsity figures in the data sheets are twice these). float32: the non-tensor
# FP32 rate (torch's default float32 matmul precision "highest" does not use TF32); tf32: the
# TF32 tensor-core rate, which applies when TF32 is allowed.
GPU_TABLE: tuple[GpuPeak, ...] = (
    GpuPeak("H100 SXM", ("h100", "hbm3"), _tf(float32=67, tf32=494.5, bfloat16=989.5,
                                              float16=989.5), 3.35e12,
            "NVIDIA H100 Tensor Core GPU data sheet (H100 SXM column: FP32 67 TFLOPS, TF32 "
            "989 / BF16 1979 / FP16 1979 TFLOPS with sparsity, GPU memory bandwidth 3.35 TB/s)",
            exclude=("pcie", "nvl")),
    GpuPeak("H100 PCIe", ("h100", "pcie"), _tf(float32=51, tf32=378, bfloat16=756,
                                               float16=756), 2.0e12,
            "NVIDIA H100 Tensor Core GPU data sheet (H100 PCIe column: FP32 51 TFLOPS, TF32 "
            "756 / BF16 1513 / FP16 1513 TFLOPS with sparsity, GPU memory bandwidth 2 TB/s)"),
    GpuPeak("H200 SXM", ("h200",), _tf(float32=67, tf32=494.5, bfloat16=989.5,
                                       float16=989.5), 4.8e12,
            "NVIDIA H200 Tensor Core GPU data sheet (H200 SXM column: FP32 67 TFLOPS, TF32 "
            "989 / BF16 1979 / FP16 1979 TFLOPS with sparsity, GPU memory bandwidth 4.8 TB/s)",
            exclude=("nvl",)),
    GpuPeak("A100 80GB SXM", ("a100", "80g"), _tf(float32=19.5, tf32=156, bfloat16=312,
                                                  float16=312), 2.039e12,
            "NVIDIA A100 Tensor Core GPU data sheet (FP32 19.5 TFLOPS, TF32 156, BF16/FP16 312 "
            "TFLOPS dense; A100 80GB SXM GPU memory bandwidth 2,039 GB/s)",
            exclude=("pcie",)),
    GpuPeak("A100 80GB PCIe", ("a100", "80g", "pcie"), _tf(float32=19.5, tf32=156,
                                                           bfloat16=312, float16=312),
            1.935e12,
            "NVIDIA A100 Tensor Core GPU data sheet (FP32 19.5 TFLOPS, TF32 156, BF16/FP16 312 "
            "TFLOPS dense; A100 80GB PCIe GPU memory bandwidth 1,935 GB/s)"),
    GpuPeak("A100 40GB", ("a100",), _tf(float32=19.5, tf32=156, bfloat16=312, float16=312),
            1.555e12,
            "NVIDIA A100 Tensor Core GPU data sheet (FP32 19.5 TFLOPS, TF32 156, BF16/FP16 312 "
            "TFLOPS dense; A100 40GB PCIe and SXM GPU memory bandwidth 1,555 GB/s)",
            exclude=("80g",)),
    GpuPeak("L40S", ("l40s",), _tf(float32=91.6, tf32=183, bfloat16=362.05, float16=362.05),
            864e9,
            "NVIDIA L40S GPU data sheet (FP32 91.6 TFLOPS; TF32 183, BF16 362.05, FP16 362.05 "
            "TFLOPS dense; GPU memory bandwidth 864 GB/s)"),
    GpuPeak("L4", ("l4",), _tf(float32=30.3, tf32=60, bfloat16=121, float16=121), 300e9,
            "NVIDIA L4 Tensor Core GPU data sheet (FP32 30.3 TFLOPS; TF32 120, BF16 242, FP16 "
            "242 TFLOPS with sparsity; GPU memory bandwidth 300 GB/s)",
            exclude=("l40",)),
    GpuPeak("RTX 4090", ("4090",), _tf(float32=82.6, tf32=82.6, bfloat16=165.2, float16=165.2),
            1008e9,
            "NVIDIA Ada GPU Architecture whitepaper, GeForce RTX 4090 (FP32 82.6 TFLOPS; peak "
            "FP16 and BF16 tensor TFLOPS with FP32 accumulate 165.2 dense (FP16 with FP16 "
            "accumulate 330.3); TF32 82.6; 1008 GB/s from 21 Gbps GDDR6X on a 384-bit bus)",
            exclude=("laptop", "mobile", "max-q")),
    GpuPeak("MI300X", ("mi300x",), _tf(float32=163.4, tf32=653.7, bfloat16=1307.4,
                                       float16=1307.4), 5.3e12,
            "AMD Instinct MI300X accelerator data sheet (FP32 matrix 163.4 TFLOPS; TF32 653.7, "
            "BF16 1307.4, FP16 1307.4 TFLOPS dense; peak memory bandwidth 5.3 TB/s)"),
)


def table_entry(device_name: str) -> GpuPeak | None:
    """The table's entry for a GPU name as NVML or torch spell it (e.g. 'NVIDIA H100 80GB
    HBM3', 'NVIDIA A100-SXM4-40GB', 'AMD Instinct MI300X'); None when not in the table."""
    name = device_name.lower().replace(" ", "").replace("-", "")
    for entry in GPU_TABLE:
        if all(m.replace(" ", "") in name for m in entry.match) and \
                not any(x.replace(" ", "").replace("-", "") in name for x in entry.exclude):
            return entry
    return None


def table_peaks(device_name: str) -> dict[str, Any] | None:
    """run.json's ``peaks.table`` for a known GPU, else None."""
    entry = table_entry(device_name)
    if entry is None:
        return None
    return {"gpu": entry.name, "device_name": device_name, "source": "table",
            "matmul_flops_per_s": {k: {"value": v, "source": "table"}
                                   for k, v in entry.matmul_flops_per_s.items()},
            "memory_bytes_per_s": {"value": entry.memory_bytes_per_s, "source": "table"},
            "citation": entry.citation}


# -- measuring ---------------------------------------------------------------------------------
@dataclass
class PeakMeasurement:
    value: float                 # FLOP/s or bytes/s of the best call
    method: str
    samples_s: list[float] = field(default_factory=list)
    source: str = "measured"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def best_rate(work_per_call: float, samples_s: list[float]) -> float:
    """Work / the fastest call (a peak is the best the machine reached)."""
    return work_per_call / min(samples_s)


def _time_calls(call: Callable[[], None], sync: Callable[[], None], repeats: int) -> list[float]:
    for _ in range(WARMUP):
        call()
    sync()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        sync()
        samples.append(time.perf_counter() - start)
    return samples


def measure_gemm(device: str, dtype: str, n: int | None = None,
                 repeats: int | None = None) -> PeakMeasurement:
    import torch

    from harness.contract.frameworks.torch_fw import synchronize, torch_dtype

    kind = device_kind(device)
    n = n or GEMM_N[kind]
    repeats = repeats or REPEATS[kind]
    gen = torch.Generator(device=device).manual_seed(0)
    a, b = (torch.randn(n, n, generator=gen, device=device, dtype=torch_dtype(dtype))
            for _ in range(2))
    out = torch.empty(n, n, device=device, dtype=torch_dtype(dtype))
    samples = _time_calls(lambda: torch.matmul(a, b, out=out), lambda: synchronize(device),
                          repeats)
    flops = 2.0 * n ** 3
    return PeakMeasurement(best_rate(flops, samples),
                           f"{n}x{n} @ {n}x{n} {dtype} torch.matmul, 2*N^3 FLOPs per call, "
                           f"best of {repeats} after {WARMUP} warm-up", samples)


def measure_copy(device: str, nbytes: int | None = None,
                 repeats: int | None = None) -> PeakMeasurement:
    import torch

    from harness.contract.frameworks.torch_fw import synchronize

    kind = device_kind(device)
    nbytes = nbytes or COPY_BYTES[kind]
    repeats = repeats or REPEATS[kind]
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.zeros_like(src)   # both touched: no page faults inside the timed copies
    samples = _time_calls(lambda: dst.copy_(src), lambda: synchronize(device), repeats)
    how = "dst.copy_(src)"
    if kind == "cpu":
        # glibc's memcpy (numpy's copy) streams large copies past the cache and reaches about
        # twice torch's copy kernel on some CPUs: the machine's peak is the faster of the two
        import numpy as np

        src_np, dst_np = src.numpy(), dst.numpy()
        memcpy = _time_calls(lambda: np.copyto(dst_np, src_np), lambda: None, repeats)
        if min(memcpy) < min(samples):
            samples, how = memcpy, "numpy.copyto(dst, src), i.e. memcpy; faster than torch's " \
                                   f"copy_ ({2.0 * nbytes / min(samples) / 1e9:.3g} GB/s)"
        else:
            how += f"; faster than numpy.copyto ({2.0 * nbytes / min(memcpy) / 1e9:.3g} GB/s)"
    return PeakMeasurement(best_rate(2.0 * nbytes, samples),
                           f"copy of {nbytes / 2 ** 20:g} MiB float32 ({how}), bytes read + "
                           f"written (STREAM copy), best of {repeats} after {WARMUP} warm-up",
                           samples)


def measure_peaks(device: str) -> dict[str, Any]:
    """Measured peaks of ``device`` (run.json's ``peaks`` without the table and cache info)."""
    import torch

    from harness.contract.precision import matmul_precision

    kind = device_kind(device)
    dtypes = GPU_DTYPES if kind == "cuda" else ("float32",)
    started = time.perf_counter()
    flops = {dtype: measure_gemm(device, dtype).as_dict() for dtype in dtypes}
    copy = measure_copy(device).as_dict()
    return {"device": device, "matmul_flops_per_s": flops, "memory_bytes_per_s": copy,
            "threads": torch.get_num_threads(), "matmul_precision": matmul_precision(),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "measure_s": time.perf_counter() - started}


# -- run.json's peaks and the cache ------------------------------------------------------------
def cache_file(results_root: Path, hardware_id: str, device: str) -> Path:
    """Where the measured peaks of this machine and device are kept between runs."""
    return Path(results_root) / ".peaks" / f"{hardware_id}-{device.replace(':', '')}.json"


def read_cache(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and "matmul_flops_per_s" in data else None


def write_cache(path: Path, peaks: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(peaks, indent=2) + "\n")
    tmp.replace(path)


def with_table(measured: dict[str, Any] | None, gpu_name: str | None,
               reason: str = "peaks not measured") -> dict[str, Any]:
    """run.json's ``peaks``: the measured values at the top level, the data sheet's (for a
    known GPU) under ``table``; either may be missing, with the reason said."""
    peaks: dict[str, Any] = dict(measured or {})
    if measured is None:
        peaks["unavailable"] = reason
    if gpu_name:
        table = table_peaks(gpu_name)
        peaks["table"] = table if table is not None else {
            "unavailable": f"{gpu_name!r} is not in attnbench's table of data-sheet peaks"}
    return peaks


class _Outcome(Protocol):
    status: str
    result: Any
    message: str


def obtain(devices: list[str], measure: Callable[[str], _Outcome], *, cache_root: Path,
           hardware_id: str, reuse: bool,
           gpu_names: Callable[[str], str | None] = lambda device: None) -> dict[str, Any]:
    """device -> run.json's peaks: measured now by ``measure(device)`` (a worker) and cached,
    or, with ``reuse``, read from the cache when it is there."""
    out: dict[str, Any] = {}
    for device in devices:
        path = cache_file(cache_root, hardware_id, device)
        cached = read_cache(path) if reuse else None
        measured, reason = None, "peaks not measured"
        if cached is not None:
            measured = {**cached, "cached_from": str(path)}
        else:
            outcome = measure(device)
            if outcome.status == "ok" and isinstance(outcome.result, dict):
                measured = outcome.result
                try:
                    write_cache(path, measured)
                except OSError:
                    pass   # a read-only results folder: the peaks are still in run.json
            else:
                reason = f"peaks not measured: worker {outcome.status}: {outcome.message}"
        gpu = gpu_names(device) if device_kind(device) == "cuda" else None
        out[device] = with_table(measured, gpu, reason)
    return out


def flops_peak(peaks: dict[str, Any] | None, dtype: str) -> float | None:
    """The measured matmul FLOP/s for dtype (the ceiling % of peak is taken against)."""
    entry = ((peaks or {}).get("matmul_flops_per_s") or {}).get(dtype)
    return float(entry["value"]) if entry and entry.get("value") else None


def bandwidth_peak(peaks: dict[str, Any] | None) -> float | None:
    entry = (peaks or {}).get("memory_bytes_per_s")
    return float(entry["value"]) if entry and entry.get("value") else None


def gpu_name(machine: dict[str, Any], device: str) -> str | None:
    """The name of ``cuda:N`` in a machine fingerprint (NVML's names, else torch's)."""
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    names = [g.get("name") for g in (machine.get("gpu") or {}).get("gpus", [])] or \
        (machine.get("cuda") or {}).get("devices", [])
    return str(names[index]) if index < len(names) else None


def peaks_metadata(peaks: dict[str, Any]) -> dict[str, Any]:
    """run.json: ``peaks`` of the (first) device, every device's under ``peaks_by_device``
    when there are several, and the float32 matmul precision the peaks were measured under."""
    if not peaks:
        return {}
    from harness.contract.precision import matmul_precision

    first = peaks[sorted(peaks)[0]]
    meta: dict[str, Any] = {"peaks": first,
                            "matmul_precision": first.get("matmul_precision")
                            or matmul_precision()}
    if len(peaks) > 1:
        meta["peaks_by_device"] = peaks
    return meta
