"""GPU clocks, temperature, power and throttle reasons sampled with NVML while a point is timed.

Sustained benchmarks lower the SM clock (power and thermal limits), so a number timed on a
throttled GPU is not the GPU's number. ``ClockWatch`` polls NVML in a background thread while
the samples of one point are taken (entered after the warm-up: compilation and warm-up leave the
GPU idle at its idle clock, 345 MHz on an H200, which says nothing about the timed calls);
``summarise`` turns the samples into the record's fields.

What is judged:
- samples NVML marks idle (the ``gpu_idle`` clocks-event reason: the GPU had no work, e.g. a
  launch-bound tiny point between kernels) are dropped; the rest are the samples used;
- ``throttled`` is True when a used sample carries a slowdown reason (``SLOWDOWN_REASONS``: power
  cap, hardware slowdown, thermal slowdown, power brake; not the idle, applications-clocks,
  sync-boost or display bits, which do not mean the GPU was held back) or when a used sample's
  SM clock is below ``THROTTLE_FRACTION`` (75%, nvbench's ``--throttle-threshold`` default) of
  the application SM clock (the clock the GPU runs work at; its maximum clock where NVML gives no
  application clock);
- each timing sample gets the SM clock of the nearest used NVML sample in time, and those below
  75% of the application clock are counted (``low_clock_timing_samples``): they are flagged, not
  dropped, so that every record keeps all its samples.
The record keeps ``sm_clock_mhz_min/max``, ``max_sm_clock_mhz``, ``gpu_temperature_c_max``,
``gpu_power_w_max``, ``throttle_reasons`` (reasons seen in the used samples) and ``throttled``;
its ``extra`` keeps ``clock_samples`` (taken), ``clock_samples_used``, ``sm_clock_mhz_median``,
``app_sm_clock_mhz``, ``clock_low_fraction`` (used samples below 75%) and
``low_clock_timing_samples``.

Sampling is every ``INTERVAL_S`` (50 ms): four NVML reads per sample (SM clock, reasons,
temperature, power) beside a launch-bound timed loop; a finer interval would take the GIL from
the timed loop more often and see nothing new (NVML's power and clock readings are themselves
averaged over tens of milliseconds).

NVML is reached through nvidia-ml-py (``pynvml``); without it, or without a driver, the watch
says why and the fields stay empty. Tests pass a fake module with the same functions.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from bisect import bisect_left
from dataclasses import dataclass
from typing import Any

THROTTLE_FRACTION = 0.75
INTERVAL_S = 0.05

# NVML clocks-event (throttle) reason bits, nvmlClocksEventReason* / nvmlClocksThrottleReason*
THROTTLE_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
IDLE_REASON = 0x1
# the reasons that mean the GPU was held below the clock it would run at
SLOWDOWN_REASONS = 0x4 | 0x8 | 0x20 | 0x40 | 0x80


@dataclass(frozen=True)
class ClockSample:
    sm_clock_mhz: float | None
    temperature_c: float | None
    power_w: float | None
    reasons: int | None
    at_s: float | None = None    # time.perf_counter() when taken


def reason_names(mask: int | None) -> list[str]:
    if not mask:
        return []
    names = [name for bit, name in THROTTLE_REASONS.items() if mask & bit]
    unknown = mask & ~sum(THROTTLE_REASONS)
    return names + ([f"unknown_0x{unknown:x}"] if unknown else [])


def is_idle(sample: ClockSample) -> bool:
    """NVML marked the GPU idle when the sample was taken (no reasons read: not idle)."""
    return bool((sample.reasons or 0) & IDLE_REASON)


def below(clock: float | None, reference: float | None) -> bool:
    return clock is not None and bool(reference) and clock < THROTTLE_FRACTION * reference


def timing_sample_clocks(used: list[ClockSample],
                         spans: list[tuple[float, float]]) -> list[float | None]:
    """The SM clock of the used NVML sample nearest in time to the middle of each timing sample
    (``spans``: perf_counter start and end); None where no used sample has a time and a clock."""
    timed = sorted((s.at_s, s.sm_clock_mhz) for s in used
                   if s.at_s is not None and s.sm_clock_mhz is not None)
    times = [t for t, _ in timed]
    out: list[float | None] = []
    for start, end in spans:
        if not timed:
            out.append(None)
            continue
        middle = (start + end) / 2
        i = bisect_left(times, middle)
        near = [j for j in (i - 1, i) if 0 <= j < len(timed)]
        out.append(timed[min(near, key=lambda j: abs(times[j] - middle))][1])
    return out


def summarise(samples: list[ClockSample], max_sm_clock_mhz: float | None,
              app_sm_clock_mhz: float | None = None,
              spans: list[tuple[float, float]] | None = None) -> dict[str, Any]:
    """The record's clock fields from the samples taken while the point was timed (pure; see the
    module docstring for what is judged)."""
    used = [s for s in samples if not is_idle(s)]

    def values(name: str) -> list[float]:
        return [getattr(s, name) for s in used if getattr(s, name) is not None]

    clocks, temps, powers = values("sm_clock_mhz"), values("temperature_c"), values("power_w")
    mask = 0
    for s in used:
        mask |= s.reasons or 0
    reference = app_sm_clock_mhz or max_sm_clock_mhz
    low = [c for c in clocks if below(c, reference)]
    throttled = None
    if used and (clocks and reference or any(s.reasons is not None for s in used)):
        throttled = bool(mask & SLOWDOWN_REASONS) or bool(low)
    out: dict[str, Any] = {
        "sm_clock_mhz_min": min(clocks) if clocks else None,
        "sm_clock_mhz_max": max(clocks) if clocks else None,
        "max_sm_clock_mhz": max_sm_clock_mhz,
        "gpu_temperature_c_max": max(temps) if temps else None,
        "gpu_power_w_max": max(powers) if powers else None,
        "throttle_reasons": reason_names(mask), "throttled": throttled,
        "clock_samples": len(samples), "clock_samples_used": len(used),
        "sm_clock_mhz_median": statistics.median(clocks) if clocks else None,
        "app_sm_clock_mhz": app_sm_clock_mhz,
        "clock_low_fraction": len(low) / len(clocks) if clocks and reference else None}
    if spans is not None and reference:
        per_sample = timing_sample_clocks(used, spans)
        if any(c is not None for c in per_sample):
            out["low_clock_timing_samples"] = sum(below(c, reference) for c in per_sample)
    return out


def nvml_index(device: str, visible: str | None = None) -> int | str:
    """NVML's index (or UUID) of torch's device ``cuda:N`` under CUDA_VISIBLE_DEVICES."""
    ordinal = int(device.split(":", 1)[1]) if ":" in device else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    if not visible:
        return ordinal
    entries = [e.strip() for e in visible.split(",") if e.strip()]
    if ordinal >= len(entries):
        return ordinal
    entry = entries[ordinal]
    return int(entry) if entry.isdigit() else entry


def _safe(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:
        return None


class NoWatch:
    """CPU: nothing to sample."""

    def open(self) -> bool:
        return False

    def close(self) -> None:
        return None

    def __enter__(self) -> "NoWatch":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def fields(self, spans: list[tuple[float, float]] | None = None) -> dict[str, Any]:
        return {}


def watch_for(device: str, *, nvml: Any = None) -> "ClockWatch | NoWatch":
    """A ClockWatch on CUDA devices, a NoWatch elsewhere."""
    return ClockWatch(device, nvml=nvml) if device.split(":", 1)[0] == "cuda" else NoWatch()


class ClockWatch:
    """Context manager: samples NVML every ``interval_s`` from entry to exit; ``fields()`` after.

    ``open()`` (NVML's start, the device handle, its maximum and application clocks) may be
    called ahead, before the warm-up, so that entering only starts the sampling thread."""

    def __init__(self, device: str, *, nvml: Any = None, interval_s: float = INTERVAL_S):
        self.device = device
        self.interval_s = interval_s
        self.samples: list[ClockSample] = []
        self.unavailable = ""
        self._nvml = nvml
        self._handle: Any = None
        self._reasons: Any = None
        self._max_clock: float | None = None
        self._app_clock: float | None = None
        self._opened = False
        self._close_on_exit = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def open(self) -> bool:
        """Start NVML and read the device's fixed clocks; False (``unavailable`` says why)."""
        if self._opened:
            return not self.unavailable
        self._opened = True
        nvml = self._nvml
        if nvml is None:
            try:
                import pynvml as nvml
            except ImportError:
                self.unavailable = "nvidia-ml-py (pynvml) not installed: clocks not sampled"
                return False
        try:
            nvml.nvmlInit()
            index = nvml_index(self.device)
            self._handle = nvml.nvmlDeviceGetHandleByUUID(index) if isinstance(index, str) \
                else nvml.nvmlDeviceGetHandleByIndex(index)
        except Exception as exc:
            self.unavailable = f"NVML unavailable ({type(exc).__name__}: {exc}): clocks not sampled"
            return False
        self._nvml = nvml
        self._reasons = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
            getattr(nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None)
        self._max_clock = _safe(nvml.nvmlDeviceGetMaxClockInfo, self._handle, nvml.NVML_CLOCK_SM)
        self._app_clock = application_clock(nvml, self._handle)
        return True

    def sample(self) -> ClockSample:
        nvml, handle = self._nvml, self._handle
        power = _safe(nvml.nvmlDeviceGetPowerUsage, handle)
        return ClockSample(
            sm_clock_mhz=_safe(nvml.nvmlDeviceGetClockInfo, handle, nvml.NVML_CLOCK_SM),
            temperature_c=_safe(nvml.nvmlDeviceGetTemperature, handle,
                                nvml.NVML_TEMPERATURE_GPU),
            power_w=power / 1000.0 if power is not None else None,
            reasons=_safe(self._reasons, handle) if self._reasons is not None else None,
            at_s=time.perf_counter())

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.samples.append(self.sample())

    def __enter__(self) -> "ClockWatch":
        self._close_on_exit = not self._opened   # not opened ahead: this entry's to close
        if self.open():
            self.samples.append(self.sample())
            self._thread = threading.Thread(target=self._loop, name="clock-watch", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self.samples.append(self.sample())
        if self._close_on_exit:
            self.close()

    def close(self) -> None:
        """Shut NVML down (once) if ``open`` started it."""
        if self._opened and not self.unavailable and self._handle is not None:
            self._handle = None
            _safe(self._nvml.nvmlShutdown)

    def nvml_handle(self) -> tuple[Any, Any, str]:
        """(the NVML module, the device handle, the device's NVML index) of this watch's session,
        for other readings of the same device (harness.measure.energy); the handle is None when
        NVML could not be opened (``unavailable`` says why)."""
        self.open()
        return self._nvml, self._handle, str(nvml_index(self.device))

    def fields(self, spans: list[tuple[float, float]] | None = None) -> dict[str, Any]:
        """The record's clock fields; ``spans``: each timing sample's perf_counter start and end."""
        if self.unavailable:
            return {"clock_note": self.unavailable}
        return summarise(self.samples, self._max_clock, self._app_clock, spans)


def application_clock(nvml: Any, handle: Any) -> float | None:
    """The SM clock work runs at: the applications clock, else its default (None: neither)."""
    for name in ("nvmlDeviceGetApplicationsClock", "nvmlDeviceGetDefaultApplicationsClock"):
        fn = getattr(nvml, name, None)
        value = _safe(fn, handle, nvml.NVML_CLOCK_SM) if fn is not None else None
        if value:
            return float(value)
    return None
