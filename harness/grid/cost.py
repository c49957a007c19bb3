"""What a run is expected to cost, in seconds: a model of the whole run, not just its points.
Pure functions; shards are balanced by ``expected_cost_s`` and ``--dry-run`` prints
``run_cost`` for the grid and for every preset (harness.grid.forecast).

How a run spends its time (harness.measure.runner, harness.measure.pool):
- ``--isolate worker`` (the default): one worker per (implementation, device, dtype), started
  once; a probe and the correctness gate per combination in that worker; per point a cold first
  call (a method that compiles compiles here, once per distinct shape in the worker), one
  memory-pass call, one warm first call, warm-up calls while the calls so far took under
  ``warmup_time_s``, then samples until ``min_time_s`` (at least ``min_repeats``, at most
  ``max_repeats``);
- ``--isolate point``: one probe worker for every combination, then two fresh processes per
  point (memory: cold call and memory call; timing: cold call, warm-up, samples), each paying
  a start and, for a method that compiles, a compilation.

A call is expected to take work / rate + a per-call overhead, where work is exact attention's
4*B*H*T^2*D (mask-aware: harness.metrics.flops), HRR's (GEMM formulation) 4*B*H*T*D^2 or a
kernel method's (Performer) 4*B*H*T*D*M with M = 256 features, times 1 / 2.5 / 3.5 for
forward / backward / forward+backward; rate: achieved FLOP/s per implementation and dtype
where a run measured it, else the device kind's assumed rate per dtype.

The constants (``CostConstants``, one per device kind) come from a measured run where there is
one (``calibrate``: a run directory's ``overhead`` and records) and otherwise from the defaults
below, each with its source. Unpredictable costs are left out: failures that restart a worker,
an OOM's skipped points (they cost nothing), a machine busy with other work.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping, Sequence

from harness.contract.head_dims import value_dim
from harness.contract.records import Point
from harness.grid.settings import TimingSettings
from harness.metrics.flops import PASS_FACTOR, attention_flops

KERNEL_FEATURES = 256
ISOLATIONS = ("worker", "point")


@dataclass(frozen=True)
class Method:
    """What the model needs of an implementation."""
    name: str
    family: str = "exact"
    framework: str = "torch"
    compiles: bool = False       # torch.compile (Implementation.compiles)
    scores: bool = False         # holds the T x T scores (traits memory "scores"): may OOM
    compile_scope: str = "shape"  # compiles once per "shape" or per kernel "config" (traits)

    @property
    def compile_kind(self) -> str | None:
        """Which compiler its first call of a shape runs ('jax', 'torch.compile', None)."""
        return "torch.compile" if self.compiles else "jax" if self.framework == "jax" else None


@dataclass(frozen=True)
class CostConstants:
    """One device kind's costs. ``source`` says where they come from: measured (a run dir) or
    assumed (the defaults' reasoning)."""
    kind: str
    source: str
    worker_start_s: float        # a fresh worker: process, framework set-up, device context
    probe_s: float               # probe + correctness gate of one combination (compile apart)
    point_s: float               # per point beyond its calls: inputs, memory-pass set-up,
    #                              output checks, fidelity, the record
    call_overhead_s: float       # per call beyond its work: launch, synchronisation, timer
    rate_flops: Mapping[str, float]          # dtype -> FLOP/s of a call's work
    compile_s: Mapping[str, float]           # impl name or compile kind -> s per further
    #                                          compiled shape in a worker that compiled before
    first_compile_s: Mapping[str, float]     # the same keys -> s of a worker's first compilation
    impl_rate_flops: Mapping[str, float] = field(default_factory=dict)  # "impl/dtype" -> FLOP/s
    run_s: float = 0.0           # once per run: planning, the machine's peaks, run.json
    memory_bytes: float = math.inf   # what one worker may allocate (an OOM above it)
    measured: bool = False

    def rate(self, impl: str, dtype: str) -> float:
        return self.impl_rate_flops.get(f"{impl}/{dtype}") or self.rate_flops.get(dtype) or \
            min(self.rate_flops.values())

    def compile_time(self, method: Method, *, first: bool = False) -> float:
        """Seconds of one compilation: a worker's first (``first``: its probe's, or any in a
        fresh process), or a further shape's (torch.compile turns to dynamic shapes after a
        recompilation, so a series' further lengths mostly reuse one kernel)."""
        kind = method.compile_kind
        if kind is None:
            return 0.0
        table = self.first_compile_s if first else self.compile_s
        return table.get(method.name, table.get(kind, 0.0))


# Measured on this project's 2-core CPU (Intel Xeon, 24 GiB), shared with other work (load 6
# to 9 during the run, so the rates are about half an idle machine's):
# `run_bench.py sweep --out /tmp/cost-quick --no-report` (quick preset, reused workers: 290.7 s,
# 53 ok points), then `run_bench.py sweep --dry-run --costs-from /tmp/cost-quick` (calibrate)
# and rounded. Not separable from that run's totals, so assumed: probe + gate 0.5 s per
# combination, the rest of the probes' time (10 s) being FlexAttention's first compilation.
# run_s: the machine's peaks are measured until stable at the start and again at the end of a
# run (3.4 s each on the idle CPU, run.json's peaks.measurements[].measure_s; 0.9 s for the
# one fixed-count measurement run_s was first calibrated with): 2.9 - 0.9 + 2 x 3.4 = 8.8 s.
CPU_DEFAULT = CostConstants(
    kind="cpu",
    source="measured: the quick preset's first run from a fresh clone on an idle 2-core Xeon "
           "(harness/grid/cost.py)",
    worker_start_s=0.03, probe_s=1.3, point_s=0.23, call_overhead_s=2e-4,
    rate_flops={"float32": 1.5e10, "float64": 7e9, "bfloat16": 4e9, "float16": 4e9},
    impl_rate_flops={"softmax_torch/float32": 1.4e11, "sdpa_math/float32": 1e11,
                     "sdpa_flash/float32": 2.8e11, "flex_attention/float32": 8e10,
                     "softmax_jax/float32": 9e10, "hrr_torch/float32": 1.1e11,
                     "hrr_jax/float32": 1.1e11, "performer_torch/float32": 6.5e10},
    compile_s={"torch.compile": 0.55, "jax": 0.4, "flex_attention": 0.25,
               "hrr_jax": 0.05, "softmax_jax": 0.04},
    first_compile_s={"torch.compile": 10.0, "jax": 0.5},
    run_s=8.8, memory_bytes=24 * 2 ** 30, measured=True)

# Assumptions for one H100 (SXM, 80 GB), until a run's measurements replace them
# (--costs-from RUN_DIR):
# - worker start: fork from the preloaded forkserver plus CUDA context creation and cuBLAS
#   initialisation, 1-2 s per fresh process; 2 s taken;
# - probe + gate: a tiny input per combination and the float64 reference on the CPU: 0.5 s;
# - per point: inputs, emptying the allocator, NVML clock reads, the memory pass, output
#   checks: 0.3 s;
# - per call: launch, events and the L2 flush before each sample: 0.2 ms;
# - rate: dense fp16/bf16 peak is 989 TFLOP/s; FlashAttention-2/3-class kernels sustain
#   300-400 TFLOP/s forward and less at T <= 4K or with a backward: 150 TFLOP/s is taken for
#   every method but those that hold the T^2 scores (softmax_torch, sdpa_math: bound by the
#   scores' memory traffic at ~3.35 TB/s, 30 TFLOP/s taken); float32 30 TFLOP/s;
# - compile: torch.compile (FlexAttention) 10-30 s per compilation on a GPU host: a worker's
#   first 30 s; torch.compile turns to dynamic shapes after one recompilation (measured on the
#   CPU: a reused worker's further lengths compile in 0.4-0.7 s against about 10 s for its
#   first), so a further shape is taken as 5 s on average (one ~20 s dynamic recompilation
#   shared by a series' lengths); JAX (XLA:GPU) a first compilation 3 s (backend start
#   included), 1.5 s per further shape;
# - once per run: planning and run.json, and the peaks measured until stable twice (start and
#   end: at least 10 calls and 1 s of calls for each of three GEMM dtypes and the copy, about
#   4 s each time): 15 s.
H100_DEFAULT = CostConstants(
    kind="cuda",
    source="assumed H100 constants (no measured CUDA run; harness/grid/cost.py)",
    worker_start_s=2.0, probe_s=0.5, point_s=0.3, call_overhead_s=2e-4,
    rate_flops={"float16": 1.5e14, "bfloat16": 1.5e14, "float32": 3e13, "float64": 3e13},
    impl_rate_flops={f"{impl}/{dtype}": 3e13 for impl in ("softmax_torch", "sdpa_math")
                     for dtype in ("float16", "bfloat16")},
    compile_s={"torch.compile": 5.0, "jax": 1.5},
    first_compile_s={"torch.compile": 30.0, "jax": 3.0},
    run_s=15.0, memory_bytes=80e9)

DEFAULTS = {"cpu": CPU_DEFAULT, "cuda": H100_DEFAULT}


def device_kind(device: str) -> str:
    return device.split(":", 1)[0]


def defaults_for(device: str) -> CostConstants:
    return DEFAULTS.get(device_kind(device), CPU_DEFAULT)


# -- one call, one point ---------------------------------------------------------------------------
def expected_work(point: Point, family: str) -> float:
    """Floating-point operations one call is expected to do."""
    if family == "exact":
        if point.window < 0 and not point.documents and (
                not point.causal or point.n_queries == point.seq_len):
            # the mask-free and square causal cases in closed form (harness.metrics.flops
            # counts the pairs of any mask; the same numbers, without building the mask)
            t = point.seq_len
            pairs = t * (t + 1) // 2 if point.causal else point.n_queries * t
            return 2.0 * point.heads * (point.head_dim + value_dim(point)) * point.batch * \
                pairs * PASS_FACTOR[point.pass_]
        return attention_flops(point)
    base = 4.0 * point.batch * point.heads * point.seq_len * point.head_dim
    width = point.head_dim if family == "hrr" else KERNEL_FEATURES
    return base * width * PASS_FACTOR[point.pass_]


def call_s(point: Point, method: Method, c: CostConstants) -> float:
    """Expected seconds of one warm call."""
    return expected_work(point, method.family) / c.rate(method.name, point.dtype) + \
        c.call_overhead_s


def warmup_calls(call: float, warm_already: float, timing: TimingSettings) -> int:
    """Warm-up calls made (harness.measure.timing.time_workload): at most ``warmup``, none
    once the calls so far took ``warmup_time_s``."""
    calls, spent = 0, warm_already
    while calls < timing.warmup and spent < timing.warmup_time_s:
        calls, spent = calls + 1, spent + call
    return calls


def sample_calls(call: float, timing: TimingSettings) -> int:
    """Samples taken on a quiet machine (the spread target met at the minimum): until
    min_time_s, at least min_repeats, at most max_repeats."""
    wanted = math.ceil(timing.min_time_s / call) if call > 0 else timing.max_repeats
    return max(1, min(timing.max_repeats, max(timing.min_repeats, wanted)))


def busy_sample_calls(call: float, timing: TimingSettings) -> int:
    """Samples taken when the spread never meets --noise-target (a busy machine): on until
    max_time_s of samples, at least as many as on a quiet one, at most max_repeats."""
    cap = max(timing.max_time_s, timing.min_time_s)
    wanted = math.ceil(cap / call) if call > 0 else timing.max_repeats
    return max(sample_calls(call, timing), min(timing.max_repeats, wanted))


@dataclass(frozen=True)
class PointCost:
    calls_s: float       # every call (samples included), compilation apart
    samples_s: float
    compile_s: float
    start_s: float       # fresh workers started for this point (point isolation)
    fixed_s: float
    busy_extra_s: float = 0.0   # more samples if the spread never meets the target

    @property
    def total_s(self) -> float:
        return self.calls_s + self.compile_s + self.start_s + self.fixed_s


def point_cost(point: Point, method: Method, c: CostConstants, timing: TimingSettings, *,
               isolate: str = "worker", compiles_here: bool = True) -> PointCost:
    """One point's expected seconds. ``compiles_here``: its shape is new to its worker (worker
    isolation, where the probe made the worker's first compilation; a point-isolated point
    makes a first compilation in both of its fresh processes)."""
    call = call_s(point, method, c)
    samples = sample_calls(call, timing) * call
    busy = (busy_sample_calls(call, timing) - sample_calls(call, timing)) * call
    if isolate == "point":
        # memory process: cold call + memory call; timing process: cold call, warm-up, samples
        compile_once = c.compile_time(method, first=True)
        cold = call + compile_once
        warm = warmup_calls(call, cold, timing)
        return PointCost(calls_s=(3 + warm) * call + samples, samples_s=samples,
                         compile_s=2 * compile_once, start_s=2 * c.worker_start_s,
                         fixed_s=2 * c.point_s, busy_extra_s=busy)
    compile_s = c.compile_time(method) if compiles_here else 0.0
    warm = warmup_calls(call, 3 * call + compile_s, timing)   # cold, memory, first calls
    return PointCost(calls_s=(3 + warm) * call + samples, samples_s=samples,
                     compile_s=compile_s, start_s=0.0, fixed_s=c.point_s, busy_extra_s=busy)


DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}


def scores_bytes(point: Point) -> float:
    """Memory a method that holds the T x T scores needs: scores and probabilities (and their
    gradients with a backward) of every head, in the point's dtype."""
    copies = 2 if point.pass_ == "forward" else 4
    return float(point.batch * point.heads * point.n_queries * point.seq_len *
                 DTYPE_BYTES.get(point.dtype, 4) * copies)


def expected_cost_s(point: Point, family: str, constants: CostConstants | None = None,
                    timing: TimingSettings | None = None) -> float:
    """A point's expected seconds in a reused worker (compiling methods aside): what shards are
    balanced by (only ratios matter there)."""
    return point_cost(point, Method(point.impl, family), constants or defaults_for(point.device),
                      timing or TimingSettings()).total_s


# -- a whole run ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunCost:
    isolation: str
    total_s: float
    series_s: dict[tuple, float]     # series key -> its points' seconds
    workers: int
    worker_start_s: float
    probes: int
    probe_s: float
    compiled_shapes: int
    compile_s: float
    samples_s: float
    calls_s: float
    fixed_s: float
    cooldown_s: float
    run_s: float
    points: int
    failures: int                    # points expected to run out of memory or time
    skipped: int                     # larger T of their series, not tried
    measured: bool                   # every constant used came from a measured run
    # at most this much more where no point's spread meets --noise-target (a busy machine:
    # each point samples on to --max-time)
    busy_extra_s: float = 0.0


def worker_key(point: Point) -> tuple[str, str, str]:
    return point.impl, point.device, point.dtype


def combination(point: Point) -> tuple:
    """What one probe + gate covers (harness.measure.runner.combo_of)."""
    return (point.impl, point.device, point.dtype, point.causal,
            tuple(sorted(point.features())), tuple(sorted(point.keyword_values().items())))


def run_cost(points: Sequence[Point], method_of: Callable[[str], Method],
             constants_of: Callable[[str], CostConstants], *,
             timing: TimingSettings | None = None, isolate: str = "worker",
             cooldown_s: float = 0.0, timeout_s: float = 120.0,
             compile_allowance_s: float = 600.0) -> RunCost:
    """Expected seconds of a run of these points (all assumed to run: leave out what static
    checks skip). Points are taken in the runner's order (series, then T). A point expected to
    run out of memory (a method holding the scores above ``memory_bytes``) or past its task's
    timeout costs its failure (the timeout, a fresh worker) and the series' larger T are
    skipped, as the runner does."""
    timing = timing or TimingSettings()
    ordered = sorted(points, key=lambda p: (p.series_key(), p.seq_len))
    series: dict[tuple, float] = {}
    seen_shapes: set[tuple] = set()
    workers: dict[tuple, CostConstants] = {}
    combos: dict[tuple, tuple[Method, CostConstants]] = {}
    samples = calls = compile_s = starts = fixed = busy_extra = 0.0
    shapes = switches = 0
    previous = None
    failed: set[tuple] = set()
    failures = skipped = 0
    for point in ordered:
        method, c = method_of(point.impl), constants_of(point.device)
        key = point.series_key()
        workers.setdefault(worker_key(point), c)
        combos.setdefault(combination(point), (method, c))
        if key in failed:
            skipped += 1
            continue
        # a config-scoped compiler compiles once for every T and batch of a configuration
        shape = (worker_key(point), point if method.compile_scope == "shape" else
                 replace(point, seq_len=0, batch=0))
        new = shape not in seen_shapes
        seen_shapes.add(shape)
        cost = point_cost(point, method, c, timing, isolate=isolate, compiles_here=new)
        limit = timeout_s + (compile_allowance_s if method.compiles else 0.0)
        if isolate == "worker":
            limit += timeout_s     # both passes in one task
        per_task = cost.total_s / 2 if isolate == "point" else cost.total_s
        out_of_memory = method.scores and scores_bytes(point) > c.memory_bytes
        if out_of_memory or per_task > limit:
            # the failure's cost: the time until it (a point's set-up, or the timeout), and
            # the fresh worker that takes the next point
            cost = PointCost(0.0, 0.0, 0.0, c.worker_start_s,
                             c.point_s if out_of_memory else limit)
            failed.add(key)
            failures += 1
        shapes += cost.compile_s > 0 and (new or isolate == "point")
        series[key] = series.get(key, 0.0) + cost.total_s
        samples += cost.samples_s
        busy_extra += cost.busy_extra_s
        calls += cost.calls_s
        compile_s += cost.compile_s
        starts += cost.start_s
        fixed += cost.fixed_s
        switches += previous is not None and previous != point.impl
        previous = point.impl
    used = {id(c): c for c in workers.values()}
    if isolate == "point":   # one probe worker per device kind for every combination
        worker_start = sum(c.worker_start_s for c in used.values())
        started = len(used) + 2 * len(ordered)
    else:
        worker_start = sum(c.worker_start_s for c in workers.values())
        started = len(workers) + failures
    # the probe of a worker's first combination makes its first compilation (one probe worker
    # for all with point isolation: its first compilation of each method)
    first_compiles = {(m.name, id(c)) if isolate == "point" else key[:3]:
                      c.compile_time(m, first=True) for key, (m, c) in combos.items()}
    probe = math.fsum(c.probe_s for _m, c in combos.values()) + \
        math.fsum(first_compiles.values())
    run_s = max((c.run_s for c in used.values()), default=0.0)
    cooldown = switches * cooldown_s
    total = math.fsum(series.values()) + worker_start + probe + run_s + cooldown
    return RunCost(isolation=isolate, total_s=total, series_s=series, workers=started,
                   worker_start_s=worker_start + starts, probes=len(combos), probe_s=probe,
                   compiled_shapes=shapes, compile_s=compile_s, samples_s=samples,
                   calls_s=calls, fixed_s=fixed, cooldown_s=cooldown, run_s=run_s,
                   points=len(ordered), failures=failures, skipped=skipped,
                   measured=all(c.measured for c in used.values()), busy_extra_s=busy_extra)


# -- calibration from a measured run ------------------------------------------------------
def calibrate(overhead: Mapping[str, Any] | None, records: Iterable[Mapping[str, Any]],
              method_of: Callable[[str], Method], base: CostConstants,
              settings: Mapping[str, Any] | None = None) -> CostConstants:
    """``base`` with what a run measured (its run.json ``overhead`` and ``settings``, its
    records as dicts): worker start-up per worker, probe + gate per combination, the per-point
    fixed cost, compilation per compiled shape (median compile_time_s per implementation), and
    achieved FLOP/s per implementation and dtype (work / median sample). What the run does not
    tell keeps ``base``'s value."""
    speed = [r for r in records if r.get("kind", "speed") == "speed"
             and device_kind(str(r.get("device", ""))) == base.kind]
    ok = [r for r in speed if r.get("status") == "ok" and r.get("time_s")]
    changes: dict[str, Any] = {}
    rates: dict[str, list[float]] = {}
    compiles: dict[str, list[float]] = {}
    first_compiles: dict[str, list[float]] = {}
    fixed: list[float] = []
    for r in ok:
        point = Point.from_dict(dict(r))
        method = method_of(point.impl)
        median = float(r["time_s"])
        work = expected_work(point, method.family)
        rates.setdefault(f"{point.impl}/{point.dtype}", []).append(
            work / max(median - base.call_overhead_s, median * 0.1))
        compiled = r.get("compile_time_s")
        if method.compile_kind is not None and compiled is not None:
            # a point-isolated point's compilation is a fresh process's first
            found = compiles if r.get("isolation") == "worker" else first_compiles
            found.setdefault(point.impl, []).append(float(compiled))
        wall = r.get("wall_s")
        first = r.get("first_call_s", (r.get("extra") or {}).get("first_call_s"))
        if wall is not None and first is not None and r.get("isolation", "point") == "worker":
            sampled = math.fsum(r.get("time_samples_s") or ())
            warm = int(r.get("warmup") or 0)
            fixed.append(float(wall) - float(first) - sampled - (2 + warm) * median)
    if rates:
        changes["impl_rate_flops"] = {**base.impl_rate_flops,
                                      **{k: statistics.median(v) for k, v in rates.items()}}
    if compiles:
        changes["compile_s"] = {**base.compile_s,
                                **{k: statistics.median(v) for k, v in compiles.items()}}
    if first_compiles:
        changes["first_compile_s"] = {**base.first_compile_s, **{
            k: statistics.median(v) for k, v in first_compiles.items()}}
    if fixed:
        changes["point_s"] = max(0.0, statistics.median(fixed))
    overhead = dict(overhead or {})
    started = overhead.get("workers_started")
    isolation = overhead.get("isolation") or "point"
    tasks = overhead.get("tasks")
    if overhead.get("worker_start_s") is not None:
        count = started if isolation == "worker" else tasks
        if count:
            changes["worker_start_s"] = float(overhead["worker_start_s"]) / count
    if isolation == "worker" and overhead.get("wall_s") is not None and speed:
        # what is neither a point task, a worker start nor the parent: probes and gates
        in_points = math.fsum(float(r.get("wall_s") or 0.0) for r in speed)
        combos = {combination(Point.from_dict(dict(r))): method_of(str(r["impl"]))
                  for r in speed if r.get("status") != "unsupported"}
        calibrated = replace(base, **{k: v for k, v in changes.items()
                                      if k == "first_compile_s"})
        firsts = {key[:3]: calibrated.compile_time(m, first=True) for key, m in combos.items()}
        probe_compile = math.fsum(firsts.values())
        rest = float(overhead["wall_s"]) - float(overhead.get("parent_s") or 0.0) - \
            float(overhead.get("worker_start_s") or 0.0) - in_points - probe_compile
        if combos:
            changes["probe_s"] = max(0.0, rest / len(combos))
    if overhead.get("parent_s") is not None:
        cooldown = float((settings or {}).get("cooldown_s") or 0.0)
        switches = max(0, len({r.get("impl") for r in ok}) - 1)
        changes["run_s"] = max(0.0, float(overhead["parent_s"]) - cooldown * switches)
    if not changes:
        return base
    return replace(base, **changes, measured=True,
                   source=f"measured: {len(ok)} ok record(s) of a {isolation}-isolated run")
