"""The machine's state around a point's samples, from /proc: load average, CPU steal, and the
CPU time other processes took while the samples ran.

Why: on a 2-core machine a worker with two threads needs both cores; a process beside it that
keeps one core busy stalls every parallel region of a method made of many small operations
(hrr_torch at T=4096: 352 ms against 7.5 ms quiet, with a small spread among the samples). The
samples alone cannot tell; the CPU time the rest of the machine used over the same window can.

The arithmetic (pure functions of /proc text and numbers; tests feed fixture texts):
- ``/proc/stat`` counts, per CPU, the time spent busy (user, nice, system, irq, softirq),
  idle (idle, iowait) and stolen by the hypervisor (steal), in clock ticks (``SC_CLK_TCK``,
  usually 100 per second). Over the window, on the CPUs this process may run on: busy seconds
  minus this process's own CPU seconds (``time.process_time``, every thread of the worker) are
  the other processes' CPU seconds; over the window's length, the CPUs they took
  (``other_cpus``). steal / all ticks is the share of the CPUs' time the hypervisor gave to
  other machines (``cpu_steal_fraction``).
- ``/proc/loadavg``: the 1-minute load average at the end of the window (a slow average, kept
  as context; the classification uses the window's own figures).
Where /proc is absent (macOS) the fields are None and ``machine_state_note`` says why.
Whether the figures make a point noisy: harness.metrics.noise.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

PROC = Path("/proc")
# /proc/stat's cpu columns: user nice system idle iowait irq softirq steal (guest and
# guest_nice follow and are already counted in user and nice)
BUSY_COLUMNS = (0, 1, 2, 5, 6)
IDLE_COLUMNS = (3, 4)
STEAL_COLUMN = 7


@dataclass(frozen=True)
class CpuTicks:
    """Clock ticks of a set of CPUs since boot."""
    busy: int
    idle: int
    steal: int

    @property
    def total(self) -> int:
        return self.busy + self.idle + self.steal


def parse_proc_stat(text: str, cpus: Iterable[int] | None = None) -> CpuTicks:
    """The ticks of ``cpus`` (the ``cpuN`` lines; None: the aggregate ``cpu`` line) in
    /proc/stat's text. A CPU without a line counts nothing (offline)."""
    wanted = None if cpus is None else {f"cpu{n}" for n in cpus}
    busy = idle = steal = 0
    for line in text.splitlines():
        parts = line.split()
        if not parts or not parts[0].startswith("cpu"):
            continue
        if (wanted is None and parts[0] != "cpu") or (wanted is not None and
                                                      parts[0] not in wanted):
            continue
        values = [int(x) for x in parts[1:]] + [0] * 8
        busy += sum(values[i] for i in BUSY_COLUMNS)
        idle += sum(values[i] for i in IDLE_COLUMNS)
        steal += values[STEAL_COLUMN]
    return CpuTicks(busy=busy, idle=idle, steal=steal)


def parse_loadavg(text: str) -> float | None:
    """The 1-minute load average of /proc/loadavg's text."""
    parts = text.split()
    try:
        return float(parts[0])
    except (IndexError, ValueError):
        return None


@dataclass(frozen=True)
class Snapshot:
    """What is read at one end of the window."""
    at_s: float                    # time.perf_counter()
    own_cpu_s: float               # time.process_time(): this process, every thread
    ticks: CpuTicks | None         # None: no /proc/stat
    load_avg_1m: float | None
    note: str = ""                 # why ticks or the load average are missing


@dataclass(frozen=True)
class MachineState:
    """The window's figures, as the record keeps them (harness.contract.records.NoiseMetrics)."""
    load_avg_1m: float | None = None
    cpus_available: int | None = None
    cpus_needed: int | None = None
    other_cpus: float | None = None
    cpu_steal_fraction: float | None = None
    state_window_s: float | None = None
    machine_state_note: str = ""

    def fields(self) -> dict[str, Any]:
        return dict(self.__dict__)


def window_state(before: Snapshot, after: Snapshot, *, clock_ticks: int, cpus_available: int,
                 cpus_needed: int) -> MachineState:
    """The machine's state over the window between two snapshots: other processes' CPUs
    (busy CPU seconds of the CPUs this process may use, less its own CPU seconds, over the
    window) and the steal share."""
    window = after.at_s - before.at_s
    base = dict(load_avg_1m=after.load_avg_1m, cpus_available=cpus_available,
                cpus_needed=cpus_needed, state_window_s=window)
    note = after.note or before.note
    if before.ticks is None or after.ticks is None:
        return MachineState(**base, machine_state_note=note or "no CPU tick counts")
    if window <= 0 or clock_ticks <= 0:
        return MachineState(**base, machine_state_note="empty window")
    busy_s = (after.ticks.busy - before.ticks.busy) / clock_ticks
    own_s = after.own_cpu_s - before.own_cpu_s
    total = after.ticks.total - before.ticks.total
    steal = (after.ticks.steal - before.ticks.steal) / total if total > 0 else None
    # ticks are counted per CPU in whole ticks: a short window's busy time is coarse, and a
    # negative remainder is that rounding, not negative use
    others = max(0.0, busy_s - own_s) / window
    return MachineState(**base, other_cpus=others, cpu_steal_fraction=steal,
                        machine_state_note=note)


# -- the reader (the edge) -----------------------------------------------------------------------
def available_cpus() -> set[int] | None:
    """The CPUs this process may run on (None where the platform does not say)."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def clock_ticks_per_s() -> int:
    try:
        return int(os.sysconf("SC_CLK_TCK"))
    except (AttributeError, ValueError, OSError):
        return 100


def snapshot(cpus: Iterable[int] | None = None, proc: Path = PROC) -> Snapshot:
    """Read /proc/stat and /proc/loadavg now (with this process's CPU time and the clock)."""
    notes = []
    ticks = load = None
    try:
        ticks = parse_proc_stat((proc / "stat").read_text(), cpus)
    except OSError as exc:
        notes.append(f"cannot read {proc / 'stat'} ({type(exc).__name__}): no CPU tick counts")
    try:
        load = parse_loadavg((proc / "loadavg").read_text())
    except OSError:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            notes.append("no load average")
    return Snapshot(at_s=time.perf_counter(), own_cpu_s=time.process_time(), ticks=ticks,
                    load_avg_1m=load, note="; ".join(notes))


class MachineStateWatch:
    """A context manager around the samples: a snapshot on entry and on exit; ``state()``
    the window's MachineState. ``cpus_needed``: the CPUs the worker's threads need."""

    def __init__(self, cpus_needed: int | None = None, proc: Path = PROC) -> None:
        self.proc = proc
        self.cpus = available_cpus()
        self.cpus_needed = cpus_needed
        self.before: Snapshot | None = None
        self.after: Snapshot | None = None

    def __enter__(self) -> "MachineStateWatch":
        self.before = snapshot(self.cpus, self.proc)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.after = snapshot(self.cpus, self.proc)

    def state(self, cpus_needed: int | None = None) -> MachineState:
        available = len(self.cpus) if self.cpus else (os.cpu_count() or 1)
        needed = cpus_needed or self.cpus_needed or available
        if self.before is None or self.after is None:
            return MachineState(cpus_available=available, cpus_needed=needed,
                                machine_state_note="not measured (no samples taken)")
        return window_state(self.before, self.after, clock_ticks=clock_ticks_per_s(),
                            cpus_available=available, cpus_needed=needed)
