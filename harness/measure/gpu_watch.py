"""GPU clocks, temperature, power and throttle reasons sampled with NVML while a point is timed.

Sustained benchmarks lower the SM clock (power and thermal limits), so a number timed on a
throttled GPU is not the GPU's number. ``ClockWatch`` polls NVML in a background thread while
the samples of one point are taken; ``summarise`` turns the samples into the record's fields:
``sm_clock_mhz_min/max``, ``max_sm_clock_mhz``, ``gpu_temperature_c_max``, ``gpu_power_w_max``,
``throttle_reasons`` (NVML's clock-event reasons seen in any sample) and ``throttled`` (the
lowest SM clock below ``THROTTLE_FRACTION`` of the GPU's maximum SM clock).

NVML is reached through nvidia-ml-py (``pynvml``); without it, or without a driver, the watch
says why and the fields stay empty. Tests pass a fake module with the same functions.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

THROTTLE_FRACTION = 0.9
INTERVAL_S = 0.01

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


@dataclass(frozen=True)
class ClockSample:
    sm_clock_mhz: float | None
    temperature_c: float | None
    power_w: float | None
    reasons: int | None


def reason_names(mask: int | None) -> list[str]:
    if not mask:
        return []
    names = [name for bit, name in THROTTLE_REASONS.items() if mask & bit]
    unknown = mask & ~sum(THROTTLE_REASONS)
    return names + ([f"unknown_0x{unknown:x}"] if unknown else [])


def summarise(samples: list[ClockSample], max_sm_clock_mhz: float | None) -> dict[str, Any]:
    """The record's clock fields from the samples (pure)."""
    def values(name: str) -> list[float]:
        return [getattr(s, name) for s in samples if getattr(s, name) is not None]

    clocks, temps, powers = values("sm_clock_mhz"), values("temperature_c"), values("power_w")
    mask = 0
    for s in samples:
        mask |= s.reasons or 0
    low = min(clocks) if clocks else None
    throttled = None
    if low is not None and max_sm_clock_mhz:
        throttled = low < THROTTLE_FRACTION * max_sm_clock_mhz
    return {"sm_clock_mhz_min": low, "sm_clock_mhz_max": max(clocks) if clocks else None,
            "max_sm_clock_mhz": max_sm_clock_mhz,
            "gpu_temperature_c_max": max(temps) if temps else None,
            "gpu_power_w_max": max(powers) if powers else None,
            "throttle_reasons": reason_names(mask), "throttled": throttled,
            "clock_samples": len(samples)}


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

    def __enter__(self) -> "NoWatch":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def fields(self) -> dict[str, Any]:
        return {}


def watch_for(device: str, *, nvml: Any = None) -> "ClockWatch | NoWatch":
    """A ClockWatch on CUDA devices, a NoWatch elsewhere."""
    return ClockWatch(device, nvml=nvml) if device.split(":", 1)[0] == "cuda" else NoWatch()


class ClockWatch:
    """Context manager: samples NVML every ``interval_s`` until exit; ``fields()`` after."""

    def __init__(self, device: str, *, nvml: Any = None, interval_s: float = INTERVAL_S):
        self.device = device
        self.interval_s = interval_s
        self.samples: list[ClockSample] = []
        self.unavailable = ""
        self._nvml = nvml
        self._handle: Any = None
        self._max_clock: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _open(self) -> bool:
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
        self._max_clock = _safe(nvml.nvmlDeviceGetMaxClockInfo, self._handle, nvml.NVML_CLOCK_SM)
        return True

    def sample(self) -> ClockSample:
        nvml, handle = self._nvml, self._handle
        reasons_fn = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
            getattr(nvml, "nvmlDeviceGetCurrentClocksThrottleReasons")
        power = _safe(nvml.nvmlDeviceGetPowerUsage, handle)
        return ClockSample(
            sm_clock_mhz=_safe(nvml.nvmlDeviceGetClockInfo, handle, nvml.NVML_CLOCK_SM),
            temperature_c=_safe(nvml.nvmlDeviceGetTemperature, handle,
                                nvml.NVML_TEMPERATURE_GPU),
            power_w=power / 1000.0 if power is not None else None,
            reasons=_safe(reasons_fn, handle))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.samples.append(self.sample())

    def __enter__(self) -> "ClockWatch":
        if self._open():
            self.samples.append(self.sample())
            self._thread = threading.Thread(target=self._loop, name="clock-watch", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.samples.append(self.sample())
            _safe(self._nvml.nvmlShutdown)

    def fields(self) -> dict[str, Any]:
        if self.unavailable:
            return {"clock_note": self.unavailable}
        return summarise(self.samples, self._max_clock)
