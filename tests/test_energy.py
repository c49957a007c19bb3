"""Energy per call (harness.measure.energy): the counter arithmetic, RAPL against a fake sysfs
tree, NVML through a fake pynvml (and through the worker's timing pass), the record's fields."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.contract.records import (
    SPEED_METRICS,
    Measurement,
    MemoryResult,
    Point,
    SpeedRecord,
    invalid_numbers,
)
from harness.grid.settings import TimingSettings
from harness.measure import energy, gpu_watch, worker


# -- arithmetic -------------------------------------------------------------------------------
def test_counter_delta_handles_one_wrap_and_refuses_a_counter_going_back():
    assert energy.counter_delta(100, 250, 1000) == 150
    assert energy.counter_delta(900, 50, 1000) == 150          # wrapped at 1000
    with pytest.raises(energy.CounterError, match="backwards"):
        energy.counter_delta(900, 50, None)
    assert energy.rapl_joules([900_000, 10], [100_000, 2_000_010], [1_000_000, None]) == \
        pytest.approx(0.2 + 2.0)


def test_update_interval_is_the_time_between_two_changes_after_the_first():
    # the first change ends an interval that began before the readings: only a start
    readings = [(0.0, 5), (0.01, 5), (0.02, 7), (0.03, 7), (0.05, 7), (0.07, 9), (0.08, 11)]
    assert energy.interval_from_changes(readings) == pytest.approx(0.05)
    assert energy.interval_from_changes([(0.0, 1), (0.1, 2)]) is None


def test_energy_fields_divide_the_windows_joules_and_refuse_a_short_window():
    fields = energy.energy_fields(joules=12.0, window_s=2.0, calls=4, tokens=1000,
                                  resolution_j=1e-3, interval_s=0.1, source="nvml_total_energy")
    assert fields["energy_j_per_call"] == 3.0
    assert fields["energy_j_per_token"] == pytest.approx(3.0 / 1000)
    assert fields["mean_power_w"] == 6.0 and fields["energy_window_s"] == 2.0
    assert fields["energy_error_max"] == pytest.approx(0.05) and fields["energy_reason"] == ""
    short = energy.energy_fields(joules=0.3, window_s=0.15, calls=4, tokens=1000,
                                 resolution_j=1e-3, interval_s=0.1, source="nvml_total_energy")
    assert short["energy_j_per_call"] is None and short["energy_window_s"] == 0.15
    assert short["energy_reason"].startswith("window shorter than the counter's update interval")
    assert "100 ms" in short["energy_reason"]
    flat = energy.energy_fields(joules=0.0, window_s=2.0, calls=4, tokens=10, resolution_j=1e-3,
                                interval_s=0.1, source="rapl")
    assert flat["energy_j_per_call"] is None and "did not advance" in flat["energy_reason"]
    unknown = energy.energy_fields(joules=1.0, window_s=0.4, calls=1, tokens=1, resolution_j=1e-3,
                                   interval_s=None, source="rapl", probe_limit_s=0.5)
    assert unknown["energy_j_per_call"] is None and "unknown" in unknown["energy_reason"]


class ScriptedCounter:
    source, resolution_j, key = "fake", 1.0, "scripted"

    def __init__(self, values):
        self.values = list(values)

    def read(self):
        return self.values.pop(0) if len(self.values) > 1 else self.values[0]

    def joules(self, start, end):
        return float(end - start)

    def scalar(self, reading):
        return float(reading)


def test_update_interval_polls_until_two_changes_and_is_kept_per_process(monkeypatch):
    monkeypatch.setattr(energy, "INTERVALS", {})
    ticks = iter(i * 0.01 for i in range(1000))
    counter = ScriptedCounter([1, 1, 2, 2, 2, 3, 3])
    interval = energy.update_interval(counter, clock=lambda: next(ticks), sleep=lambda s: None)
    assert interval == pytest.approx(0.03)
    assert energy.INTERVALS == {"scripted": interval}
    # a counter that never moves within the limit: unknown, and not probed again
    ticks = iter(i * 0.1 for i in range(1000))
    still = ScriptedCounter([4])
    still.key = "still"
    assert energy.update_interval(still, clock=lambda: next(ticks), sleep=lambda s: None,
                                  limit_s=0.5) is None
    assert "still" in energy.INTERVALS


# -- RAPL against a fake sysfs tree -----------------------------------------------------------
def powercap(tmp_path: Path, packages: dict[str, tuple[int, int]]) -> Path:
    """A powercap tree: intel-rapl:N package domains (energy_uj, max_energy_range_uj), a core
    sub-domain and a psys domain that must not be counted."""
    root = tmp_path / "powercap"
    (root / "intel-rapl").mkdir(parents=True)       # the control type: no energy file
    for i, (name, (value, top)) in enumerate(packages.items()):
        domain = root / f"intel-rapl:{i}"
        domain.mkdir()
        (domain / "name").write_text(name + "\n")
        (domain / "energy_uj").write_text(f"{value}\n")
        (domain / "max_energy_range_uj").write_text(f"{top}\n")
        sub = root / f"intel-rapl:{i}:0"
        sub.mkdir()
        (sub / "name").write_text("core\n")
        (sub / "energy_uj").write_text("123\n")
    return root


def test_rapl_sums_the_package_domains_with_wraparound(tmp_path, monkeypatch):
    monkeypatch.setattr(energy, "INTERVALS", {"rapl": 0.001})
    root = powercap(tmp_path, {"package-0": (262_143_000_000, 262_143_328_850),
                               "package-1": (5_000_000, 262_143_328_850),
                               "psys": (1, 10)})
    counter, reason = energy.rapl_counter(root)
    assert reason == "" and [p.parent.name for p in counter.files] == ["intel-rapl:0",
                                                                      "intel-rapl:1"]
    ticks = iter([10.0, 12.0])
    meter = energy.EnergyMeter(counter, clock=lambda: next(ticks))
    with meter:
        # package 0 wraps past its range; package 1 advances 3 J
        (root / "intel-rapl:0" / "energy_uj").write_text("671_150\n".replace("_", ""))
        (root / "intel-rapl:1" / "energy_uj").write_text("8000000\n")
    fields = meter.fields(calls=4, tokens=256)
    wrapped = (262_143_328_850 - 262_143_000_000 + 671_150) * 1e-6
    assert fields["energy_source"] == "rapl" and fields["energy_reason"] == ""
    assert fields["energy_window_s"] == 2.0
    assert fields["energy_j_per_call"] == pytest.approx((wrapped + 3.0) / 4)
    assert fields["mean_power_w"] == pytest.approx((wrapped + 3.0) / 2.0)
    assert fields["energy_counter_resolution_j"] == 1e-6


def test_rapl_says_why_when_absent_unreadable_or_without_packages(tmp_path, monkeypatch):
    counter, reason = energy.rapl_counter(tmp_path / "absent")
    assert counter is None and reason.startswith("RAPL not readable:") and "absent" in reason
    root = powercap(tmp_path, {"psys": (1, 10)})
    assert "no package domain" in energy.rapl_counter(root)[1]
    root = powercap(tmp_path / "denied", {"package-0": (1, 10)})
    real = Path.read_text

    def read_text(path, *args, **kwargs):   # energy_uj is root-only on Linux >= 5.10
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    counter, reason = energy.rapl_counter(root)
    assert counter is None and "permission denied" in reason
    meter = energy.meter_for("cpu", gpu_watch.NoWatch(), powercap=root)
    with meter:
        pass
    fields = meter.fields(calls=3, tokens=10)
    assert fields["energy_j_per_call"] is None and "permission denied" in fields["energy_reason"]
    assert fields["energy_source"] == ""


# -- NVML through the clock watch's session ---------------------------------------------------
class EnergyNVML:
    """pynvml's surface used by ClockWatch and the energy meter: a total-energy counter that
    advances by ``step_mj`` at every read, or raises ``error`` where given."""

    NVML_CLOCK_SM = 1
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, step_mj=1000, error=None):
        self.step_mj, self.error = step_mj, error
        self.energy_mj = 10_000_000
        self.inits = 0

    def nvmlInit(self):
        self.inits += 1

    def nvmlShutdown(self):
        pass

    def nvmlDeviceGetHandleByIndex(self, index):
        return ("gpu", index)

    def nvmlDeviceGetMaxClockInfo(self, handle, kind):
        return 1980

    def nvmlDeviceGetClockInfo(self, handle, kind):
        return 1980

    def nvmlDeviceGetTemperature(self, handle, kind):
        return 60

    def nvmlDeviceGetPowerUsage(self, handle):
        return 300_000

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if self.error is not None:
            raise self.error
        self.energy_mj += self.step_mj
        return self.energy_mj


class NVMLError_NotSupported(Exception):   # pynvml's name for NVML_ERROR_NOT_SUPPORTED
    pass


def test_nvml_meter_reads_the_watchs_handle_and_says_when_unsupported(monkeypatch):
    monkeypatch.setattr(energy, "INTERVALS", {"nvml:0": 0.02})
    nvml = EnergyNVML(step_mj=1500)
    watch = gpu_watch.ClockWatch("cuda:0", nvml=nvml)
    ticks = iter([1.0, 2.0])
    meter = energy.meter_for("cuda:0", watch)
    meter.clock = lambda: next(ticks)
    with energy.metered(watch, meter):
        pass
    assert nvml.inits == 1                      # one NVML session: the watch's
    fields = meter.fields(calls=10, tokens=4096)
    assert fields["energy_source"] == "nvml_total_energy" and fields["energy_reason"] == ""
    assert fields["energy_j_per_call"] == pytest.approx(1.5 / 10)
    assert fields["energy_j_per_token"] == pytest.approx(1.5 / 10 / 4096)
    assert fields["mean_power_w"] == pytest.approx(1.5)
    assert fields["energy_counter_resolution_j"] == 1e-3
    assert fields["energy_counter_interval_s"] == 0.02

    unsupported = gpu_watch.ClockWatch("cuda:0", nvml=EnergyNVML(error=NVMLError_NotSupported()))
    monkeypatch.setattr(energy, "INTERVALS", {})
    meter = energy.meter_for("cuda:0", unsupported)
    assert not meter.open()
    with energy.metered(unsupported, meter):
        pass
    fields = meter.fields(calls=10, tokens=4096)
    assert fields["energy_j_per_call"] is None
    assert fields["energy_reason"].startswith("counter not supported on this GPU")

    class NoInit(EnergyNVML):
        def nvmlInit(self):
            raise RuntimeError("NVML Shared Library Not Found")

    broken = gpu_watch.ClockWatch("cuda:0", nvml=NoInit())
    fields = energy.meter_for("cuda:0", broken).fields(calls=1, tokens=1)
    assert fields["energy_reason"].startswith("no NVML: NVML unavailable (RuntimeError")


def small_point(**kw) -> Point:
    return Point(**{"impl": "softmax_torch", "seq_len": 64, "head_dim": 16, "batch": 1,
                    "heads": 2, **kw})


def test_the_worker_records_nvml_energy_over_its_samples(monkeypatch):
    """measure_timing on a CPU workload with the GPU watch of a fake NVML: the energy counter is
    read through the watch around the samples, and the record takes the fields."""
    from harness.contract.frameworks import torch_fw
    from harness.contract.registry import REGISTRY

    nvml = EnergyNVML(step_mj=2000)
    monkeypatch.setattr(worker, "watch_for",
                        lambda device: gpu_watch.ClockWatch("cuda:0", nvml=nvml))
    monkeypatch.setattr(energy, "INTERVALS", {"nvml:0": 1e-9})
    point = small_point()
    impl = REGISTRY.get(point.impl)
    work = torch_fw.make_workload(impl, point)
    settings = TimingSettings(warmup=0, min_time_s=0.0, min_repeats=3, max_repeats=3)
    result = worker.measure_timing(work, torch_fw, impl, point, settings)
    assert result.status == "ok", result.message
    assert result.energy_source == "nvml_total_energy" and result.energy_reason == ""
    # two readings of the counter, one step apart: 2 J over three calls
    assert result.energy_j_per_call == pytest.approx(2.0 / 3)
    assert result.energy_j_per_token == pytest.approx(2.0 / 3 / point.tokens)
    assert result.mean_power_w == pytest.approx(2.0 / result.energy_window_s)
    assert result.energy_window_s > 0
    values, _ = Measurement(MemoryResult(), result).record_values()
    record = SpeedRecord.for_point(point, framework="torch", family="exact", status="ok",
                                   **values)
    data = record.to_json()
    assert data["energy_j_per_call"] == result.energy_j_per_call and invalid_numbers(data) == ""
    assert SpeedRecord.from_json(data).energy_source == "nvml_total_energy"


def test_the_worker_says_why_on_this_cpu_and_under_lockstep(monkeypatch, tmp_path):
    from harness.contract.frameworks import torch_fw
    from harness.contract.registry import REGISTRY

    point = small_point()
    impl = REGISTRY.get(point.impl)
    settings = TimingSettings(warmup=0, min_time_s=0.0, min_repeats=2, max_repeats=2)
    monkeypatch.setattr(worker, "meter_for",
                        lambda device, watch: energy.meter_for(device, watch,
                                                               powercap=tmp_path / "none"))
    result = worker.measure_timing(torch_fw.make_workload(impl, point), torch_fw, impl, point,
                                   settings)
    assert result.status == "ok" and result.energy_j_per_call is None
    assert result.energy_reason.startswith("RAPL not readable") and "absent" in \
        result.energy_reason
    reason = energy.lockstep_meter().fields(calls=1, tokens=1)["energy_reason"]
    assert reason.startswith("lockstep timing")


def test_energy_columns_are_record_fields_and_old_records_read_as_not_measured():
    for name in ("energy_j_per_call", "energy_j_per_token", "mean_power_w", "energy_window_s",
                 "energy_counter_resolution_j", "energy_source", "energy_reason"):
        assert name in SPEED_METRICS
    old = SpeedRecord.for_point(small_point(), framework="torch", family="exact",
                                status="ok").to_json()
    for name in [k for k in old if k.startswith("energy_") or k == "mean_power_w"]:
        del old[name]
    record = SpeedRecord.from_json(old)
    assert record.energy_j_per_call is None and record.energy_reason == ""
    assert invalid_numbers({"energy_j_per_call": -1.0}).startswith("energy_j_per_call")


# -- a real GPU -------------------------------------------------------------------------------
@pytest.mark.gpu
def test_nvml_energy_counter_advances_over_a_gpu_window():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: torch.cuda.is_available() is False")
    pytest.importorskip("pynvml", reason="nvidia-ml-py (pynvml) not installed")
    energy.INTERVALS.clear()
    watch = gpu_watch.ClockWatch("cuda:0")
    meter = energy.meter_for("cuda:0", watch)
    if not meter.open():
        pytest.skip(f"no NVML energy counter here: {meter.reason}")
    x = torch.randn(4096, 4096, device="cuda")
    calls = 0
    with energy.metered(watch, meter):
        while calls < 400:
            x = (x @ x).tanh_()
            calls += 1
        torch.cuda.synchronize()
    watch.close()
    fields = meter.fields(calls=calls, tokens=4096)
    assert fields["energy_counter_interval_s"] is not None
    assert fields["energy_j_per_call"] is not None, fields["energy_reason"]
    assert fields["energy_j_per_call"] > 0 and 10 < fields["mean_power_w"] < 2000
