"""Energy per call: a cumulative energy counter read just before and just after the timed samples.

Two counters, each the whole device's (or the whole CPU package's) energy:
- NVIDIA GPUs: NVML's total-energy counter (``nvmlDeviceGetTotalEnergyConsumption``, millijoules
  since the driver was loaded; Volta and later), read through the NVML handle the clock watch
  (harness.measure.gpu_watch.ClockWatch) already holds: one NVML session per timing pass;
- CPUs: RAPL's package domains under ``/sys/class/powercap/intel-rapl*`` (``energy_uj``,
  microjoules, wrapping at ``max_energy_range_uj``), summed over the packages.

The meter (``EnergyMeter``) is a context manager entered inside the clock watch, around the
samples only; the window is the perf_counter time between its two readings. Energy per call is
the window's energy over the samples taken in it (every sample is one call, and the window also
holds what runs between calls: the per-sample set-up, an L2 flush, the timer's synchronisation),
per token over the point's tokens, mean power over the window's length.

Resolution: the counter's unit (1 mJ for NVML, 1 uJ for RAPL's sysfs file) and, what matters
more, its update interval: a counter read between two updates returns the value of the last
update, so each reading lags by up to one interval and the difference is off by up to one
interval's energy. The interval is measured once per process and counter (``update_interval``:
the time between two changes of the counter), recorded per record; a window shorter than
``MIN_WINDOW_UPDATES`` intervals gives no value (the reason says so), and a value's relative
error bound from the lag (interval / window) is recorded beside it.

The counters count everything the device (or package) runs: other processes on a shared GPU or
CPU are in the number. Pure arithmetic first; the readers (sysfs, NVML) at the end.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

NVML_SOURCE = "nvml_total_energy"
RAPL_SOURCE = "rapl"
POWERCAP_ROOT = Path("/sys/class/powercap")

# a value needs a window of at least this many counter updates: each reading lags by up to one
# update, so the lag error is at most 1 / MIN_WINDOW_UPDATES of the window's energy
MIN_WINDOW_UPDATES = 2
# how long update_interval watches the counter for two changes before giving up
PROBE_LIMIT_S = 0.5
PROBE_POLL_S = 0.0002


class CounterError(Exception):
    """A counter that cannot be read; the message is the record's energy_reason."""


# -- arithmetic (pure) ------------------------------------------------------------------------
def counter_delta(start: int, end: int, max_range: int | None) -> int:
    """``end - start`` of a counter that wraps to 0 after ``max_range`` (None: never wraps; a
    decrease is then an error). At most one wrap is assumed: RAPL's range is hundreds of
    kilojoules, minutes at a package's power, and a window is seconds."""
    if end >= start:
        return end - start
    if max_range is None or max_range <= 0:
        raise CounterError(f"energy counter went backwards ({start} -> {end}): "
                           "driver reloaded during the window?")
    return max_range - start + end


def rapl_joules(start: list[int], end: list[int], ranges: list[int | None]) -> float:
    """Joules over a window of RAPL package counters (microjoules), each with its wrap range."""
    return sum(counter_delta(a, b, r) for a, b, r in zip(start, end, ranges)) * 1e-6


def interval_from_changes(readings: list[tuple[float, float]]) -> float | None:
    """The counter's update interval from (time, value) readings in time order: the time between
    the first two changes of the value seen after the first reading (the first change ends an
    interval that started before the readings did, so it is only a start); None with fewer than
    two changes."""
    changes: list[float] = []
    for (_, before), (at, value) in zip(readings, readings[1:]):
        if value != before:
            changes.append(at)
            if len(changes) == 2:
                return changes[1] - changes[0]
    return None


def energy_fields(*, joules: float, window_s: float, calls: int, tokens: int,
                  resolution_j: float | None, interval_s: float | None, source: str,
                  probe_limit_s: float = PROBE_LIMIT_S) -> dict[str, Any]:
    """The record's energy fields from one window's reading (pure): values, or the reason none
    can be given (window too short for the counter, counter not advancing, no calls)."""
    out = no_energy("", source=source, resolution_j=resolution_j, interval_s=interval_s)
    out["energy_window_s"] = window_s
    if calls <= 0 or window_s <= 0:
        out["energy_reason"] = "no calls in the energy window"
        return out
    needed = MIN_WINDOW_UPDATES * (interval_s if interval_s is not None else probe_limit_s)
    if window_s < needed:
        if interval_s is None:
            why = (f"counter update interval unknown (fewer than two updates in "
                   f"{probe_limit_s:g} s)")
        else:
            why = f"counter updates every {interval_s * 1e3:.3g} ms"
        out["energy_reason"] = (f"window shorter than the counter's update interval: "
                                f"{window_s:.3g} s < {MIN_WINDOW_UPDATES} updates ({why})")
        return out
    if joules <= 0:
        out["energy_reason"] = f"counter did not advance over the {window_s:.3g} s window"
        return out
    out.update(energy_j_per_call=joules / calls,
               energy_j_per_token=joules / calls / tokens if tokens > 0 else None,
               mean_power_w=joules / window_s,
               energy_error_max=(interval_s / window_s) if interval_s is not None else None)
    return out


def no_energy(reason: str, *, source: str = "", resolution_j: float | None = None,
              interval_s: float | None = None) -> dict[str, Any]:
    """The record's energy fields without a value, and why."""
    return {"energy_j_per_call": None, "energy_j_per_token": None, "mean_power_w": None,
            "energy_window_s": None, "energy_error_max": None,
            "energy_counter_resolution_j": resolution_j,
            "energy_counter_interval_s": interval_s, "energy_source": source,
            "energy_reason": reason}


# -- counters ---------------------------------------------------------------------------------
class Counter(Protocol):
    source: str
    resolution_j: float
    key: str            # what the update interval is cached under (one per counter and device)

    def read(self) -> Any: ...                       # a raw reading; CounterError if it fails

    def joules(self, start: Any, end: Any) -> float: ...

    def scalar(self, reading: Any) -> float: ...     # one number, to see the counter change


# update intervals measured in this process: {Counter.key: seconds or None}
INTERVALS: dict[str, float | None] = {}


def update_interval(counter: Counter, *, clock: Callable[[], float] = time.perf_counter,
                    sleep: Callable[[float], None] = time.sleep,
                    limit_s: float = PROBE_LIMIT_S, poll_s: float = PROBE_POLL_S) -> float | None:
    """The counter's update interval, measured once per process (cached in INTERVALS): readings
    every ``poll_s`` until the value changed twice or ``limit_s`` passed."""
    if counter.key in INTERVALS:
        return INTERVALS[counter.key]
    readings = [(clock(), counter.scalar(counter.read()))]
    start = readings[0][0]
    interval = None
    while readings[-1][0] - start < limit_s:
        sleep(poll_s)
        readings.append((clock(), counter.scalar(counter.read())))
        interval = interval_from_changes(readings)
        if interval is not None:
            break
    INTERVALS[counter.key] = interval
    return interval


class EnergyMeter:
    """Context manager: the counter read on entry and on exit; ``fields()`` after.

    ``open()`` (the update interval, measured once per process) may be called ahead, before the
    warm-up, so that entering only reads the counter. Without a counter, ``reason`` says why and
    every entry and exit does nothing."""

    def __init__(self, counter: Counter | None, reason: str = "", *,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.counter = counter
        self.reason = reason if counter is None else ""
        self.interval_s: float | None = None
        self.clock = clock
        self._opened = False
        self._start: tuple[float, Any] | None = None
        self._end: tuple[float, Any] | None = None

    def open(self) -> bool:
        if self._opened or self.counter is None:
            return self.counter is not None and not self.reason
        self._opened = True
        try:
            self.interval_s = update_interval(self.counter)
        except CounterError as exc:
            self.reason = str(exc)
        return not self.reason

    def _read(self) -> tuple[float, Any] | None:
        if self.counter is None or self.reason:
            return None
        try:
            reading = self.counter.read()
        except CounterError as exc:
            self.reason = str(exc)
            return None
        return self.clock(), reading

    def __enter__(self) -> "EnergyMeter":
        self.open()
        self._start, self._end = self._read(), None
        return self

    def __exit__(self, *exc: Any) -> None:
        self._end = self._read() if self._start is not None else None

    def fields(self, *, calls: int, tokens: int) -> dict[str, Any]:
        """The record's energy fields for ``calls`` calls of ``tokens`` tokens each."""
        counter = self.counter
        source = counter.source if counter is not None else ""
        resolution = counter.resolution_j if counter is not None else None
        if self.reason or self._start is None or self._end is None:
            return no_energy(self.reason or "energy counter not read around the samples",
                             source=source if not self.reason else "",
                             resolution_j=resolution, interval_s=self.interval_s)
        try:
            joules = counter.joules(self._start[1], self._end[1])
        except CounterError as exc:
            return no_energy(str(exc), resolution_j=resolution, interval_s=self.interval_s)
        return energy_fields(joules=joules, window_s=self._end[0] - self._start[0],
                             calls=calls, tokens=tokens, resolution_j=resolution,
                             interval_s=self.interval_s, source=source)


# -- RAPL (CPU packages, sysfs) ---------------------------------------------------------------
@dataclass
class RaplCounter:
    """The package domains of RAPL's powercap tree, summed (microjoules, each wrapping)."""
    files: list[Path]
    ranges: list[int | None]
    source: str = RAPL_SOURCE
    resolution_j: float = 1e-6      # the file's unit; the hardware's energy unit may be coarser
    key: str = "rapl"

    def read(self) -> list[int]:
        return [read_int(path) for path in self.files]

    def joules(self, start: list[int], end: list[int]) -> float:
        return rapl_joules(start, end, self.ranges)

    def scalar(self, reading: list[int]) -> float:
        return float(sum(reading))


def read_int(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except PermissionError:
        raise CounterError(f"RAPL not readable: permission denied on {path} (root only on "
                           "Linux 5.10 and later, CVE-2020-8694)") from None
    except (OSError, ValueError) as exc:
        raise CounterError(f"RAPL not readable: {path}: {type(exc).__name__}: {exc}") from None


def rapl_counter(root: Path = POWERCAP_ROOT) -> tuple[RaplCounter | None, str]:
    """(the package counter, '') or (None, why RAPL cannot be read here)."""
    if not root.is_dir():
        return None, (f"RAPL not readable: {root} absent (a virtual machine or container "
                      "usually hides it)")
    packages = []
    for domain in sorted(root.glob("intel-rapl*")):
        if domain.name.count(":") != 1 or not (domain / "energy_uj").exists():
            continue   # the control type itself, or a sub-domain (core, uncore, dram)
        try:
            name = (domain / "name").read_text().strip()
        except OSError:
            name = ""
        if name.startswith("package"):
            packages.append(domain)
    if not packages:
        return None, f"RAPL not readable: no package domain under {root}"
    ranges: list[int | None] = []
    for domain in packages:
        try:
            ranges.append(read_int(domain / "max_energy_range_uj"))
        except CounterError:
            ranges.append(None)
    counter = RaplCounter([d / "energy_uj" for d in packages], ranges)
    try:
        counter.read()
    except CounterError as exc:
        return None, str(exc)
    return counter, ""


# -- NVML (GPUs), through the clock watch's handle --------------------------------------------
@dataclass
class NvmlCounter:
    """nvmlDeviceGetTotalEnergyConsumption on one device handle (millijoules, never wraps)."""
    nvml: Any
    handle: Any
    key: str = "nvml"
    source: str = NVML_SOURCE
    resolution_j: float = 1e-3

    def read(self) -> int:
        try:
            return int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))
        except Exception as exc:  # noqa: BLE001 - pynvml's NVMLError subclasses, by name
            raise CounterError(nvml_reason(exc)) from None

    def joules(self, start: int, end: int) -> float:
        return counter_delta(start, end, None) * 1e-3

    def scalar(self, reading: int) -> float:
        return float(reading)


def nvml_reason(exc: BaseException) -> str:
    name = type(exc).__name__
    if "NotSupported" in name or "not supported" in str(exc).lower():
        return "counter not supported on this GPU (NVML total energy: Volta and later)"
    if isinstance(exc, AttributeError):
        return "counter not supported by this NVML binding (no nvmlDeviceGetTotalEnergyConsumption)"
    return f"NVML total energy not readable ({name}: {exc})"


def meter_for(device: str, watch: Any = None, *, powercap: Path = POWERCAP_ROOT) -> EnergyMeter:
    """The energy meter of a point: NVML's counter through an opened clock watch's handle (the
    watch's NVML session), RAPL on the CPU, else a meter that says why there is none."""
    nvml_handle = getattr(watch, "nvml_handle", None)
    if nvml_handle is not None:
        nvml, handle, key = nvml_handle()
        if handle is None:
            why = str(getattr(watch, "unavailable", "")).replace(": clocks not sampled", "")
            return EnergyMeter(None, f"no NVML: {why}" if why else "no NVML")
        return EnergyMeter(NvmlCounter(nvml, handle, key=f"nvml:{key}"))
    kind = device.split(":", 1)[0]
    if kind == "cpu":
        counter, reason = rapl_counter(powercap)
        return EnergyMeter(counter, reason)
    if kind == "cuda":
        return EnergyMeter(None, "no NVML: no clock watch on this device")
    return EnergyMeter(None, f"no energy counter for {kind} devices")


@contextlib.contextmanager
def metered(watch: Any, meter: EnergyMeter) -> Iterator[Any]:
    """The clock watch entered, then the meter inside it (the window holds the samples, not the
    watch's start and stop); what harness.measure.timing enters around the samples."""
    with watch, meter:
        yield watch


def lockstep_meter() -> EnergyMeter:
    """Lockstep timing (run_bench.py ab): the two sides take turns on the same device, so the
    window holds the other side's calls as well."""
    return EnergyMeter(None, "lockstep timing (run_bench.py ab): the other side's calls share "
                             "the window")
