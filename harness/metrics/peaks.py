"""Peaks of the machine: measured by two micro-benchmarks, and data-sheet peaks of known GPUs.

Measured (``measure_peaks``, run in a worker at the start of a sweep and again at its end, a
few seconds each; ``run_bench.py report --measure-peaks`` adds one more on the same machine):
- ``matmul_flops_per_s``: a large square GEMM, 2 * N^3 FLOPs per call (float32 always;
  float16 and bfloat16 on a GPU);
- ``memory_bytes_per_s``: a large copy ``dst.copy_(src)`` (on CPU also memcpy through
  ``numpy.copyto``, whichever is faster), counted as bytes read plus bytes written (the STREAM
  "copy" convention: 2 * size per call).
Each is timed until it holds (``StopRule``): until the best call has not improved by more than
``tolerance`` in the last ``window`` calls and at least ``min_work_s`` of calls were timed, or
until ``max_s`` (then the measurement says the cap was reached, not that it is stable). A
machine still warming up or with a neighbour starting beside it keeps improving, and a few
fixed calls would stop while the samples still fall. The rate is the work over the best call,
not the median, because a peak is what the machine can reach: the timed points of a sweep are
medians, so against a peak that holds no point exceeds 100% of it.

The run's peak is the best of its measurements (``add_measurement``); run.json keeps every
measurement under ``peaks.measurements`` with its role (start, end, report), its start and end,
its threads and whether it was stable. A point above 100% of the peak known when its record is
written is marked (``under_measured``): the record names the measurement it beat instead of
showing more than 100% silently.

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
@dataclass(frozen=True)
class StopRule:
    """When a peak's timed calls stop: the best call has held (no new best by more than
    ``tolerance`` in the last ``window`` calls) after at least ``min_samples`` calls and
    ``min_work_s`` seconds of calls; or ``max_s`` seconds of measuring (warm-up included) have
    passed, whatever the samples do."""

    min_samples: int = 5
    window: int = 3                # must be below min_samples
    tolerance: float = 0.02
    min_work_s: float = 1.0
    max_s: float = 4.0


STOP_RULES = {"cpu": StopRule(), "cuda": StopRule(min_samples=10, window=5, max_s=6.0)}


@dataclass
class Sampling:
    """The timed calls of one peak and why they stopped."""

    samples_s: list[float]
    stable: bool          # the rule's hold condition was met (False: the time cap ended it)
    stop: str             # the reason in words
    elapsed_s: float      # from the first warm-up call to the last sample


def held(samples_s: list[float], rule: StopRule) -> bool:
    """True when no sample among the last ``rule.window`` beat the best before them by more
    than ``rule.tolerance`` (relative), with at least ``min_samples`` samples and
    ``min_work_s`` seconds of them."""
    if len(samples_s) < max(rule.min_samples, rule.window + 1) or \
            sum(samples_s) < rule.min_work_s:
        return False
    before = min(samples_s[:-rule.window])
    return min(samples_s[-rule.window:]) >= before * (1.0 - rule.tolerance)


def sample_until_stable(call: Callable[[], None], sync: Callable[[], None], rule: StopRule,
                        clock: Callable[[], float] = time.perf_counter,
                        warmup: int = 1) -> Sampling:
    """Time ``call`` (then ``sync``) until ``held`` or the rule's time cap. Pure but for what
    ``call`` and ``clock`` do: a test passes a fake clock that a fake call advances."""
    begin = clock()
    for _ in range(warmup):
        call()
    sync()
    samples: list[float] = []
    while True:
        start = clock()
        call()
        sync()
        now = clock()
        samples.append(now - start)
        if held(samples, rule):
            return Sampling(samples, True, f"stable: no new best by more than "
                            f"{rule.tolerance:.0%} in the last {rule.window} calls, "
                            f"{sum(samples):.2g} s of calls", now - begin)
        if now - begin >= rule.max_s:
            return Sampling(samples, False, f"time cap {rule.max_s:g} s reached before the "
                            f"best call held", now - begin)


@dataclass
class PeakMeasurement:
    value: float                 # FLOP/s or bytes/s of the best call
    method: str
    samples_s: list[float] = field(default_factory=list)
    source: str = "measured"
    stable: bool | None = None   # the best call held (StopRule); False: the time cap ended it
    stop: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def best_rate(work_per_call: float, samples_s: list[float]) -> float:
    """Work / the fastest call (a peak is the best the machine reached)."""
    return work_per_call / min(samples_s)


def _sampled(call: Callable[[], None], sync: Callable[[], None],
             rule: StopRule, repeats: int | None) -> Sampling:
    """A fixed number of calls when ``repeats`` is given (tests of the micro-benchmarks
    themselves), else until the rule stops."""
    if repeats is None:
        return sample_until_stable(call, sync, rule, warmup=WARMUP)
    begin = time.perf_counter()
    for _ in range(WARMUP):
        call()
    sync()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        sync()
        samples.append(time.perf_counter() - start)
    return Sampling(samples, held(samples, rule), f"{repeats} calls asked for",
                    time.perf_counter() - begin)


def _how(sampling: Sampling) -> str:
    return f"best of {len(sampling.samples_s)} after {WARMUP} warm-up ({sampling.stop})"


def measure_gemm(device: str, dtype: str, n: int | None = None,
                 repeats: int | None = None, rule: StopRule | None = None) -> PeakMeasurement:
    import torch

    from harness.contract.frameworks.torch_fw import synchronize, torch_dtype

    kind = device_kind(device)
    n = n or GEMM_N[kind]
    gen = torch.Generator(device=device).manual_seed(0)
    a, b = (torch.randn(n, n, generator=gen, device=device, dtype=torch_dtype(dtype))
            for _ in range(2))
    out = torch.empty(n, n, device=device, dtype=torch_dtype(dtype))
    sampling = _sampled(lambda: torch.matmul(a, b, out=out), lambda: synchronize(device),
                        rule or STOP_RULES[kind], repeats)
    flops = 2.0 * n ** 3
    return PeakMeasurement(best_rate(flops, sampling.samples_s),
                           f"{n}x{n} @ {n}x{n} {dtype} torch.matmul, 2*N^3 FLOPs per call, "
                           + _how(sampling), sampling.samples_s, stable=sampling.stable,
                           stop=sampling.stop)


def measure_copy(device: str, nbytes: int | None = None,
                 repeats: int | None = None, rule: StopRule | None = None) -> PeakMeasurement:
    import torch

    from harness.contract.frameworks.torch_fw import synchronize

    kind = device_kind(device)
    nbytes = nbytes or COPY_BYTES[kind]
    rule = rule or STOP_RULES[kind]
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.zeros_like(src)   # both touched: no page faults inside the timed copies
    sampling = _sampled(lambda: dst.copy_(src), lambda: synchronize(device), rule, repeats)
    how = "dst.copy_(src)"
    if kind == "cpu":
        # glibc's memcpy (numpy's copy) streams large copies past the cache and reaches about
        # twice torch's copy kernel on some CPUs: the machine's peak is the faster of the two
        import numpy as np

        src_np, dst_np = src.numpy(), dst.numpy()
        memcpy = _sampled(lambda: np.copyto(dst_np, src_np), lambda: None, rule, repeats)
        if min(memcpy.samples_s) < min(sampling.samples_s):
            how = "numpy.copyto(dst, src), i.e. memcpy; faster than torch's copy_ " \
                  f"({2.0 * nbytes / min(sampling.samples_s) / 1e9:.3g} GB/s)"
            sampling = memcpy
        else:
            how += f"; faster than numpy.copyto ({2.0 * nbytes / min(memcpy.samples_s) / 1e9:.3g}" \
                   " GB/s)"
    return PeakMeasurement(best_rate(2.0 * nbytes, sampling.samples_s),
                           f"copy of {nbytes / 2 ** 20:g} MiB float32 ({how}), bytes read + "
                           f"written (STREAM copy), " + _how(sampling), sampling.samples_s,
                           stable=sampling.stable, stop=sampling.stop)


def measure_peaks(device: str, role: str = "start", threads: int | None = None) -> dict[str, Any]:
    """One measurement of the peaks of ``device`` (run.json's ``peaks.measurements`` entry):
    ``role`` says when in the run it was taken (start, end, report). ``threads``: the torch
    thread count to measure with, the one the points of the run use (default: the process's,
    which every worker of a run shares)."""
    import torch

    from harness.contract.precision import matmul_precision

    if threads is not None and threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    kind = device_kind(device)
    dtypes = GPU_DTYPES if kind == "cuda" else ("float32",)
    started_at = _now()
    started = time.perf_counter()
    flops = {dtype: measure_gemm(device, dtype).as_dict() for dtype in dtypes}
    copy = measure_copy(device).as_dict()
    stable = all(e["stable"] for e in (*flops.values(), copy))
    return {"device": device, "role": role, "matmul_flops_per_s": flops,
            "memory_bytes_per_s": copy, "stable": stable,
            "threads": torch.get_num_threads(), "matmul_precision": matmul_precision(),
            "measured_at": started_at, "started_at": started_at, "ended_at": _now(),
            "measure_s": time.perf_counter() - started}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# -- a run's measurements and its peak ---------------------------------------------------------
MEASUREMENT_KEYS = ("matmul_flops_per_s", "memory_bytes_per_s")
# what run.json's peaks hold besides the measurements' values (kept as they are)
_RUN_KEYS = ("table", "unavailable", "measurements", "cached_from", "remeasure_failed",
             "earlier_machines")
# the first measurement's facts run.json's peaks repeat at the top level
_TOP_KEYS = ("device", "threads", "matmul_precision", "measured_at")


def measurements(peaks: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The measurements run.json's ``peaks`` holds: its ``measurements`` list, or, for a
    run.json with one measured peak at the top level (written before the list existed, or a
    cached peak), that one as the start measurement."""
    peaks = peaks or {}
    if isinstance(peaks.get("measurements"), list):
        return list(peaks["measurements"])
    if not peaks.get("matmul_flops_per_s") and not peaks.get("memory_bytes_per_s"):
        return []
    single = {k: v for k, v in peaks.items() if k not in _RUN_KEYS}
    single.setdefault("role", "start")
    return [single]


def describe(measurement: dict[str, Any], index: int | None = None) -> str:
    """How a measurement is named in marks and tables: 'start measurement (2025-01-01T10:00:00)',
    with ', machine busy' where other processes took the CPUs it needed (its
    ``machine_state``, harness.measure.worker.peaks_task)."""
    role = measurement.get("role") or "start"
    when = measurement.get("started_at") or measurement.get("measured_at") or ""
    busy = (measurement.get("machine_state") or {}).get("busy")
    return f"{role} measurement" + (f" #{index}" if index is not None and role == "report"
                                    else "") + (f" ({when})" if when else "") + \
        (", machine busy" if busy else "")


def _best_entry(entries: list[tuple[int, dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    index, measurement, entry = max(entries, key=lambda e: float(e[2].get("value") or 0.0))
    return {**entry, "measurement": index, "role": measurement.get("role") or "start",
            "of": describe(measurement)}


def best_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's peak from its measurements: each quantity (GEMM per dtype, copy) the best
    value any measurement reached, with which measurement (``measurement``: its index,
    ``role``, ``of``: its description)."""
    flops: dict[str, list] = {}
    copies: list = []
    for index, m in enumerate(runs):
        for dtype, entry in (m.get("matmul_flops_per_s") or {}).items():
            if entry and entry.get("value"):
                flops.setdefault(dtype, []).append((index, m, entry))
        copy = m.get("memory_bytes_per_s") or {}
        if copy.get("value"):
            copies.append((index, m, copy))
    best: dict[str, Any] = {"matmul_flops_per_s": {d: _best_entry(e) for d, e in flops.items()}}
    if copies:
        best["memory_bytes_per_s"] = _best_entry(copies)
    return best


def add_measurement(peaks: dict[str, Any] | None, measured: dict[str, Any],
                    role: str | None = None) -> dict[str, Any]:
    """run.json's ``peaks`` with one more measurement: kept in ``measurements``, and the
    top-level values (what % of peak is taken against) the best of them all."""
    peaks = dict(peaks or {})
    measured = dict(measured)
    if role is not None:
        measured["role"] = role
    return with_measurements(peaks, [*measurements(peaks), measured])


def with_measurements(peaks: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """``peaks`` (its table, cache note) with these measurements and their best at the top:
    the first measurement's device, threads and precision, the best values."""
    out = {k: v for k, v in peaks.items()
           if k in ("table", "cached_from", "remeasure_failed", "earlier_machines")}
    if not runs:
        return {**out, "unavailable": peaks.get("unavailable", "peaks not measured")}
    first = {k: runs[0][k] for k in _TOP_KEYS if k in runs[0]}
    return {**first, **best_of(runs), **out, "measurements": runs}


def _identity(measurement: dict[str, Any]) -> str:
    return json.dumps(measurement, sort_keys=True, default=str)


def by_device(meta: dict[str, Any]) -> dict[str, Any]:
    """device -> peaks of a run.json (``peaks_by_device``, else its one ``peaks``)."""
    if meta.get("peaks_by_device"):
        return dict(meta["peaks_by_device"])
    return {meta["peaks"].get("device", "cpu"): meta["peaks"]} if meta.get("peaks") else {}


def with_earlier(peaks: dict[str, Any], earlier_meta: dict[str, Any] | None,
                 hardware_id: str) -> dict[str, Any]:
    """device -> peaks of a resumed run: the measurements of the run.json it resumes
    (``earlier_meta``) first, then this session's, each measurement once (a cache read by
    --reuse-peaks may hold earlier ones again), the best of all at the top. Measurements of
    another machine (a run resumed elsewhere) are no roof for this one: they are kept under
    ``earlier_machines`` by hardware id, out of the best."""
    earlier = by_device(earlier_meta or {})
    if not earlier:
        return peaks
    made_on = str(((earlier_meta or {}).get("machine") or {}).get("hardware_id") or "")
    out: dict[str, Any] = {}
    for device, current in peaks.items():
        before = earlier.get(device) or {}
        if made_on and made_on != hardware_id:
            if not measurements(before):
                out[device] = current
                continue
            others = {**(current.get("earlier_machines") or {}),
                      **(before.get("earlier_machines") or {}),
                      made_on: {"measurements": measurements(before)}}
            out[device] = {**current, "earlier_machines": others}
            continue
        merged = {**current}
        if before.get("earlier_machines"):
            merged["earlier_machines"] = {**before["earlier_machines"],
                                          **(current.get("earlier_machines") or {})}
        out[device] = with_measurements(merged, once([*measurements(before),
                                                      *measurements(current)]))
    return out


def once(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The measurements in order, each once."""
    out, seen = [], set()
    for m in runs:
        if _identity(m) not in seen:
            seen.add(_identity(m))
            out.append(m)
    return out


def combine(first: dict[str, Any] | None, other: dict[str, Any]) -> dict[str, Any]:
    """The peaks of one device of one machine from two run.json's (a merge of its runs):
    ``first`` as it is when ``other`` adds no measurement, else every measurement of both,
    each once, the best at the top."""
    if not first:
        return other
    runs = once([*measurements(first), *measurements(other)])
    if len(runs) == len(measurements(first)):
        return first
    return with_measurements(first, runs)


def roofs(peaks: dict[str, Any] | None) -> tuple[dict[str, float], float | None]:
    """(dtype -> GEMM FLOP/s, copy bytes/s): the run's best over every measurement."""
    best = best_of(measurements(peaks))
    flops = {d: float(e["value"]) for d, e in best["matmul_flops_per_s"].items()}
    copy = best.get("memory_bytes_per_s")
    return flops, float(copy["value"]) if copy else None


# -- above the roof ----------------------------------------------------------------------------
# a point is marked above this % of a peak: a median at a peak's best call is not more than the
# peak, so anything above 100 is a peak measured too low (or a wrong traffic model)
ROOF_PCT = 100.0


def under_measured(pct_peak_flops: float | None, pct_peak_bandwidth: float | None,
                   peaks: dict[str, Any] | None, dtype: str) -> str:
    """'' when the point is within the peaks; else which peak it beat and by how much, e.g.
    'float32 GEMM 133% of 1.44e+11 FLOP/s (start measurement (2025-...))'."""
    parts = []
    flop = ((peaks or {}).get("matmul_flops_per_s") or {}).get(dtype) or {}
    if pct_peak_flops is not None and pct_peak_flops > ROOF_PCT and flop.get("value"):
        parts.append(f"{dtype} GEMM {pct_peak_flops:.0f}% of {flop['value']:.3g} FLOP/s "
                     f"({_of(peaks, flop)})")
    copy = (peaks or {}).get("memory_bytes_per_s") or {}
    if pct_peak_bandwidth is not None and pct_peak_bandwidth > ROOF_PCT and copy.get("value"):
        parts.append(f"copy {pct_peak_bandwidth:.0f}% of {copy['value']:.3g} B/s "
                     f"({_of(peaks, copy)})")
    return "; ".join(parts)


def _of(peaks: dict[str, Any] | None, entry: dict[str, Any]) -> str:
    if entry.get("of"):
        return entry["of"]
    runs = measurements(peaks)
    return describe(runs[0]) if runs else "measured peak"


def peaks_against(peaks: dict[str, Any] | None) -> str:
    """What a record's % of peak is taken against: the measurement(s) known when it was
    written, or why there is none."""
    runs = measurements(peaks)
    if not runs:
        return (peaks or {}).get("unavailable") or "peaks not measured"
    return "best of " + ", ".join(describe(m) for m in runs) if len(runs) > 1 \
        else describe(runs[0])


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
    if measured is None or not measurements(measured):
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
    """device -> run.json's peaks: measured now by ``measure(device)`` (a worker; the start
    measurement) and cached, or, with ``reuse``, read from the cache when it is there."""
    out: dict[str, Any] = {}
    for device in devices:
        path = cache_file(cache_root, hardware_id, device)
        cached = read_cache(path) if reuse else None
        reason = "peaks not measured"
        if cached is not None:
            peaks = {**with_measurements({}, measurements(cached)), "cached_from": str(path)}
        else:
            outcome = measure(device)
            if outcome.status == "ok" and isinstance(outcome.result, dict):
                peaks = add_measurement({}, outcome.result, outcome.result.get("role", "start"))
                _cache(path, peaks)
            else:
                reason = f"peaks not measured: worker {outcome.status}: {outcome.message}"
                peaks = None
        gpu = gpu_names(device) if device_kind(device) == "cuda" else None
        out[device] = with_table(peaks, gpu, reason)
    return out


def measure_again(peaks: dict[str, Any], measure: Callable[[str], _Outcome], role: str, *,
                  cache_root: Path | None = None, hardware_id: str = "") -> dict[str, Any]:
    """device -> run.json's peaks with one more measurement of each device (``role``: end of
    the run, or report), the best of all at the top, and the cache updated with it. A worker
    that fails adds nothing (its reason goes under ``remeasure_failed``)."""
    out: dict[str, Any] = {}
    for device, current in peaks.items():
        outcome = measure(device)
        if outcome.status == "ok" and isinstance(outcome.result, dict):
            updated = add_measurement(current, outcome.result, role)
            if cache_root is not None:
                _cache(cache_file(cache_root, hardware_id, device),
                       {k: v for k, v in updated.items() if k != "table"})
        else:
            updated = {**current, "remeasure_failed": f"{role} measurement: worker "
                                                      f"{outcome.status}: {outcome.message}"}
        out[device] = updated
    return out


def _cache(path: Path, peaks: dict[str, Any]) -> None:
    try:
        write_cache(path, peaks)
    except OSError:
        pass   # a read-only results folder: the peaks are still in run.json


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
