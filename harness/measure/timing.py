"""The timing loop inside a worker (statistics of the samples: harness.metrics.stats).

Warm-up calls first, then samples until ``stop_rule`` ends them: at least ``min_time_s`` of
measured time and ``min_repeats`` samples, then on until the samples' relative spread (IQR /
median) is at most ``noise_target`` or ``max_time_s`` of samples, never more than
``max_repeats`` samples (nvbench's rule, with a spread robust to a single preempted sample);
the rule that ended sampling goes to ``work.info["stop_rule"]``. Every sample is kept, and
beside each the CPU time the worker process used during it (``process_time``: not stretched
when other processes take the CPU away; ``run_bench.py ab --clock cpu`` compares it). The timer
is the workload's (harness.measure.timers: CUDA events for torch on GPU, an L2-flushing timer
for JAX on GPU) or wall-clock on the CPU.
Lockstep timing for ``run_bench.py ab``: harness.measure.lockstep; memory: harness.measure.memory.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from harness.contract.workload import Workload
from harness.grid.settings import TimingSettings
from harness.metrics.stats import relative_spread
from harness.measure.lockstep import time_in_lockstep
from harness.measure.timers import WallClockTimer


# the rules that end sampling (the record's stop_rule)
SPREAD_MET = "spread target met"
TIME_CAP = "time cap"
MAX_REPEATS = "max repeats"
STOP_RULES = (SPREAD_MET, TIME_CAP, MAX_REPEATS)


def stop_rule(samples: list[float], settings: TimingSettings) -> str | None:
    """The rule that ends sampling after ``samples``, or None to take another: none before
    ``min_repeats`` samples and ``min_time_s`` of them (max_repeats aside); then the spread
    target, else the time cap, else max_repeats."""
    total = sum(samples)
    minimum = len(samples) >= settings.min_repeats and total >= settings.min_time_s
    if minimum:
        spread = relative_spread(samples)
        if spread is not None and spread <= settings.noise_target:
            return SPREAD_MET
        if total >= settings.max_time_s:
            return TIME_CAP
    if len(samples) >= settings.max_repeats:
        return MAX_REPEATS
    return None


def first_call(work: Workload) -> float:
    """Time of the very first call (JAX jit compilation, lazy initialisation): never a sample."""
    work.setup()
    elapsed, _ = WallClockTimer().time(work)
    return elapsed


def time_workload(work: Workload, settings: TimingSettings,
                  warm_s: float = 0.0, watch: Any = None) -> tuple[list[float], Any]:
    """Warm up, then sample until ``stop_rule`` says; returns samples and last output.

    ``warm_s`` is warm-up time already spent (the first call): a call that takes seconds is
    warm after one or two calls, and further warm-up would only lengthen the run. ``watch``
    (harness.measure.gpu_watch) is entered after the warm-up, around the samples only; each
    sample's perf_counter start and end go to ``work.info["sample_spans"]`` so that the watch
    can tell which samples ran at which clock.
    """
    watch = watch if watch is not None else contextlib.nullcontext()
    if settings.lockstep is not None:
        return time_in_lockstep(work, settings, settings.lockstep, watch=watch)
    timer = work.timer or WallClockTimer()
    warm_timer = WallClockTimer()   # warm-up counts wall-clock time against warmup_time_s
    value = None
    work.info["warmup_calls"] = 0
    for _ in range(settings.warmup):
        if warm_s >= settings.warmup_time_s:
            break
        work.info["warmup_calls"] += 1
        work.next_call()
        elapsed, value = warm_timer.time(work)
        warm_s += elapsed
    samples: list[float] = []
    cpu_samples: list[float] = []   # CPU time of the process per sample (outside the timed call)
    spans: list[tuple[float, float]] = []
    with watch:
        while True:
            work.next_call()
            cpu_start = time.process_time()
            start = time.perf_counter()
            elapsed, value = timer.time(work)
            spans.append((start, time.perf_counter()))
            cpu_samples.append(time.process_time() - cpu_start)
            samples.append(elapsed)
            rule = stop_rule(samples, settings)
            if rule is not None:
                break
    work.info["stop_rule"] = rule
    work.info["cpu_samples"] = cpu_samples
    work.info["sample_spans"] = spans
    return samples, value



# -- CPU resident-set readers ------------------------------------------------------------------

