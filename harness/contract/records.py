"""The record: the contract between measuring and everything downstream.

One JSON object per line in ``results.jsonl``. Report, compare and merge read records and never
re-derive measurement logic. A ``Point`` is the frozen description of one measurement; its
``point_id`` keys resume, sharding and merge.

Schema history:
- 1: first version (speed and accuracy records); later additive fields (bytes moved, % of peak,
  timing conditions; the workload axes kv_heads, q_len, window, alibi, documents) read as their
  defaults in older records (kv_heads = heads, q_len = seq_len, no window, ALiBi or documents).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable

from harness.contract import axes as axes_table
from harness.contract.ragged import lengths_problem

SCHEMA_VERSION = 1

STATUSES = ("ok", "oom", "timeout", "error", "unsupported", "skipped")

# what a time sample is (harness.measure.timers has the timers): "device_events", CUDA events
# around the call on its stream (the GPU's time; torch on CUDA only); "host_sync", perf_counter
# around the call and a wait for its result (dispatch, work and synchronisation; every
# framework, and the CPU). One basis for every framework of a run (--timing-basis).
TIMING_BASES = ("device_events", "host_sync")


def implied_timing_basis(timer: str | None) -> str:
    """The basis a record's ``timer`` implies, for records without ``timing_basis`` (written
    before it was kept): CUDA events and CUDA-graph replays were timed between events, the
    perf_counter timers on the host with a wait for the result; '' for no timer (not timed)."""
    if not timer:
        return ""
    if timer in ("cuda_event", "cudagraph"):
        return "device_events"
    return "host_sync" if timer.startswith("perf_counter") else ""


@dataclass(frozen=True, order=True)
class Point:
    """One speed measurement: implementation x shape x dtype x pass x device x workload.

    Its axes are the rows of harness.contract.axes: the built-in ones are fields here (checked
    against the table by tests/test_axes.py), the others (a plug-in's) are held in
    ``extra_axes`` as sorted (name, value) pairs, at non-default values only."""

    impl: str
    seq_len: int
    head_dim: int
    batch: int = 1
    heads: int = 8
    dtype: str = "float32"
    causal: bool = False
    pass_: str = "forward"
    device: str = "cpu"
    # workload axes (harness.contract.masking has the conventions). Their defaults are square
    # self-attention and are normalised (kv_heads == heads -> 0, q_len == seq_len -> 0) so that
    # a point with default values has the point id of one without the axes.
    kv_heads: int = 0          # key/value heads; 0 = as many as query heads
    q_len: int = 0             # queries; 0 = seq_len (self-attention); seq_len is the KV length
    window: int = -1           # sliding window of this many keys back; -1 = none
    alibi: bool = False        # ALiBi biases with BLOOM's slopes
    documents: int = 0         # seq_len split into this many packed documents; 0 = none
    kv_dtype: str = ""         # keys and values in this FP8 dtype (harness.contract.quant)
    extra_axes: tuple[tuple[str, Any], ...] = ()   # axes without a field: (name, value)

    kind: ClassVar[str] = "speed"

    def __post_init__(self) -> None:
        for axis in axes_table.axes():
            if axis.field is not None and axis.normalise is not None:
                object.__setattr__(self, axis.field,
                                   axis.normalise(getattr(self, axis.field), self))
        extra = dict(self.extra_axes)
        kept = []
        for name, value in sorted(extra.items()):
            axis = axes_table.get_axis(name)
            if axis is not None:
                value = axis.read(value)
                if axis.normalise is not None:
                    value = axis.normalise(value, self)
                if value == axis.default:
                    continue
            kept.append((name, value))
        object.__setattr__(self, "extra_axes", tuple(kept))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Point":
        """The point of a record or a point's dict: the one place a Point is rebuilt. Basic
        axes are required (KeyError); workload axes absent or None read as their defaults (old
        records); axes without a field come from ``data["axes"]`` or the top level."""
        nested = data.get("axes") or {}
        values: dict[str, Any] = {"impl": data["impl"]}
        extra: dict[str, Any] = {}
        for axis in axes_table.axes():
            raw = data.get(axis.name, nested.get(axis.name))
            if axis.field is None:
                if raw is not None:
                    extra[axis.name] = axis.read(raw)
            elif axis.workload:
                values[axis.field] = axis.read(raw)
            else:
                if raw is None:
                    raise KeyError(axis.name)
                values[axis.field] = axis.read(raw)
        for name, raw in nested.items():   # axes of a plug-in not loaded here: as stored
            if axes_table.get_axis(name) is None and raw is not None:
                extra[name] = raw
        return cls(**values, extra_axes=tuple(sorted(extra.items())))

    def value(self, name: str) -> Any:
        """The value of the axis ``name`` (its default where the point does not set it)."""
        axis = axes_table.get_axis(name)
        if axis is not None and axis.field is not None:
            return getattr(self, axis.field)
        extra = dict(self.extra_axes)
        if name in extra:
            return extra[name]
        if axis is None:
            raise KeyError(name)
        return axis.default

    def axis_values(self) -> dict[str, Any]:
        """Every axis of the table -> this point's value (defaults included)."""
        return {axis.name: self.value(axis.name) for axis in axes_table.axes()}

    def as_dict(self) -> dict[str, Any]:
        """The point's fields; workload axes only where they differ from the default."""
        data: dict[str, Any] = {"impl": self.impl}
        for axis in axes_table.basic_axes():
            data[axis.name] = self.value(axis.name)
        for axis in axes_table.workload_axes():
            value = self.value(axis.name)
            if value != axis.default:
                data[axis.name] = value
        for name, value in self.extra_axes:   # a plug-in's axis not loaded here
            data.setdefault(name, value)
        return data

    # -- the workload, resolved ---------------------------------------------------------
    @property
    def n_kv_heads(self) -> int:
        return self.kv_heads or self.heads

    @property
    def n_queries(self) -> int:
        return self.q_len or self.seq_len

    @property
    def window_pair(self) -> tuple[int, int] | None:
        """--window LEFT as (left, right): right 0 when causal, LEFT otherwise."""
        if self.window < 0:
            return None
        return (self.window, 0) if self.causal else (self.window, self.window)


    def record_axes(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the record's workload fields, its ``axes`` entries): the axes with a field of the
        record, resolved, and those without, at non-default values."""
        fields, other = {}, {}
        for axis in axes_table.workload_axes():
            value = axis.stored(self.value(axis.name), self)
            if axis.field is not None:
                fields[axis.name] = value
            elif self.value(axis.name) != axis.default:
                other[axis.name] = value
        for name, value in self.extra_axes:
            if axes_table.get_axis(name) is None:
                other[name] = value
        return fields, other

    def columns(self) -> dict[str, Any]:
        """impl and every axis as a record stores it (workload axes resolved; a plug-in's axis
        not loaded here as stored): the point's columns in CSV files and tables."""
        data: dict[str, Any] = {"impl": self.impl}
        for axis in axes_table.axes():
            data[axis.name] = axis.stored(self.value(axis.name), self)
        for name, value in self.extra_axes:
            data.setdefault(name, value)
        return data

    def features(self) -> frozenset[str]:
        """The capability features its workload needs (gqa, q_len, window, ...)."""
        return frozenset(axis.feature for axis in axes_table.workload_axes()
                         if axis.feature and self.value(axis.name) != axis.default)

    def all_features(self) -> frozenset[str]:
        """Every capability feature the point needs: causal, backward and the workload's."""
        return self.features() | frozenset(
            axis.feature for axis in axes_table.basic_axes()
            if axis.feature and self.value(axis.name) != axis.default)

    def keyword_values(self) -> dict[str, Any]:
        """The values of the axes a method receives as keywords (non-default only)."""
        return {axis.name: self.value(axis.name) for axis in axes_table.keyword_axes()
                if self.value(axis.name) != axis.default}

    def workload_label(self) -> str:
        """'Hkv=8 Tq=1 window=4096 alibi docs=8': the workload axes not at their default."""
        unknown = [f"{name}={value}" for name, value in self.extra_axes
                   if axes_table.get_axis(name) is None]
        return " ".join(p for p in (workload_text(self.axis_values()), *unknown) if p)

    def workload_problem(self) -> str | None:
        """Why this combination of axes is not a workload, or None."""
        if self.n_kv_heads <= 0 or self.heads % self.n_kv_heads:
            return f"heads={self.heads} is not a multiple of kv_heads={self.n_kv_heads}"
        if self.n_queries <= 0:
            return f"q_len must be positive, got {self.q_len}"
        if self.window < -1:
            return f"window must be >= 0, got {self.window}"
        if self.documents:
            if self.n_queries != self.seq_len:
                return "documents need q_len == seq_len"
            if self.documents > self.seq_len:
                return f"documents={self.documents} > seq_len={self.seq_len}"
        return lengths_problem(self)

    @property
    def point_id(self) -> str:
        return point_id(self.kind, self.as_dict())

    def series_key(self) -> tuple:
        """Everything but seq_len: one line in a time-vs-T figure."""
        return (self.impl, self.device, self.batch, self.heads, self.head_dim, self.dtype,
                self.causal, self.pass_, *self.workload_key())

    def workload_key(self) -> tuple:
        return (*(self.value(a.name) for a in axes_table.workload_axes() if a.field),
                self.extra_axes)

    @property
    def tokens(self) -> int:
        """Query tokens processed (B * Tq): B per step when decoding."""
        return self.batch * self.n_queries


def workload_text(values: dict[str, Any]) -> str:
    """The label of the workload axes not at their default ('Hkv=8 Tq=1 window=128 alibi'):
    ``values`` maps axis names to point values (absent: the default)."""
    parts = []
    for axis in axes_table.workload_axes():
        value = values.get(axis.name, axis.default)
        if value != axis.default:
            parts.append(axis.text(value))
    return " ".join(parts)


def point_columns(points: Iterable[Point]) -> list[str]:
    """The column names of ``Point.columns`` over some points: impl, every axis in table order,
    then the names of axes of a plug-in not loaded here."""
    names = ["impl", *(axis.name for axis in axes_table.axes())]
    for point in points:
        names += [n for n, _ in point.extra_axes if n not in names]
    return names


def point_id(kind: str, fields: dict[str, Any]) -> str:
    """Stable id of a point: a short hash of its canonical JSON."""
    canonical = json.dumps({"kind": kind, **fields}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(canonical.encode()).hexdigest()[:16]


# -- the metrics: each field declared once ----------------------------------------------------
# A speed record's measured and derived values are the fields of these groups. The worker's
# results inherit the groups they fill and SpeedRecord inherits them all, so the record's field
# IS the measurement's field (same name, type, default); SPEED_METRICS, the report's frames and
# compare's checks take their columns from the record's fields. Adding a metric is one field
# here (and the code that measures it).
@dataclass(kw_only=True)
class TimeMetrics:
    """The timing pass's samples and how they were taken."""
    time_s: float | None = None            # median of the samples
    time_samples_s: list[float] = field(default_factory=list, metadata={"column": False})
    time_iqr_s: float | None = None
    time_min_s: float | None = None
    warmup: int = 0
    timer: str = ""                        # perf_counter / cuda_event / ...
    # TIMING_BASES: what a sample's time is; records without it read it from their timer
    # (implied_timing_basis)
    timing_basis: str = ""
    compile_time_s: float | None = None    # first call (JAX jit, torch.compile); not in time_s
    # where the first call's compiled code came from: "miss" (compiled), "hit" (the on-disk
    # Inductor/JAX cache), "warm" (already compiled in this worker); "" when nothing compiled
    compile_cache: str = ""
    mask_build_s: float | None = None      # block-mask construction (flex_attention); not in time_s
    # the part of mask_build_s a method reports as its plan step (FlashInfer's wrapper plan())
    plan_s: float | None = None
    threads: int | None = None


@dataclass(kw_only=True)
class MemoryMetrics:
    """The memory pass's peak."""
    peak_mem_bytes: int | None = None      # peak above the inputs (see mem_method)
    mem_method: str = ""
    input_bytes: int | None = None


@dataclass(kw_only=True)
class DerivedMetrics:
    """Computed by the runner from the time and the point (harness.metrics)."""
    tokens_per_s: float | None = None
    flops: float | None = None
    tflops: float | None = None
    flop_model: str = ""
    # bytes moved and % of the machine's peaks (harness.metrics.traffic; peaks in run.json)
    bytes_moved: float | None = None
    bytes_model: str = ""
    achieved_bytes_per_s: float | None = None
    pct_peak_bandwidth: float | None = None
    pct_peak_flops: float | None = None    # exact attention only
    arithmetic_intensity: float | None = None   # FLOPs / bytes_moved (exact attention only)


@dataclass(kw_only=True)
class TimingConditions:
    """How the point was timed (harness.measure.timers, harness.measure.gpu_watch)."""
    matmul_precision: str = ""             # torch / JAX float32 matmul setting (TF32 or not)
    l2_flush: str = ""                     # whether caches were flushed before each sample
    sm_clock_mhz_min: float | None = None  # NVML samples while the point was timed (GPU)
    sm_clock_mhz_max: float | None = None
    max_sm_clock_mhz: float | None = None
    gpu_temperature_c_max: float | None = None
    gpu_power_w_max: float | None = None
    throttle_reasons: list[str] = field(default_factory=list)   # in the non-idle samples
    # a slowdown reason (power cap, thermal, hardware slowdown) in a non-idle sample, or the SM
    # clock below 75% of the application clock (harness.measure.gpu_watch)
    throttled: bool | None = None
    isolation: str = ""                    # "worker": a reused worker; "point": fresh processes
    worker_point: int | None = None        # this point's turn in its worker (1: a fresh worker)


# --l2: the state of the GPU's L2 cache when a sample starts. "cold": a buffer larger than L2 was
# written before each sample (untimed), so the call reads its inputs from device memory; "warm":
# nothing was written between samples, so what the previous call left in the caches may serve
# this one. CPU samples are always "warm": the harness flushes no CPU cache.
L2_STATES = ("cold", "warm")


def implied_l2(l2_flush: str | None) -> str:
    """The ``l2`` a record's ``l2_flush`` note implies, for records without the field: 'cold'
    where it says flushed, 'warm' where it says not flushed, '' where it says nothing."""
    text = (l2_flush or "").strip()
    if text.startswith("flushed"):
        return "cold"
    return "warm" if text.startswith("not flushed") else ""


@dataclass(kw_only=True)
class TimerChecks:
    """The cache state the samples started from and the CUDA-graph check of ``--timer
    cudagraph`` (harness.measure.timers.CudaGraphTimer)."""
    l2: str = ""                           # L2_STATES; records without it: implied_l2(l2_flush)
    # "kept: ..." (the graph held the method's kernels and a replay reproduced an eager call on
    # fresh inputs), "refused: ... (timed with CUDA events)", or why no graph was captured
    graph_check: str = ""
    graph_nodes: int | None = None         # kernel, memset and memcpy nodes of the captured graph
    graph_eager_kernels: int | None = None  # GPU kernels (and memsets, copies) of one eager call


@dataclass(kw_only=True)
class GateMetrics:
    """The correctness gate before timing (harness.contract.probe.ProbeResult.gate_fields)."""
    gate_max_error: float | None = None
    gate_tolerance: float | None = None


@dataclass(kw_only=True)
class FidelityMetrics:
    """The timed output against exact softmax attention (approximate families)."""
    deviation_from_softmax: float | None = None
    # kv_dtype points: |out - exact|_F / |exact|_F with exact the float64 attention of the
    # unquantised inputs (what FP8 costs in accuracy, beside what it gains in speed)
    quant_error: float | None = None


@dataclass(kw_only=True)
class EnergyMetrics:
    """Energy over the timed window (harness.measure.energy): a cumulative counter (NVML's total
    energy on NVIDIA GPUs, RAPL's packages on CPUs) read before and after the samples. The whole
    device's (or CPU package's) energy: other processes on it are in the number. An ok record
    has the values or ``energy_reason``; records without the fields read as not measured."""
    energy_j_per_call: float | None = None   # the window's joules / the calls in it
    energy_j_per_token: float | None = None  # per call / the point's tokens
    mean_power_w: float | None = None        # the window's joules / its length
    energy_window_s: float | None = None     # perf_counter time between the two readings
    # the counter's lag bound: update interval / window (each reading lags up to one update)
    energy_error_max: float | None = None
    energy_counter_resolution_j: float | None = None   # the counter's unit (NVML mJ, RAPL uJ)
    energy_counter_interval_s: float | None = None     # its update interval, measured
    energy_source: str = ""                  # "nvml_total_energy", "rapl", "" (none)
    energy_reason: str = ""                  # why there is no value ("" when there is one)


@dataclass(kw_only=True)
class NoiseMetrics:
    """How noisy the samples were and the machine's state while they ran (the sampling rule:
    harness.measure.timing; the state: harness.measure.machine_state; the mark:
    harness.metrics.noise). Older records read None / '' (not judged)."""
    time_rel_spread: float | None = None   # IQR / median of the samples
    # the median's ~95% interval half-width over the median (1.57 IQR / sqrt(n) / median)
    median_uncertainty: float | None = None
    noise_target: float | None = None      # the spread sampling aimed at (--noise-target)
    # what ended sampling: "spread target met", "time cap", "max repeats" (or "lockstep")
    stop_rule: str = ""
    # the median is the machine's, not the method's (noise_reason says why)
    noisy: bool | None = None
    noise_reason: str = ""
    load_avg_1m: float | None = None       # /proc/loadavg after the samples
    cpus_available: int | None = None      # CPUs the worker may run on
    cpus_needed: int | None = None         # CPUs its threads need (its threads; 1 on a GPU)
    other_cpus: float | None = None        # CPUs other processes used during the samples
    cpu_steal_fraction: float | None = None   # hypervisor steal share of the CPUs' time
    state_window_s: float | None = None    # the samples' window the state covers
    machine_state_note: str = ""           # why a state figure is missing


@dataclass(kw_only=True)
class PeakMarks:
    """What the record's % of peak is taken against, and the mark of a point above 100% of
    it (harness.metrics.peaks): a median above the best call of a peak means the peak was
    measured too low (a busy machine while it was measured), not that the method beat it."""
    # the peak measurement(s) known when the record was written (run.json's
    # peaks.measurements), or why the record has no % of peak
    peaks_against: str = ""
    # '' within the peaks; else which peak the point beat and by how much
    peak_under_measured: str = ""


@dataclass(kw_only=True)
class RecordBookkeeping:
    """Where and when a speed record was made, and what it is."""
    hardware_id: str = ""
    started_at: str = ""
    wall_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    kind: str = "speed"
    schema_version: int = SCHEMA_VERSION


# every group, in the order their columns appear
METRIC_GROUPS: tuple[type, ...] = (TimeMetrics, MemoryMetrics, DerivedMetrics, TimingConditions,
                                   GateMetrics, FidelityMetrics, EnergyMetrics, TimerChecks,
                                   NoiseMetrics, PeakMarks)
METRIC_FIELDS: tuple[str, ...] = tuple(f.name for group in METRIC_GROUPS
                                       for f in dataclasses.fields(group))


# -- what a worker returns: the typed Measurement ----------------------------------------------
# A result's own fields besides status and message are notes for record.extra[key or name]
# (only when not None), declared with ``extra()``; its metric fields go to the record's field of
# the same name. The runner copies by these declarations; no key list is kept by hand.
def to_extra(*, key: str | None = None) -> Any:
    return field(default=None, metadata={"to": "extra", "key": key})


@dataclass(kw_only=True)
class MemoryResult(MemoryMetrics):
    """The peak-memory pass of one point (harness.measure.worker.memory_task)."""
    status: str = "ok"
    message: str = ""
    rss_baseline_bytes: int | None = to_extra()
    task_wall_s: float | None = to_extra(key="memory_task_wall_s")
    # the memory pass's own first call, where it makes one (a worker of its own: the CPU's
    # reused memory worker, or --isolate point): its time and where its compiled code came from
    warmup_call_s: float | None = to_extra(key="memory_first_call_s")
    warmup_compile_cache: str | None = to_extra(key="memory_compile_cache")
    # the GPU memory cap the worker's framework had (harness.measure.device_setup.memory_cap:
    # bytes, fraction of the device, source "--max-memory" or "default"); None off a GPU
    device_memory_cap: dict[str, Any] | None = to_extra()


@dataclass(kw_only=True)
class TimingResult(NoiseMetrics, TimerChecks, EnergyMetrics, FidelityMetrics, TimingConditions,
                   TimeMetrics):
    """The timing pass of one point (harness.measure.worker.timing_task)."""
    status: str = "ok"
    message: str = ""
    first_call_s: float | None = to_extra()
    task_wall_s: float | None = to_extra(key="timing_task_wall_s")
    fidelity_rows: int | None = to_extra()   # query rows deviation_from_softmax compared
    # the worker process's CPU time during each sample (run_bench.py ab --clock cpu)
    cpu_time_samples_s: list[float] | None = to_extra()
    # "leader"/"follower": samples taken in turns with the other side of run_bench.py ab
    lockstep: str | None = to_extra()
    # the CPU both lockstep workers were pinned to (run_bench.py ab; None: not pinned)
    lockstep_cpu: int | None = to_extra()
    timer_note: str | None = to_extra()
    clock_note: str | None = to_extra()
    clock_samples: int | None = to_extra()
    # what throttled was judged on (harness.measure.gpu_watch.summarise)
    clock_samples_used: int | None = to_extra()
    sm_clock_mhz_median: float | None = to_extra()
    app_sm_clock_mhz: float | None = to_extra()
    clock_low_fraction: float | None = to_extra()
    low_clock_timing_samples: int | None = to_extra()
    # how the method compiles (Implementation.compile_mode), where it says
    compile_mode: str | None = to_extra()
    # kv_dtype points: the FP8 scales (harness.contract.quant.scales_note)
    kv_scales: dict[str, Any] | None = to_extra()

    def set_conditions(self, values: dict[str, Any]) -> None:
        """Fill the timing-condition fields from a dict (unknown keys are a bug: raise)."""
        names = {f.name for f in dataclasses.fields(self)}
        for key, value in values.items():
            if key not in names:
                raise KeyError(f"TimingResult has no field {key!r}")
            setattr(self, key, value)


@dataclass
class Measurement:
    """What the worker passes measured for one point: memory, then (if memory ran) timing.
    A reused worker returns one for a point (harness.measure.worker.point_task)."""
    memory: MemoryResult
    timing: TimingResult | None = None

    @property
    def status(self) -> str:
        if self.memory.status != "ok" or self.timing is None:
            return self.memory.status
        return self.timing.status

    def record_values(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(the SpeedRecord fields, record.extra entries) these results fill."""
        values: dict[str, Any] = {}
        notes: dict[str, Any] = {}
        for result in (self.memory, self.timing):
            if result is None:
                continue
            for f in dataclasses.fields(result):
                value = getattr(result, f.name)
                if f.name in METRIC_FIELDS:
                    values[f.name] = value
                elif f.metadata.get("to") == "extra" and value is not None:
                    notes[f.metadata.get("key") or f.name] = value
        return values, notes


@dataclass
class SpeedRecord(RecordBookkeeping, PeakMarks, NoiseMetrics, TimerChecks, EnergyMetrics,
                  FidelityMetrics, GateMetrics, TimingConditions, DerivedMetrics, MemoryMetrics,
                  TimeMetrics):
    """What one worker measured for one Point (or why it could not): its own fields (the
    point, status, message), then the metric groups' fields (inherited, in METRIC_GROUPS order)
    and the bookkeeping; JSON keys come in that order."""

    impl: str
    framework: str
    family: str
    device: str
    batch: int
    heads: int
    seq_len: int
    head_dim: int
    dtype: str
    causal: bool
    pass_: str
    status: str
    message: str = ""
    # workload axes, resolved (older records lack them: read as the defaults, see Point)
    kv_heads: int | None = None            # None: = heads
    q_len: int | None = None               # None: = seq_len
    window: int | None = None              # keys back; None: no window
    alibi: bool = False
    documents: int | None = None           # packed documents; None: none
    kv_dtype: str | None = None            # FP8 keys and values; None: the point's dtype
    # the axes without a field here (a plug-in's; harness.contract.axes), non-default values
    axes: dict[str, Any] = field(default_factory=dict)

    @property
    def point(self) -> Point:
        return Point.from_dict(self.point_dict())

    def point_dict(self) -> dict[str, Any]:
        """The record's axes under their names (as ``Point.from_dict`` reads them)."""
        data = {axis.name: getattr(self, axis.field) for axis in axes_table.axes()
                if axis.field is not None}
        return {"impl": self.impl, **data, "axes": self.axes}

    @classmethod
    def for_point(cls, point: Point, *, framework: str, family: str, status: str,
                  message: str = "", **values: Any) -> "SpeedRecord":
        fields, other = point.record_axes()
        basic = {axis.field: point.value(axis.name) for axis in axes_table.basic_axes()}
        return cls(impl=point.impl, framework=framework, family=family, status=status,
                   message=message, **basic, **fields, axes=other, **values)

    def to_json(self) -> dict[str, Any]:
        fields = dataclasses.asdict(self)
        data = {name: fields[name] for name in _json_order(type(self))}
        data["pass"] = data.pop("pass_")
        if not data["axes"]:
            del data["axes"]
        data["point_id"] = self.point.point_id
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} not in {STATUSES}")
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "SpeedRecord":
        data = dict(data)
        data["pass_"] = data.pop("pass")
        data.pop("point_id", None)
        names = {f.name for f in dataclasses.fields(cls)}
        extra = {k: v for k, v in data.items() if k not in names}
        if not data.get("timing_basis"):
            data["timing_basis"] = implied_timing_basis(data.get("timer"))
        if not data.get("l2"):
            data["l2"] = implied_l2(data.get("l2_flush"))
        record = cls(**{k: v for k, v in data.items() if k in names})
        record.extra.update(extra)
        return record


def _json_order(cls: type) -> list[str]:
    """A speed record's fields as its JSON lists them: the point's (and status, message) first,
    then the metric groups' and the bookkeeping's in field order."""
    later = set(METRIC_FIELDS) | {f.name for f in dataclasses.fields(RecordBookkeeping)}
    names = [f.name for f in dataclasses.fields(cls)]
    return [n for n in names if n not in later] + [n for n in names if n in later]


# -- columns downstream, derived from the record's fields (one place) -------------------------
# the record's fields that say which point it measured (the axis table's, plus impl and axes)
POINT_FIELDS = ("impl", *(a.field for a in axes_table.axes() if a.field), "axes")

# columns the report's frame and the verdict tables (compare, ab) put beside a record's fields;
# tests/test_axes.py checks that every column of those tables is reserved or an axis
TABLE_COLUMNS = ("run", "hardware_tag", "group", "q_axis", "n_samples", "time_q1_s",
                 "time_q3_s", "extra_axes", "config", "metric", "baseline", "current",
                 "baseline_status", "current_status", "ratio", "interval", "lo", "hi",
                 "noise", "baseline_noise", "current_noise", "rounds", "verdict", "fails",
                 "round_ratios", "note")
# every measured or derived value of a speed record (the metric groups' fields but the samples
# list), in field order: report frames and tables, compare's checks and the CSVs take their
# columns from here
SPEED_METRICS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(SpeedRecord)
    if f.name in METRIC_FIELDS and f.metadata.get("column", True))
NUMERIC_SPEED_METRICS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(SpeedRecord) if f.name in SPEED_METRICS
    and str(f.type).split(" |")[0] in ("float", "int"))


@dataclass
class AccuracyRecord:
    """One training run of one implementation on one task (the accuracy track)."""

    impl: str
    task: str
    status: str
    message: str = ""
    data_source: str = ""        # official / generated / user folder
    preset: str = ""
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    seq_len: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    params: int | None = None
    best_val_accuracy: float | None = None
    test_accuracy: float | None = None     # at the best validation checkpoint
    selection: str = "test accuracy at the best validation checkpoint"
    epochs_to_best: int | None = None
    epochs: int | None = None
    train_time_s: float | None = None
    examples_per_s: float | None = None
    peak_mem_bytes: int | None = None
    curve: list[dict[str, Any]] = field(default_factory=list)
    hardware_id: str = ""
    started_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # added with the accuracy track (additive; older records read with the defaults)
    mem_method: str = ""                   # how peak_mem_bytes was measured
    data_path: str = ""                    # the folder the examples were read from
    split_sizes: dict[str, int] = field(default_factory=dict)
    bad_steps: int = 0                     # non-finite losses/gradients skipped by the guard
    # lra --tune: {"grid", "selection", "chosen", "trials", "search_time_s"}; {} when untuned
    tuning: dict[str, Any] = field(default_factory=dict)
    kind: str = "accuracy"
    schema_version: int = SCHEMA_VERSION

    def point_fields(self) -> dict[str, Any]:
        return {"impl": self.impl, "task": self.task, "preset": self.preset, "seed": self.seed,
                "device": self.device, "dtype": self.dtype, "data_source": self.data_source,
                "config": self.config}

    def to_json(self) -> dict[str, Any]:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} not in {STATUSES}")
        data = dataclasses.asdict(self)
        data["point_id"] = point_id(self.kind, self.point_fields())
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "AccuracyRecord":
        data = dict(data)
        data.pop("point_id", None)
        names = {f.name for f in dataclasses.fields(cls)}
        record = cls(**{k: v for k, v in data.items() if k in names})
        record.extra.update({k: v for k, v in data.items() if k not in names})
        return record


RECORD_TYPES: dict[str, type] = {"speed": SpeedRecord, "accuracy": AccuracyRecord}
axes_table.reserve_names([*TABLE_COLUMNS, "point_id", "kind", "repro", *POINT_FIELDS,
                          *(f.name for cls in (Point, *RECORD_TYPES.values())
                            for f in dataclasses.fields(cls))])


def record_from_json(data: dict[str, Any]) -> SpeedRecord | AccuracyRecord:
    kind = data.get("kind", "speed")
    try:
        return RECORD_TYPES[kind].from_json(data)
    except KeyError:
        raise ValueError(f"unknown record kind {kind!r}") from None


def structure_problem(data: dict[str, Any]) -> str:
    """Why a results line cannot be a record at all ('' when it can): a kind this version does
    not know, no method name. A record's other fields are checked by the readers that use them
    (compare's, merge's and report's checks: field_problem, invalid_numbers), which refuse
    what they cannot use."""
    kind = data.get("kind", "speed")
    if kind not in RECORD_TYPES:
        return f"unknown record kind {kind!r}"
    impl = data.get("impl")
    if not isinstance(impl, str) or not impl:
        return "no method name (impl)"
    return ""


def field_problem(data: dict[str, Any]) -> str:
    """Why a record's status or shape cannot be right ('' when they can): a status not among
    STATUSES (a null one included), a shape field of a speed record that is not a whole
    number >= 1. With invalid_numbers, what merge and report refuse to copy or draw."""
    status = data.get("status")
    if status not in STATUSES:
        return f"status {status!r} is not one of {', '.join(STATUSES)}"
    if data.get("kind", "speed") == "speed":
        for name in ("seq_len", "head_dim", "batch", "heads"):
            value = data.get(name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                return f"{name} = {value!r} is not a whole number >= 1"
    return ""


# Numbers a record may hold, and the range each must be in (None is always allowed).
POSITIVE_FIELDS = ("time_s", "time_min_s")
NON_NEGATIVE_FIELDS = ("time_iqr_s", "time_rel_spread", "other_cpus", "peak_mem_bytes",
                       "input_bytes", "compile_time_s", "tokens_per_s", "flops", "tflops", "wall_s", "train_time_s",
                       "examples_per_s", "energy_j_per_call", "energy_j_per_token",
                       "mean_power_w", "energy_window_s")
FRACTION_FIELDS = ("best_val_accuracy", "test_accuracy")


def invalid_numbers(data: dict[str, Any]) -> str:
    """Why a record's numbers cannot be right ('' when they can): NaN, infinite, negative
    times or memory, non-positive time samples, accuracies outside [0, 1]."""
    import math

    def bad(value: Any, low: float, strict: bool) -> bool:
        if value is None:
            return False
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return True
        return not math.isfinite(value) or value < low or (strict and value == low)

    for name in POSITIVE_FIELDS:
        if bad(data.get(name), 0.0, True):
            return f"{name} = {data.get(name)!r} is not a positive finite number"
    for name in NON_NEGATIVE_FIELDS:
        if bad(data.get(name), 0.0, False):
            return f"{name} = {data.get(name)!r} is not a finite number >= 0"
    for name in FRACTION_FIELDS:
        value = data.get(name)
        if bad(value, 0.0, False) or (isinstance(value, (int, float)) and value > 1):
            return f"{name} = {value!r} is not a fraction in [0, 1]"
    samples = data.get("time_samples_s") or []
    if not isinstance(samples, list) or any(bad(x, 0.0, True) for x in samples):
        return "time_samples_s holds a value that is not a positive finite number"
    return ""
