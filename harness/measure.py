"""Measurement inside a worker: the timing loop and peak-memory readers (statistics of the samples:
harness.stats).

Time: warm-up calls first, then samples until ``min_time_s`` of measured time or
``max_repeats`` samples (at least ``min_repeats``); every sample is kept, and beside each the
CPU time the worker process used during it (``process_time``: not stretched when other processes
take the CPU away; ``run_bench.py ab --clock cpu`` compares it). The device-side timer
comes from the framework adapter (CUDA events for torch on GPU; perf_counter with
block_until_ready for JAX; perf_counter on CPU).

Lockstep (``run_bench.py ab``): two workers, one per side of an A/B comparison, take turns call
by call: each waits for the baton (one byte on a FIFO), makes one call, and passes the baton on,
so that both sides' samples are taken in the same seconds and whatever the machine does to its
speed meanwhile (on a shared virtual machine the same call's CPU time swung between 1.4 and
2.8 ms from one fifth of a second to the next) falls on both alike. Both make the same number of
warm-up calls and samples: the leader decides when sampling ends, by passing a stop byte
with its last turn. Lockstep workers also hold freed memory in the heap (hold_freed_memory), so
that page faults on fresh buffers do not come and go from one process to the next.

Memory, in a pass of its own: CPU: the worker's peak resident set (VmHWM, reset by writing 5
to /proc/self/clear_refs) above its resident set with the inputs allocated; CUDA (torch): the
allocator's peak above what is allocated before the call; JAX on GPU: the device's
peak_bytes_in_use above the bytes in use before.
"""

from __future__ import annotations

import os
import select
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


@dataclass(frozen=True)
class Lockstep:
    """Take turns with another worker (see the module docstring): wait on ``wait_path``, make
    one call, pass on ``pass_path`` (FIFOs). The leader takes the first turn and decides when
    sampling ends."""
    wait_path: str
    pass_path: str
    leader: bool
    timeout_s: float = 720.0        # the other side's first call may compile


CONTINUE, STOP = b"c", b"s"


class Baton:
    def __init__(self, lockstep: Lockstep) -> None:
        self.lockstep = lockstep
        # O_RDWR: opening a FIFO so never blocks, and it never reads end-of-file
        self.wait_fd = os.open(lockstep.wait_path, os.O_RDWR)
        self.pass_fd = os.open(lockstep.pass_path, os.O_RDWR)

    def wait(self) -> bytes:
        ready, _, _ = select.select([self.wait_fd], [], [], self.lockstep.timeout_s)
        if not ready:
            raise TimeoutError(f"lockstep: the other side did not pass the baton within "
                               f"{self.lockstep.timeout_s:g} s")
        return os.read(self.wait_fd, 1)

    def give(self, signal: bytes = CONTINUE) -> None:
        os.write(self.pass_fd, signal)

    def close(self) -> None:
        os.close(self.wait_fd)
        os.close(self.pass_fd)



@dataclass(frozen=True)
class TimingSettings:
    warmup: int = 2                 # warm-up calls after the first call, at most ...
    warmup_time_s: float = 1.0      # ... and no more once warm-up (with the first call) took this
    min_time_s: float = 0.5
    min_repeats: int = 3
    max_repeats: int = 50
    cuda_flush_l2: bool = True
    timer: str = "events"           # CUDA: "events" or "cudagraph" (harness.gpu_timing)
    lockstep: Lockstep | None = None  # take turns with another worker (run_bench.py ab)


@dataclass
class Workload:
    """One pass of one point, ready to call: ``run()`` does the work once.

    ``setup`` runs before each sample, untimed (e.g. clearing gradients); ``block(value)``
    waits for asynchronous work; ``check(value)`` says whether the output is finite.
    """

    run: Callable[[], Any]
    block: Callable[[Any], None]
    check: Callable[[Any], bool]
    input_bytes: int
    setup: Callable[[], None] = lambda: None
    timer: "Timer | None" = None
    inputs: tuple[Any, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)


class Timer:
    """Wall-clock timer around a call, waiting for the result."""

    name = "perf_counter"

    def time(self, work: Workload) -> tuple[float, Any]:
        start = time.perf_counter()
        value = work.run()
        work.block(value)
        return time.perf_counter() - start, value


def first_call(work: Workload) -> float:
    """Time of the very first call (JAX jit compilation, lazy initialisation): never a sample."""
    work.setup()
    start = time.perf_counter()
    value = work.run()
    work.block(value)
    return time.perf_counter() - start


def time_workload(work: Workload, settings: TimingSettings,
                  warm_s: float = 0.0) -> tuple[list[float], Any]:
    """Warm up, then sample until min_time_s or max_repeats; returns samples and last output.

    ``warm_s`` is warm-up time already spent (the first call): a call that takes seconds is
    warm after one or two calls, and further warm-up would only lengthen the run.
    """
    if settings.lockstep is not None:
        return time_in_lockstep(work, settings, settings.lockstep)
    timer = work.timer or Timer()
    value = None
    work.info["warmup_calls"] = 0
    for _ in range(settings.warmup):
        if warm_s >= settings.warmup_time_s:
            break
        work.info["warmup_calls"] += 1
        work.setup()
        start = time.perf_counter()
        value = work.run()
        work.block(value)
        warm_s += time.perf_counter() - start
    samples: list[float] = []
    cpu_samples: list[float] = []   # CPU time of the process per sample (outside the timed call)
    while True:
        work.setup()
        cpu_start = time.process_time()
        elapsed, value = timer.time(work)
        cpu_samples.append(time.process_time() - cpu_start)
        samples.append(elapsed)
        enough_time = sum(samples) >= settings.min_time_s
        if len(samples) >= settings.max_repeats or \
                (len(samples) >= settings.min_repeats and enough_time):
            break
    work.info["cpu_samples"] = cpu_samples
    return samples, value


def time_in_lockstep(work: Workload, settings: TimingSettings,
                     lockstep: Lockstep) -> tuple[list[float], Any]:
    """``settings.warmup`` warm-up calls, then samples, each call on its own turn of the baton.
    The leader samples until min_time_s or max_repeats (as time_workload does) and passes a stop
    with its last turn; a worker that receives a stop (from the leader, or from ab when the
    other side failed) takes one more sample and ends, so both end with as many samples."""
    timer = work.timer or Timer()
    hold_freed_memory()
    baton = Baton(lockstep)
    value = None
    samples: list[float] = []
    cpu_samples: list[float] = []
    signal = CONTINUE
    try:
        work.info["warmup_calls"] = 0
        for _ in range(settings.warmup):     # warm-up takes turns too: same count both sides
            signal = baton.wait()
            if signal == STOP:
                break
            work.setup()
            value = work.run()
            work.block(value)
            work.info["warmup_calls"] += 1
            baton.give()
        while True:
            if signal != STOP:
                signal = baton.wait()
            work.setup()
            cpu_start = time.process_time()
            elapsed, value = timer.time(work)
            cpu_samples.append(time.process_time() - cpu_start)
            samples.append(elapsed)
            if signal == STOP:
                break
            if lockstep.leader and (len(samples) >= settings.max_repeats or (
                    len(samples) >= settings.min_repeats and sum(samples) >= settings.min_time_s)):
                baton.give(STOP)
                break
            baton.give()
    finally:
        baton.close()
    work.info["cpu_samples"] = cpu_samples
    work.info["lockstep"] = "leader" if lockstep.leader else "follower"
    return samples, value


# -- CPU resident-set readers ------------------------------------------------------------------
STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def read_status_kib(field_name: str) -> int | None:
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0). False where that is impossible."""
    try:
        CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def rss_bytes() -> int | None:
    value = read_status_kib("VmRSS")
    return None if value is None else value * 1024


def peak_rss_bytes() -> int | None:
    value = read_status_kib("VmHWM")
    return None if value is None else value * 1024


def hold_freed_memory() -> None:
    """glibc: serve allocations up to 64 MiB from the heap and never trim it, so that a call's
    large buffers are reused memory in every process (lockstep timing for run_bench.py ab).

    With glibc's dynamic thresholds, whether a call's buffers come back as fresh pages (page
    faults on every call) depends on the process's allocation history: sdpa_math at T=256 (a
    2 MiB score matrix) had a median CPU time of 7.5 to 10 ms in one fresh process after another,
    and 4.5 to 6.4 ms with freed memory held. An A/B gate compares code, not that luck.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 64 * 1024 * 1024)
        libc.mallopt(m_trim_threshold, 1024 * 1024 * 1024)
    except (OSError, AttributeError):
        pass


def limit_malloc_caching() -> None:
    """Make glibc return large freed blocks to the OS, so RSS tracks what is really in use.

    Fixed mmap/trim thresholds (instead of glibc's dynamic ones) mean a tensor freed by one call
    is not silently reused by the next, which would hide part of its peak.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 256 * 1024)
        libc.mallopt(m_trim_threshold, 256 * 1024)
    except (OSError, AttributeError):
        pass
