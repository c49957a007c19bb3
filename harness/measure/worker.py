"""What runs inside a worker process: one task, one result dict, exceptions turned into status.

The tasks (a one-shot worker runs one; a reused worker, harness.measure.pool, runs many):
- ``probe_task``: the probe (harness.contract.probe: a real tiny run) and the correctness gate
  for a set of (implementation, device, dtype, causal) combinations, as ProbeResults;
- ``memory_task``: the peak-memory pass of one point;
- ``timing_task``: the timing pass of one point, plus output sanity and fidelity (and, on a
  GPU, the timer chosen by ``--timer``, NVTX ranges and NVML clock samples);
- ``point_task``: a reused worker's whole point: the memory pass, then the timing pass on the
  same workload (one build of the inputs, one compilation: the memory pass's first call is the
  cold one, recorded as the compilation);
- ``peaks_task``: the machine's measured GEMM and copy peaks on one device.

glibc's malloc is set per pass, in both kinds of worker: the memory pass with small fixed
thresholds and the heap trimmed first (the resident set tracks what is in use:
``limit_malloc_caching``, ``release_freed_memory``), the timing pass with freed memory held
(``hold_freed_memory``: a long-running program's steady state, and the same in a fresh process
as in a reused one; with glibc's dynamic thresholds a fresh process's times depended on its
allocation history, by up to 2x on the same method).
The parent (harness.measure.processes) turns a worker that dies or hangs into a record as well.
"""

from __future__ import annotations

import contextlib
import gc
import os
import resource
import time
from collections import Counter
from typing import Any


from harness.contract import frameworks
from harness.measure import compile_cache
from harness.measure import timers as gpu_timing
from harness.measure.gate import check as gate_check, gate_tolerance
from harness.measure.device_setup import (
    CudaContextError,
    DeviceMemoryCap,
    cap_device_memory,
    cuda_context_error,
    device_scope,
    select_torch_cuda_device,
)
from harness.errors import UnsupportedError
from harness.measure.energy import lockstep_meter, meter_for, metered
from harness.measure.gpu_watch import watch_for
from harness.measure.machine_state import MachineStateWatch
from harness.measure.output_checks import (
    fidelity,
    gradient_problem,
    ignores_input_problem,
    input_samples,
    inputs_changed,
    output_kind_problem,
    output_shape_problem,
    timed_values_problem,
    unsettled_output_problem,
)
from harness.grid.settings import TimingSettings
from harness.measure.timing import first_call, time_workload
from harness.measure.memory import (
    hold_freed_memory,
    limit_malloc_caching,
    peak_rss_bytes,
    release_freed_memory,
    reset_peak_rss,
    rss_bytes,
)
from harness.contract.probe import ProbeResult, probe
from harness.contract.records import Measurement, MemoryResult, Point, TimingResult
from harness.contract.registry import REGISTRY, device_kind, load_impl_modules
from harness.metrics.flops import point_tokens
from harness.metrics.noise import noise_verdict
from harness.metrics.stats import median_uncertainty, relative_spread, sample_stats
from harness.grid.settings import WorkerContext, resolve_timing_basis




def prepare(context: WorkerContext, device: str | None = None, framework: str | None = None,
            extra_device_bytes: int = 0) -> DeviceMemoryCap | None:
    """Common set-up at the start of every task; caps the device's memory. Returns the GPU
    memory cap that applies (None off a GPU).

    On a CUDA device, torch's current device becomes the point's device (CUDA events and
    Triton launches use the current device, not the tensors'), and the cap goes to the
    framework that runs the point: torch's caching allocator, or JAX's memory fraction (set
    before JAX starts its GPU backend; no torch CUDA context in a JAX worker). The cap is
    --max-memory, else the same share of the device for every framework
    (``context.device_memory_fraction``).
    ``extra_device_bytes`` is what the harness itself allocates on the device besides the
    workload (the L2-flush buffer of the timing pass): the cap grows by it, so that the timing
    pass has the same room for the workload as the memory pass.

    The malloc settings are each pass's own (see the module docstring).
    """
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    compile_cache.configure(context.compile_cache_dir, framework)
    load_impl_modules(context.impl_modules)
    if device is None:
        return None
    if device_kind(device) == "cuda":
        if framework == "torch":
            select_torch_cuda_device(device)
        return cap_device_memory(framework or "torch", device,
                                 max_bytes=context.max_memory_bytes,
                                 default_fraction=context.device_memory_fraction,
                                 extra_bytes=extra_device_bytes)
    if context.max_memory_bytes:
        cap_address_space(context.max_memory_bytes)
    return None


def cap_address_space(max_bytes: int) -> None:
    """RLIMIT_AS = what the process already maps + max_bytes: allocations beyond fail (-> oom)."""
    mapped = _vm_size_bytes()
    if mapped is None:
        return
    limit = mapped + max_bytes
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _vm_size_bytes() -> int | None:
    from harness.measure.memory import read_status_kib

    value = read_status_kib("VmSize")
    return None if value is None else value * 1024


def classify(exc: BaseException, framework: str) -> tuple[str, str]:
    """(status, message) for an exception raised while measuring.

    A MemoryError is an allocation failure before anything else is asked (asking the framework
    may itself need memory that is not there). Under --max-memory's address-space cap (a CPU
    point) a C extension that ran out can fail without raising anything: Python reports a
    SystemError "error return without exception set", taken as the allocation failure it is."""
    text = str(exc).strip()
    message = f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
    if isinstance(exc, UnsupportedError):
        return "unsupported", str(exc)
    if isinstance(exc, MemoryError):
        return "oom", message[:500]
    if isinstance(exc, SystemError) and "without exception set" in text and \
            address_space_capped():
        return "oom", (message + " (under --max-memory's address-space cap: an allocation "
                       "that failed without raising)")[:500]
    try:
        if frameworks.get(framework).is_oom(exc):
            return "oom", message[:500]
    except Exception:
        pass
    return "error", message[:500]


def address_space_capped() -> bool:
    """Whether this process runs under an address-space limit (cap_address_space's)."""
    return resource.getrlimit(resource.RLIMIT_AS)[0] != resource.RLIM_INFINITY


def harness_device_bytes(fw: Any, device: str, settings: TimingSettings) -> int:
    """Device memory the timing pass allocates besides the workload (the L2-flush buffer)."""
    flush_bytes = getattr(fw, "l2_flush_bytes", None)
    if not settings.cuda_flush_l2 or flush_bytes is None or device_kind(device) != "cuda":
        return 0
    try:
        return int(flush_bytes(device))
    except Exception:  # noqa: BLE001 - no CUDA here: the workload will say so itself
        return 0


# -- tasks -------------------------------------------------------------------------------------
def probe_task(combos: list[tuple], context: WorkerContext) -> dict[tuple, ProbeResult]:
    """{(impl, device, dtype, causal[, features, keywords]): ProbeResult} for each combination
    (harness.measure.runner.combo_of): the probe (harness.contract.probe, a real tiny run) and,
    where it runs, the correctness gate; ``features`` names the point's workload features (the
    gate runs a small case with the same features) and ``keywords`` holds the values of the axes
    a method receives as keywords."""
    prepare(context)
    out: dict[tuple, ProbeResult] = {}
    for combo in combos:
        impl_name, device, dtype, causal = combo[:4]
        features = tuple(combo[4]) if len(combo) > 4 else ()
        keywords = dict(combo[5]) if len(combo) > 5 else {}
        impl = REGISTRY.get(impl_name)
        if device_kind(device) == "cuda":
            cap_for_probe(context, impl.framework, device)
        with device_scope(impl.framework, device):
            result = probe_here(impl, device=device, dtype=dtype, causal=causal,
                                features=features)
            if result:
                result = result.with_gate(gate_check(impl, device=device, dtype=dtype,
                                                     causal=causal, features=features,
                                                     keywords=keywords))
        broken = cuda_context_error(impl.framework, device)
        if broken is not None:
            raise CudaContextError(f"{impl_name} on {device}/{dtype} left the CUDA context "
                                   f"unusable: {broken}")
        out[tuple(combo)] = result
    return out


def cap_for_probe(context: WorkerContext, framework: str, device: str) -> None:
    """The point's GPU memory cap, set before a probe runs on the device. A reused worker probes
    its combination before its first point, and JAX reads its memory fraction once, when the
    probe's tiny run starts its GPU backend: set later, by the point, it would change nothing
    (JAX would stay at its default 75% while the records say the cap). The JAX cap counts the
    timing pass's L2-flush buffer as point_task's does (the flush is on by default)."""
    fw = frameworks.get(framework)
    extra = harness_device_bytes(fw, device, TimingSettings()) if framework == "jax" else 0
    prepare(context, device, framework, extra_device_bytes=extra)


def probe_here(impl: Any, *, device: str, dtype: str, causal: bool = False,
               masked: bool = False, run: bool = True, features: Any = ()) -> ProbeResult:
    """Capabilities and constraints (nothing run), then the probe of harness.contract.probe:
    packages, device, the implementation's own probe and, with ``run``, a tiny input."""
    static = impl.supports(device=device, dtype=dtype, causal=causal, key_padding_mask=masked,
                           run_probe=False, features=features)
    if not static:
        return ProbeResult.of(static)
    return impl.availability(device, dtype) if run else probe(impl, device, dtype, run=False)


def check_task(items: list[tuple[str, str, str, bool, bool]],
               context: WorkerContext) -> dict[tuple, ProbeResult]:
    """``run_bench.py check``'s work, in a worker: {(impl, device, dtype, causal, masked):
    ProbeResult}, with the gate where the implementation runs (no tiny run: the gate is the
    run)."""
    prepare(context)
    out: dict[tuple, ProbeResult] = {}
    for impl_name, device, dtype, causal, masked in items:
        impl = REGISTRY.get(impl_name)
        result = probe_here(impl, device=device, dtype=dtype, causal=causal, masked=masked,
                            run=False)
        if result:
            result = result.with_gate(gate_check(impl, device=device, dtype=dtype,
                                                 causal=causal, masked=masked))
        out[(impl_name, device, dtype, causal, masked)] = result
    return out


def check_workloads_task(items: list[tuple[str, Any]],
                         context: WorkerContext) -> dict[tuple[str, str], ProbeResult]:
    """``run_bench.py check --workloads``' work, in a worker: {(impl, case name): ProbeResult}
    with the gate where the implementation runs, for harness.grid.workload_cases cases (impl,
    device and dtype already in each case's point)."""
    from harness.measure.gate import check_point

    prepare(context)
    out: dict[tuple[str, str], ProbeResult] = {}
    for impl_name, case in items:
        impl = REGISTRY.get(impl_name)
        point = case.point
        result = probe_here(impl, device=point.device, dtype=point.dtype, causal=point.causal,
                            masked=case.padded, run=False, features=case.features())
        if result:
            result = result.with_gate(check_point(impl, point, padded=case.padded))
        out[(impl_name, case.name)] = result
    return out


def availability_task(items: list[tuple[str, str]],
                      context: WorkerContext) -> dict[tuple[str, str], dict[str, ProbeResult]]:
    """``run_bench.py list``'s probes, in a worker: {(impl, device): {dtype: ProbeResult}} for
    every dtype the implementation declares (sdpa_flash runs on a GPU in float16/bfloat16
    only: a float32 probe alone would call it unavailable)."""
    prepare(context)
    out: dict[tuple[str, str], dict[str, ProbeResult]] = {}
    for impl_name, device in items:
        impl = REGISTRY.get(impl_name)
        with device_scope(impl.framework, device):
            out[(impl_name, device)] = dtype_availability(impl, device)
    return out


def dtype_availability(impl: Any, device: str) -> dict[str, ProbeResult]:
    """{dtype: ProbeResult} on a device, for each dtype the implementation declares."""
    return {dtype: ProbeResult.of(impl.supports(device=device, dtype=dtype))
            for dtype in impl.capabilities.dtypes}


def memory_task(point: Point, context: WorkerContext) -> MemoryResult:
    load_impl_modules(context.impl_modules)
    impl = REGISTRY.get(point.impl)
    fw = frameworks.get(impl.framework)
    cap = prepare(context, point.device, impl.framework)
    result = memory_pass(point, context, impl, fw)
    result.device_memory_cap = cap.as_note() if cap is not None else None
    return result


def memory_pass(point: Point, context: WorkerContext, impl: Any, fw: Any) -> MemoryResult:
    """A memory worker's point: its workload built, then the peak of one call (after a warm-up
    call where needs_warmup_call says so)."""
    try:
        with fw.precision(point.dtype):
            limit_malloc_caching()
            work = fw.memory_workload(impl, point, seed=context.seed)
            MEMORY_POINTS[point.series_key()] += 1
            if not needs_warmup_call(impl, point, MEMORY_POINTS[point.series_key()]):
                return measure_memory(work, fw, point)
            first, cache, result = cold_memory_call(work, fw, impl, point)
            result.warmup_call_s = first
            if cache is not None:
                result.warmup_compile_cache = cache.verdict
            return result
    except BaseException as exc:  # noqa: BLE001 - every failure becomes data
        status, message = classify(exc, impl.framework)
        return MemoryResult(status=status, message=message)


# memory passes this process has run, per series (everything but T: harness.contract.records'
# Point.series_key); a reused memory worker serves a series' points one after another
MEMORY_POINTS: Counter[tuple] = Counter()


def needs_warmup_call(impl: Any, point: Point, nth: int) -> bool:
    """Whether the memory pass makes an untimed call before the measured one: for a process's
    first point of a series (lazy initialisation: thread pools, library handles, workspaces;
    a process's first backward keeps 38 MiB of the autograd engine's on the CPU), for every
    point of a method that compiles (the compilation's own memory is not the method's), and on
    a GPU (the allocator figures start after it: the frameworks' device_peak_bytes). A CPU
    memory worker's later points of a series of a method that compiles nothing are measured on
    their first call: the series' first point initialised what the method initialises lazily,
    and the RSS baseline is taken right before the call (within 1.2 MiB of a fresh process
    at T=2048 after T=1024: benchmarks/reuse_vs_isolated.py)."""
    return nth <= 1 or impl.framework == "jax" or impl.compiles or \
        device_kind(point.device) != "cpu"


def measure_memory(work: Any, fw: Any, point: Point) -> MemoryResult:
    """The peak of one call above the inputs. CUDA/JAX-GPU: the framework's allocator peak;
    CPU: the peak RSS of the next call above the RSS with the inputs allocated, with malloc
    caching limited and the heap trimmed first (a reused worker's earlier points). Any warm-up
    call is the caller's (needs_warmup_call)."""
    limit_malloc_caching()   # RSS must track what is in use (see memory.limit_malloc_caching)
    device_result = fw.device_peak_bytes(work, point.device)
    if device_result is not None:
        peak, method = device_result
        return MemoryResult(peak_mem_bytes=int(peak), mem_method=method,
                            input_bytes=work.input_bytes)
    work.setup()
    gc.collect()
    release_freed_memory()
    if not reset_peak_rss():
        return MemoryResult(peak_mem_bytes=None, input_bytes=work.input_bytes,
                            mem_method="unavailable: cannot reset VmHWM "
                                       "(/proc/self/clear_refs)")
    baseline = rss_bytes()
    value = work.run()
    work.block(value)
    peak = peak_rss_bytes()
    del value
    return MemoryResult(peak_mem_bytes=max(0, int(peak - baseline)),
                        mem_method="cpu_rss_hwm_above_inputs",
                        input_bytes=work.input_bytes, rss_baseline_bytes=baseline)


def timing_task(point: Point, settings: TimingSettings, context: WorkerContext) -> TimingResult:
    load_impl_modules(context.impl_modules)
    impl = REGISTRY.get(point.impl)
    fw = frameworks.get(impl.framework)
    prepare(context, point.device, impl.framework,
            extra_device_bytes=harness_device_bytes(fw, point.device, settings))
    try:
        with fw.precision(point.dtype):
            hold_freed_memory()
            work = fw.make_workload(impl, point, seed=context.seed)
            return measure_timing(work, fw, impl, point, settings)
    except BaseException as exc:  # noqa: BLE001
        status, message = classify(exc, impl.framework)
        return TimingResult(status=status, message=message)


def point_task(point: Point, settings: TimingSettings, context: WorkerContext) -> Measurement:
    """A reused worker's point: the memory pass, then the timing pass, on one workload where the
    passes agree (forward, forward+backward; a backward-only point builds its timing workload
    apart). The memory pass's first call is the cold one (compilation, lazy initialisation):
    it is timed as ``first_call_s``, and the timing pass starts warm."""
    load_impl_modules(context.impl_modules)
    impl = REGISTRY.get(point.impl)
    fw = frameworks.get(impl.framework)
    extra = harness_device_bytes(fw, point.device, settings)
    # JAX fixes its memory fraction when its GPU backend starts: the timing pass's room then
    cap = prepare(context, point.device, impl.framework,
                  extra_device_bytes=extra if impl.framework == "jax" else 0)
    note = cap.as_note() if cap is not None else None
    release_device_cache(impl.framework, point.device)
    try:
        with fw.precision(point.dtype):
            limit_malloc_caching()
            work = fw.memory_workload(impl, point, seed=context.seed)
            started = time.perf_counter()
            cold, cache, memory = cold_memory_call(work, fw, impl, point)
            warm_s = time.perf_counter() - started   # calls made on this workload so far
    except BaseException as exc:  # noqa: BLE001 - every failure becomes data
        status, message = classify(exc, impl.framework)
        return Measurement(MemoryResult(status=status, message=message,
                                        device_memory_cap=note))
    memory.device_memory_cap = note
    if memory.status != "ok":
        return Measurement(memory)
    if extra and impl.framework != "jax":
        prepare(context, point.device, impl.framework, extra_device_bytes=extra)
    try:
        with fw.precision(point.dtype):
            hold_freed_memory()
            if point.pass_ == "backward":
                del work
                work = fw.make_workload(impl, point, seed=context.seed)
                warm_s = 0.0
            timing = measure_timing(work, fw, impl, point, settings, cold_first_s=cold,
                                    warm_s=warm_s, cache=cache)
    except BaseException as exc:  # noqa: BLE001
        status, message = classify(exc, impl.framework)
        timing = TimingResult(status=status, message=message)
    return Measurement(memory, timing)


def cold_memory_call(work: Any, fw: Any, impl: Any,
                     point: Point) -> tuple[float, compile_cache.CacheWatch | None, MemoryResult]:
    """The memory pass's cold call and its peak: (seconds of the cold call, where its compiled
    code came from, the MemoryResult).

    Where the adapter measures a workload's first execution itself (``first_call_peak``: JAX
    on a GPU, whose allocator peak cannot be reset, so that a warm call after the cold one
    never raises it: compiled ahead, then the counters around the first execution), the cold
    call is the measured one and its time is the compilation's plus that execution's;
    elsewhere the cold call, then measure_memory on the next call."""
    measure_first = getattr(fw, "first_call_peak", None)
    measured = None
    with watch_compilation(impl) as cache:
        started = time.perf_counter()
        if measure_first is not None:
            measured = measure_first(work, point.device)
        if measured is None:
            first_call(work)
        seconds = time.perf_counter() - started
    if measured is None:
        return seconds, cache, measure_memory(work, fw, point)
    peak, method = measured
    return seconds, cache, MemoryResult(peak_mem_bytes=int(peak), mem_method=method,
                                        input_bytes=work.input_bytes)


def cold_call(work: Any, impl: Any) -> tuple[float, compile_cache.CacheWatch | None]:
    """A workload's first call in this process (lazy initialisation, compilation), timed and,
    for the methods that compile, watched: (seconds, where its compiled code came from)."""
    with watch_compilation(impl) as cache:
        seconds = first_call(work)
    return seconds, cache


def watch_compilation(impl: Any) -> Any:
    """Where a call's compiled code comes from (harness.measure.compile_cache.watch), for the
    methods that compile (JAX, torch.compile); a null watch (None) for the others."""
    if impl.framework == "jax" or impl.compiles:
        return compile_cache.watch(impl.framework)
    return contextlib.nullcontext()


def release_device_cache(framework: str, device: str) -> None:
    """A reused torch worker on CUDA starts each point with the caching allocator emptied (the
    blocks earlier points left reserved), as a fresh worker would."""
    if framework != "torch" or device_kind(device) != "cuda":
        return
    try:
        import torch

        torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - no CUDA: the workload says so itself
        pass


def measure_timing(work: Any, fw: Any, impl: Any, point: Point, settings: TimingSettings, *,
                   cold_first_s: float | None = None, warm_s: float = 0.0,
                   cache: compile_cache.CacheWatch | None = None) -> TimingResult:
    """The timing pass on a built workload: the first call (untimed; with ``cold_first_s`` the
    cold one happened earlier in this worker and that time is the compilation's, ``cache``
    where its compiled code came from), warm-up, samples, then output checks and fidelity.
    ``warm_s``: time already spent calling this workload (the memory pass's calls), which
    counts against the warm-up's time."""
    basis = point_timing_basis(settings, impl.framework, point.device)
    conditions = gpu_timing.prepare(work, timer=settings.timer, framework=impl.framework,
                                    device=point.device, label=point.point_id,
                                    flush_l2=settings.cuda_flush_l2, basis=basis,
                                    tolerance=gate_tolerance(impl, point.dtype))
    watch = watch_for(point.device)
    state = MachineStateWatch()   # /proc around the samples (harness.measure.machine_state)
    watch.open()   # NVML started before the calls; sampled around the samples only
    # the energy counter, read around the samples inside the watch (its NVML handle on a GPU)
    meter = lockstep_meter() if settings.lockstep is not None else meter_for(point.device, watch)
    meter.open()
    inputs_before = input_samples(work)
    try:
        if cold_first_s is None:
            first, cache = cold_call(work, impl)
        else:
            first = first_call(work)
        cold = first if cold_first_s is None else cold_first_s
        samples, value = time_workload(work, settings, warm_s=first + warm_s,
                                       watch=joined(metered(watch, meter), state))
    finally:
        watch.close()
    wrong_shape = output_shape_problem(value, work.inputs, point.pass_) or \
        output_kind_problem(value, point) or inputs_changed(work, inputs_before, len(samples))
    finite = work.check(value)
    deviation = rows = None
    if finite and not wrong_shape and impl.family != "exact" and point.pass_ == "forward":
        deviation, rows = fidelity(value, work, point, fw)
    if finite and not wrong_shape:
        wrong_shape = unsettled_output_problem(work)
    values_checked = False
    if finite and not wrong_shape and impl.family == "exact":
        values = timed_values_problem(value, work, point, fw, gate_tolerance(impl, point.dtype))
        values_checked, wrong_shape = values is not None, values or ""
    if finite and not wrong_shape and point.pass_ != "forward":
        wrong_shape = gradient_problem(work, point, impl.traits.gradient_note, value)
    if finite and not wrong_shape and not values_checked:
        # every family, no reference needed; where the values were checked, their call with q
        # negated showed already that the output follows q
        wrong_shape = ignores_input_problem(work, point)
    quant_error = None
    if finite and not wrong_shape and "unquantised_inputs" in work.info:
        quant_error, rows = fidelity(value, work, point, fw,
                                     inputs=current_q(work, fw))
    del value
    stats = sample_stats(samples)
    result = TimingResult(
        time_samples_s=samples, first_call_s=cold,
        warmup=work.info.get("warmup_calls", settings.warmup),
        threads=fw.threads(),
        timer=(work.timer or gpu_timing.WallClockTimer()).name
        + ("+block_until_ready" if impl.framework == "jax" else ""),
        timing_basis=gpu_timing.timer_basis(work.timer),
        time_s=stats.median, time_iqr_s=stats.iqr, time_min_s=stats.minimum,
        cpu_time_samples_s=work.info.get("cpu_samples") or None,
        lockstep=work.info.get("lockstep"), lockstep_cpu=work.info.get("lockstep_cpu"))
    result.set_conditions({**conditions,
                           **watch.fields(work.info.get("sample_spans")),
                           **meter.fields(calls=len(samples), tokens=point_tokens(point))})
    graph_fields(result, work.timer, settings.timer, point.device)
    result.set_conditions(noise_fields(samples, settings, state.state(
        cpus_needed(point.device, result.threads)), stop=work.info.get("stop_rule") or "",
        lockstep=work.info.get("lockstep")))
    if impl.framework == "jax" or impl.compiles:
        # the first call is dominated by compilation (jit, torch.compile); never part
        # of the samples
        result.compile_time_s = max(0.0, cold - stats.median)
        result.compile_cache = cache.verdict if cache is not None else ""
        result.compile_mode = impl.compile_mode or None
    result.mask_build_s = work.info.get("mask_build_s")
    result.plan_s = work.info.get("plan_s")
    if wrong_shape:
        result.status, result.message = "error", wrong_shape
        return result
    if not finite:
        result.status, result.message = "error", "non-finite output (NaN or Inf)"
        return result
    result.deviation_from_softmax, result.fidelity_rows = deviation, rows
    result.quant_error, result.kv_scales = quant_error, work.info.get("kv_scales")
    return result


def current_q(work: Any, fw: Any) -> Any:
    """The unquantised inputs of an FP8 point (float64 q, k, v drawn from the seed) with q as
    the workload holds it now (the timing loop varies it: Workload.vary)."""
    def inputs() -> tuple[Any, ...]:
        _, k, v = work.info["unquantised_inputs"]()
        return fw.to_numpy64(work.inputs[0]), k, v
    return inputs


def graph_fields(result: TimingResult, timer: Any, requested: str, device: str) -> None:
    """The record's ``l2`` and CUDA-graph check (harness.contract.records.TimerChecks), and a
    refused graph's reason in ``timer_note`` too."""
    result.l2 = gpu_timing.l2_state(timer)
    result.graph_check = gpu_timing.graph_check_text(timer, requested, device)
    inner = getattr(timer, "inner", timer)
    checked = getattr(inner, "checked", None)
    if checked is not None:
        result.graph_nodes, result.graph_eager_kernels = checked.nodes, checked.eager_kernels
        if checked.refused:
            result.timer_note = "; ".join(n for n in (result.timer_note, result.graph_check)
                                          if n)

def joined(*managers: Any) -> contextlib.ExitStack:
    """One context manager entering ``managers`` in order (time_workload's ``watch``)."""

    class Joined(contextlib.ExitStack):
        def __enter__(self) -> "Joined":
            super().__enter__()
            for manager in managers:
                self.enter_context(manager)
            return self

    return Joined()


def cpus_needed(device: str, threads: int | None) -> int | None:
    """The CPUs a worker's threads need while it is timed: its thread count on the CPU (None:
    every CPU it may use), one on a GPU (the thread that launches and waits)."""
    if device_kind(device) != "cpu":
        return 1
    return threads or None


def noise_fields(samples: list[float], settings: TimingSettings, state: Any, stop: str = "",
                 lockstep: str | None = None) -> dict[str, Any]:
    """The record's NoiseMetrics of one timed point: spread, target, the rule that ended
    sampling (``stop``; lockstep's leader decides by min_time_s alone), machine state
    and the noisy mark (harness.metrics.noise). In lockstep (run_bench.py ab) the other
    side's turns fall in the window by design: others' CPU time is kept, not judged."""
    spread, uncertainty = relative_spread(samples), median_uncertainty(samples)
    verdict = noise_verdict(median_uncertainty=uncertainty,
                            other_cpus=state.other_cpus, cpus_available=state.cpus_available,
                            cpus_needed=state.cpus_needed,
                            steal_fraction=state.cpu_steal_fraction,
                            judge_others=lockstep is None)
    return {**state.fields(), "time_rel_spread": spread, "median_uncertainty": uncertainty,
            "noise_target": settings.noise_target,
            "stop_rule": "lockstep" if lockstep else stop,
            "noisy": verdict.noisy, "noise_reason": verdict.reason}


def point_timing_basis(settings: TimingSettings, framework: str, device: str) -> str:
    """The run's timing basis (settings.timing_basis); ``auto`` (settings not resolved by a plan
    or a Runner) resolved for this point alone."""
    cuda = {framework} if device_kind(device) == "cuda" else set()
    return resolve_timing_basis(settings.timing_basis, cuda)


def peaks_task(device: str, role: str, context: WorkerContext) -> dict[str, Any]:
    """One measurement of the machine's peaks on ``device`` (harness.metrics.peaks; ``role``:
    start or end of the run, or report), in a worker started as the points' workers are, so
    with the thread count the points use."""
    from harness.metrics.peaks import measure_peaks

    prepare(context)   # no --max-memory cap: the copy buffer is sized for the device
    with MachineStateWatch() as watch:
        result = measure_peaks(device, role=role)
    result["machine_state"] = peaks_machine_state(watch, device, result.get("threads"))
    return result


def peaks_machine_state(watch: MachineStateWatch, device: str,
                        threads: int | None) -> dict[str, Any]:
    """The machine's state while the peaks were measured (harness.measure.machine_state) and
    ``busy``: why a peak measured then may be low ('' when the machine was quiet): other
    processes took CPUs the measurement's threads needed. A peak the stop rule calls stable
    can be stably low under a steady load; the best of the run's measurements is what counts,
    and this says which of them to distrust."""
    state = watch.state(cpus_needed(device, threads))
    verdict = noise_verdict(median_uncertainty=None, other_cpus=state.other_cpus,
                            cpus_available=state.cpus_available,
                            cpus_needed=state.cpus_needed,
                            steal_fraction=state.cpu_steal_fraction)
    return {**state.fields(), "busy": verdict.reason}


def run_task(name: str, *args: Any) -> Any:
    """Entry used by the executor: look a task up by name (keeps pickling trivial)."""
    tasks = {"probe": probe_task, "memory": memory_task, "timing": timing_task,
             "point": point_task,
             "check": check_task, "check_workloads": check_workloads_task,
             "availability": availability_task, "peaks": peaks_task}
    start = time.perf_counter()
    result = tasks[name](*args)
    if isinstance(result, (MemoryResult, TimingResult)):
        result.task_wall_s = time.perf_counter() - start
    return result

