"""Lockstep timing (``run_bench.py ab``): two workers, one per side of an A/B comparison, take
turns call by call: each waits for the baton (one byte on a FIFO), makes one call, and passes the
baton on, so that both sides' samples are taken in the same seconds and whatever the machine does
to its speed meanwhile falls on both alike. Both make the same number of warm-up calls and
samples: the leader decides when sampling ends, by passing a stop byte with its last turn.
Lockstep workers also hold freed memory in the heap (``memory.hold_freed_memory``), so that page
faults on fresh buffers do not come and go from one process to the next.
"""

from __future__ import annotations

import contextlib
import os
import select
import time
from typing import Any

from harness.contract.workload import Workload
from harness.grid.settings import Lockstep, TimingSettings
from harness.measure.memory import hold_freed_memory
from harness.measure.timers import WallClockTimer


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


def pin_to(cpu: int | None, info: dict[str, Any]) -> None:
    """Pin this (single-threaded) worker to ``cpu`` for the rest of its life, both sides of a
    point on the same one; ``info["lockstep_cpu"]`` says where it ran. A CPU this process may not
    use (or a platform without affinity) leaves it unpinned."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return
    try:
        os.sched_setaffinity(0, {cpu})
    except (OSError, ValueError):
        return
    info["lockstep_cpu"] = cpu


def time_in_lockstep(work: Workload, settings: TimingSettings, lockstep: Lockstep,
                     watch: Any = None) -> tuple[list[float], Any]:
    """``settings.warmup`` warm-up calls, then samples, each call on its own turn of the baton.
    The leader samples until min_time_s or max_repeats (as time_workload does) and passes a stop
    with its last turn; a worker that receives a stop (from the leader, or from ab when the
    other side failed) takes one more sample and ends, so both end with as many samples.
    ``watch`` (harness.measure.gpu_watch, or any context manager) is entered around the samples."""
    timer = work.timer or WallClockTimer()
    hold_freed_memory()
    pin_to(lockstep.cpu, work.info)
    baton = Baton(lockstep)
    value = None
    samples: list[float] = []
    cpu_samples: list[float] = []
    signal = CONTINUE
    stack = contextlib.ExitStack()
    try:
        work.info["warmup_calls"] = 0
        for _ in range(settings.warmup):     # warm-up takes turns too: same count both sides
            signal = baton.wait()
            if signal == STOP:
                break
            work.next_call()
            value = work.run()
            work.block(value)
            work.info["warmup_calls"] += 1
            baton.give()
        if watch is not None:
            stack.enter_context(watch)
        while True:
            if signal != STOP:
                signal = baton.wait()
            work.next_call()
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
        stack.close()
        baton.close()
    work.info["cpu_samples"] = cpu_samples
    work.info["lockstep"] = "leader" if lockstep.leader else "follower"
    return samples, value
