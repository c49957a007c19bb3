"""How a sweep measures (typed settings the plan fills and the measuring stage reads): timing
(warm-up, samples, timer, lockstep), the worker's context and the run's limits."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable


@dataclass(frozen=True)
class Lockstep:
    """Take turns with another worker (see the module docstring): wait on ``wait_path``, make
    one call, pass on ``pass_path`` (FIFOs). The leader takes the first turn and decides when
    sampling ends."""
    wait_path: str
    pass_path: str
    leader: bool
    timeout_s: float = 720.0        # the other side's first call may compile
    # both sides' workers pinned to this one CPU (os.sched_setaffinity; single-threaded workers
    # only): their turns then share one core's caches and neighbours (None: not pinned)
    cpu: int | None = None


@dataclass(frozen=True)
class TimingSettings:
    warmup: int = 2                 # warm-up calls after the first call, at most ...
    # ... and no more once warm-up (with the first call, and a reused worker's memory pass on
    # the same workload) took this: a call that takes a quarter second is warm after one
    warmup_time_s: float = 0.25
    min_time_s: float = 0.5
    min_repeats: int = 3
    # a fast call is sampled for min_time_s up to this many times (a 1 ms call: 200 samples)
    max_repeats: int = 200
    # --l2 cold (True, the default): a buffer larger than L2 written before each sample on a
    # GPU, untimed; --l2 warm (False): nothing written (harness.contract.records.L2_STATES)
    # past min_time_s and min_repeats, sampling goes on while the samples' relative spread
    # (IQR / median, harness.metrics.stats.relative_spread) is above noise_target, until
    # max_time_s of samples (or max_repeats); harness.measure.timing.stop_rule
    noise_target: float = 0.05
    max_time_s: float = 2.0
    cuda_flush_l2: bool = True
    timer: str = "events"           # CUDA: "events" or "cudagraph" (harness.measure.timers)
    lockstep: Lockstep | None = None  # take turns with another worker (run_bench.py ab)
    # --timing-basis: harness.contract.records.TIMING_BASES, or "auto" (resolve_timing_basis;
    # a plan and a Runner resolve it for their whole grid; a worker given "auto" alone times
    # torch on CUDA with events and everything else on the host)
    timing_basis: str = "auto"


def resolve_timing_basis(requested: str | None, cuda_frameworks: Iterable[str]) -> str:
    """The one timing basis of a run whose points on CUDA devices use ``cuda_frameworks``:
    the one requested, else (``auto``) ``device_events`` when every one is torch (the GPU's own
    time, the finer basis, where every framework of the run has it) and ``host_sync`` otherwise
    (JAX has no CUDA events: every framework on the host's clock with a wait for the result;
    CPU-only runs are timed that way in any case)."""
    if requested and requested != "auto":
        return requested
    frameworks = set(cuda_frameworks)
    return "device_events" if frameworks and frameworks <= {"torch"} else "host_sync"



# The share of a GPU's total memory a worker's framework may allocate when --max-memory is not
# given, the same for torch (its caching allocator's per-process fraction) and JAX (its memory
# fraction): JAX's allocator stops at 75% by default, torch's at none, which moved the OOM
# boundary and the largest T against JAX. The rest is room for what no allocator counts (the
# CUDA context, cuBLAS/cuDNN handles, loaded kernels).
DEFAULT_DEVICE_MEMORY_FRACTION = 0.90


@dataclass(frozen=True)
class WorkerContext:
    impl_modules: tuple[str, ...] = ()
    max_memory_bytes: int | None = None
    # the GPU memory cap without --max-memory (DEFAULT_DEVICE_MEMORY_FRACTION)
    device_memory_fraction: float = DEFAULT_DEVICE_MEMORY_FRACTION
    seed: int = 0
    # the Inductor/Triton/JAX compile cache the worker uses (harness.measure.compile_cache);
    # None: the frameworks' own defaults
    compile_cache_dir: str | None = None



# how points are isolated: "worker" (default), one reused worker per (implementation, device,
# dtype) measuring point after point, fresh after any failure (harness.measure.pool); "point",
# two fresh processes per point, a memory worker then a timing worker
ISOLATION_MODES = ("worker", "point")


@dataclass(frozen=True)
class RunSettings:
    timeout_s: float = 120.0
    max_memory_bytes: int | None = None
    # a GPU worker's memory cap without --max-memory, as a share of the device's total memory,
    # for every framework (recorded in run.json's settings; each record says the cap it had)
    device_memory_fraction: float = DEFAULT_DEVICE_MEMORY_FRACTION
    timing: TimingSettings = field(default_factory=TimingSettings)
    seed: int = 0
    impl_modules: tuple[str, ...] = ()
    cooldown_s: float = 0.0      # pause between implementations (GPU clocks settle)
    probe_timeout_s: float = 300.0
    # added to a task's timeout for implementations whose first call compiles (torch.compile:
    # FlexAttention's first compilation took 20 s to 3 min on a loaded 2-core CPU); compilation
    # is recorded apart (compile_time_s) and should not turn into a timeout
    compile_allowance_s: float = 600.0
    time_budget_s: float | None = None  # stop starting points after this many seconds
    isolate: str = "worker"             # ISOLATION_MODES
    # --compile-cache: one compile cache shared by the runs that name it; None: the run
    # directory's own (harness.measure.runner fills it in)
    compile_cache: str | None = None

    def worker_context(self) -> WorkerContext:
        return WorkerContext(impl_modules=self.impl_modules,
                             max_memory_bytes=self.max_memory_bytes,
                             device_memory_fraction=self.device_memory_fraction, seed=self.seed,
                             compile_cache_dir=self.compile_cache)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
