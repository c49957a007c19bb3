"""GPU timing discipline, tested on CPU with fakes: NVML clock sampling and throttle marking,
the CUDA-graph timer, NVTX ranges, the L2-flush note, and the JAX flush timer."""

from __future__ import annotations

import threading

import pytest

from harness.measure import gpu_watch
from harness.measure import timers as gpu_timing
from harness.errors import UnsupportedError
from harness.grid.settings import TimingSettings
from harness.contract.workload import Workload
from harness.measure.timing import time_workload


class FakeNVML:
    """pynvml's surface used by ClockWatch, with scripted SM clocks."""

    NVML_CLOCK_SM = 1
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, clocks, *, max_clock=1980, reasons=0, fail_init=False):
        self.clocks = list(clocks)
        self.max_clock = max_clock
        self.reasons = reasons
        self.fail_init = fail_init
        self.handles = []
        self.shutdown = False
        self.last_clock_reached = threading.Event()   # every scripted clock but the last read

    def nvmlInit(self):
        if self.fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlShutdown(self):
        self.shutdown = True

    def nvmlDeviceGetHandleByIndex(self, index):
        self.handles.append(index)
        return ("gpu", index)

    def nvmlDeviceGetHandleByUUID(self, uuid):
        self.handles.append(uuid)
        return ("gpu", uuid)

    def nvmlDeviceGetMaxClockInfo(self, handle, kind):
        return self.max_clock

    def nvmlDeviceGetClockInfo(self, handle, kind):
        value = self.clocks.pop(0) if len(self.clocks) > 1 else self.clocks[0]
        if len(self.clocks) == 1:
            self.last_clock_reached.set()
        return value

    def nvmlDeviceGetTemperature(self, handle, kind):
        return 70

    def nvmlDeviceGetPowerUsage(self, handle):
        return 650_000

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle):
        return self.reasons


def sample(clock, reasons=0, at=None):
    return gpu_watch.ClockSample(clock, 60.0, 500.0, reasons, at)


def test_summary_marks_a_point_throttled_by_slowdown_reasons_or_a_clock_below_75_percent():
    steady = gpu_watch.summarise([sample(1980), sample(1900)], 1980)
    assert steady["throttled"] is False and steady["sm_clock_mhz_min"] == 1900
    hot = gpu_watch.summarise([sample(1965), sample(1580, 0x4 | 0x20)], 1980)
    assert hot["throttled"] is True
    assert hot["sm_clock_mhz_min"] == 1580 and hot["sm_clock_mhz_max"] == 1965
    assert hot["throttle_reasons"] == ["sw_power_cap", "sw_thermal_slowdown"]
    # 80% of the application clock, no slowdown reason: below the old 90% rule, not throttled
    mild = gpu_watch.summarise([sample(1980), sample(1584)], 1980, app_sm_clock_mhz=1980)
    assert mild["throttled"] is False and mild["clock_low_fraction"] == 0.0
    # below 75% of the application clock (not of the maximum): throttled without a reason bit
    slow = gpu_watch.summarise([sample(1400), sample(1410)], 2100, app_sm_clock_mhz=1980)
    assert slow["throttled"] is True and slow["clock_low_fraction"] == 1.0
    assert slow["app_sm_clock_mhz"] == 1980 and slow["sm_clock_mhz_median"] == 1405
    # nothing to judge by: no clock read and no reasons read, or no reference clock
    assert gpu_watch.summarise([sample(None, None)], 1980)["throttled"] is None
    assert gpu_watch.summarise([sample(1500, None)], None)["throttled"] is None
    assert gpu_watch.summarise([], 1980)["throttled"] is None


def test_idle_samples_are_dropped_and_informational_reasons_do_not_throttle():
    # an H200 idles at 345 MHz between compilation and the samples: NVML marks it gpu_idle
    idle = sample(345, 0x1)
    fields = gpu_watch.summarise([idle, sample(1980, 0x10), sample(1975, 0x2), idle], 1980,
                                 app_sm_clock_mhz=1980)
    assert fields["throttled"] is False
    assert fields["sm_clock_mhz_min"] == 1975 and fields["clock_samples"] == 4
    assert fields["clock_samples_used"] == 2
    assert fields["throttle_reasons"] == ["applications_clocks_setting", "sync_boost"]
    # a launch-bound point whose every sample is idle: nothing judged
    assert gpu_watch.summarise([idle, idle], 1980)["throttled"] is None
    for bit in (0x4, 0x8, 0x20, 0x40, 0x80):
        assert gpu_watch.summarise([sample(1980, bit)], 1980)["throttled"] is True


def test_timing_samples_get_the_clock_of_the_nearest_nvml_sample_and_low_ones_are_counted():
    nvml_samples = [sample(1980, 0, 0.0), sample(1200, 0, 1.0), sample(345, 0x1, 1.9),
                    sample(1980, 0, 2.0)]
    spans = [(0.0, 0.2), (0.9, 1.1), (1.8, 2.0), (3.0, 3.1)]
    used = [s for s in nvml_samples if not gpu_watch.is_idle(s)]
    assert gpu_watch.timing_sample_clocks(used, spans) == [1980, 1200, 1980, 1980]
    fields = gpu_watch.summarise(nvml_samples, 1980, app_sm_clock_mhz=1980, spans=spans)
    assert fields["low_clock_timing_samples"] == 1 and fields["throttled"] is True
    assert gpu_watch.timing_sample_clocks([], spans) == [None] * 4
    assert "low_clock_timing_samples" not in gpu_watch.summarise([], 1980, 1980, spans)


def test_sampling_interval_leaves_a_launch_bound_loop_alone():
    assert 0.05 <= gpu_watch.INTERVAL_S <= 0.1
    assert gpu_watch.THROTTLE_FRACTION == 0.75


class CountingNVML:
    """Counts NVML calls per sample; only the old throttle-reasons name."""

    NVML_CLOCK_SM = 1
    NVML_TEMPERATURE_GPU = 0

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        if not name.startswith("nvml") or name in ("nvmlDeviceGetCurrentClocksEventReasons",
                                                   "nvmlDeviceGetApplicationsClock"):
            raise AttributeError(name)

        def call(*args):
            self.calls.append(name)
            return {"nvmlDeviceGetClockInfo": 1900, "nvmlDeviceGetMaxClockInfo": 1980,
                    "nvmlDeviceGetDefaultApplicationsClock": 1755,
                    "nvmlDeviceGetCurrentClocksThrottleReasons": 0x4}.get(name, 1)
        return call


def test_clock_watch_reads_four_values_per_sample_and_falls_back_to_older_nvml_names():
    nvml = CountingNVML()
    watch = gpu_watch.ClockWatch("cuda:0", nvml=nvml)
    assert watch.open()
    opened = len(nvml.calls)
    one = watch.sample()
    assert len(nvml.calls) - opened == 4
    assert one.reasons == 0x4 and one.at_s is not None
    assert gpu_watch.summarise([one], 1980, 1755)["throttle_reasons"] == ["sw_power_cap"]
    assert watch._app_clock == 1755      # the default applications clock, no current one
    watch.close()
    watch.close()
    assert nvml.calls.count("nvmlShutdown") == 1


def test_clock_watch_samples_while_the_point_is_timed():
    nvml = FakeNVML([1980, 1975, 1600, 1590], reasons=0x8)
    with gpu_watch.ClockWatch("cuda:0", nvml=nvml, interval_s=0.001) as watch:
        # the background thread, not entry and exit alone, reads the scripted clocks: wait for
        # it (the bound only keeps a broken watch from hanging the suite)
        assert nvml.last_clock_reached.wait(timeout=300)
    fields = watch.fields()
    assert fields["clock_samples"] >= 2 and fields["clock_samples_used"] >= 2
    assert fields["sm_clock_mhz_max"] == 1980 and fields["sm_clock_mhz_min"] == 1590
    assert fields["throttled"] is True and fields["throttle_reasons"] == ["hw_slowdown"]
    assert fields["gpu_power_w_max"] == 650.0 and fields["max_sm_clock_mhz"] == 1980
    assert nvml.shutdown


def test_clock_watch_says_why_when_nvml_is_unavailable():
    with gpu_watch.ClockWatch("cuda", nvml=FakeNVML([1], fail_init=True)) as watch:
        pass
    assert "NVML unavailable" in watch.fields()["clock_note"]
    assert gpu_watch.watch_for("cpu").fields() == {}


def test_nvml_index_follows_cuda_visible_devices():
    assert gpu_watch.nvml_index("cuda:1", visible="") == 1
    assert gpu_watch.nvml_index("cuda:1", visible="3,5") == 5
    assert gpu_watch.nvml_index("cuda", visible="GPU-abc,GPU-def") == "GPU-abc"


# -- CUDA-graph timer, NVTX, flush note, with a fake torch -------------------------------------
class FakeEvent:
    clock = [0.0]

    def __init__(self, enable_timing=True):
        self.t = None

    def record(self):
        FakeEvent.clock[0] += 1.0
        self.t = FakeEvent.clock[0]

    def synchronize(self):
        pass

    def elapsed_time(self, other):
        return (other.t - self.t) * 2.0   # ms


class FakeGraph:
    def __init__(self):
        self.replays = 0

    def replay(self):
        self.replays += 1
        FakeEvent.clock[0] += 0.0


class FakeCuda:
    def __init__(self, log, fail_capture=False):
        self.log = log
        self.fail_capture = fail_capture
        self.Event = FakeEvent
        self.graphs = []
        outer = self

        class _Nvtx:
            @staticmethod
            def range_push(name):
                log.append(("push", name))

            @staticmethod
            def range_pop():
                log.append(("pop",))

        self.nvtx = _Nvtx

        class _Ctx:
            def __init__(self, what):
                self.what = what

            def __enter__(self):
                if self.what == "graph" and outer.fail_capture:
                    raise RuntimeError("operation not permitted when stream is capturing")
                log.append(("enter", self.what))

            def __exit__(self, *a):
                log.append(("exit", self.what))

        self._ctx = _Ctx

    def Stream(self, device):
        class S:
            def wait_stream(self, other):
                pass
        return S()

    def current_stream(self, device):
        return self.Stream(device)

    def stream(self, s):
        return self._ctx("side-stream")

    def CUDAGraph(self):
        graph = FakeGraph()
        self.graphs.append(graph)
        return graph

    def graph(self, g):
        return self._ctx("graph")

    def synchronize(self, device=None):
        pass


class FakeTorch:
    def __init__(self, log, fail_capture=False):
        self.cuda = FakeCuda(log, fail_capture)


class FakeFlush:
    nbytes = 64 * 2 ** 20

    def __init__(self, log):
        self.log = log

    def zero_(self):
        self.log.append(("flush",))


def counting_workload(log):
    def run():
        log.append(("run",))
        return "out"
    return Workload(run=run, block=lambda v: None, check=lambda v: True, input_bytes=0)


def test_cudagraph_timer_captures_once_replays_per_sample_and_flushes_outside_the_graph(
        monkeypatch):
    # the graph check after capture (tests/test_graph_check.py) passes here
    monkeypatch.setattr(gpu_timing.CudaGraphTimer, "check", lambda self, work, old, new:
                        gpu_timing.GraphCheck(nodes=1, eager_kernels=1, max_error=0.0,
                                              tolerance=1e-5))
    log: list = []
    torch = FakeTorch(log)
    work = counting_workload(log)
    work.timer = type("EventTimer", (), {"name": "cuda_event", "flush": FakeFlush(log)})()
    note = gpu_timing.apply_timer(work, timer="cudagraph", framework="torch", device="cuda:0",
                                  label="pid123", torch_module=torch)
    assert note == ""
    assert isinstance(work.timer, gpu_timing.NvtxTimer) and work.timer.name == "cudagraph"
    samples, value = time_workload(work, TimingSettings(warmup=0, min_time_s=0.0,
                                                        min_repeats=3, max_repeats=3))
    graph = torch.cuda.graphs[0]
    assert len(torch.cuda.graphs) == 1 and graph.replays == 3
    assert value == "out" and all(s == pytest.approx(0.002) for s in samples)
    # capture: warm-up runs on a side stream, then one run inside the graph
    assert log.count(("enter", "graph")) == 1
    assert log.count(("flush",)) == 3 and log.count(("push", "pid123")) == 3
    assert log.count(("run",)) == gpu_timing.CAPTURE_WARMUP + 1   # replays do not call run()
    assert "flushed: 64 MiB" in gpu_timing.l2_flush_note(work.timer, "cuda")


def test_cudagraph_capture_failure_is_an_unsupported_point():
    log: list = []
    work = counting_workload(log)
    work.timer = None
    timer = gpu_timing.CudaGraphTimer("cuda", torch_module=FakeTorch(log, fail_capture=True))
    with pytest.raises(UnsupportedError, match="cannot be captured in a CUDA graph"):
        timer.time(work)


def test_timer_choice_on_cpu_and_for_jax():
    work = counting_workload([])
    assert gpu_timing.apply_timer(work, timer="events", framework="torch", device="cpu",
                                  label="p") == ""
    assert work.timer is None
    note = gpu_timing.apply_timer(work, timer="cudagraph", framework="jax", device="cuda",
                                  label="p")
    assert "not applicable to jax" in note and work.timer is None
    with pytest.raises(ValueError):
        gpu_timing.apply_timer(work, timer="wall", framework="torch", device="cpu", label="p")


def test_flush_note_says_when_l2_was_not_flushed():
    assert gpu_timing.l2_flush_note(None, "cpu").startswith("not flushed: CPU")
    assert "no L2 flush" in gpu_timing.l2_flush_note(None, "cuda")
    no_buffer = type("T", (), {"flush": None})()
    assert "switched off" in gpu_timing.l2_flush_note(no_buffer, "cuda:1")


def test_every_timer_class_implements_the_timer_protocol():
    """name, flush and time(work) -> (seconds, output) for each timer of harness.measure.timers
    (the CUDA ones on a fake torch), and no timer class is left unchecked."""
    jax = pytest.importorskip("jax")
    log: list = []
    torch = FakeTorch(log)
    timers = [gpu_timing.WallClockTimer(),
              gpu_timing.CudaEventTimer("cuda", flush_l2=False, torch_module=torch),
              gpu_timing.CudaSyncTimer("cuda", flush_l2=False, torch_module=torch),
              gpu_timing.CudaGraphTimer("cuda", FakeFlush(log), torch_module=torch),
              gpu_timing.NvtxTimer(gpu_timing.WallClockTimer(), "p", nvtx=torch.cuda.nvtx),
              gpu_timing.JaxFlushTimer(jax.devices("cpu")[0], nbytes=1 << 20)]
    defined = {value for name, value in vars(gpu_timing).items()
               if isinstance(value, type) and name.endswith("Timer") and value is not
               gpu_timing.Timer and value.__module__ == gpu_timing.__name__}
    assert defined == {type(timer) for timer in timers}
    for timer in timers:
        assert isinstance(timer, gpu_timing.Timer), type(timer).__name__
        assert isinstance(timer.name, str) and timer.name
        assert gpu_timing.timer_basis(timer) in ("device_events", "host_sync")
        elapsed, value = timer.time(counting_workload(log))
        assert elapsed >= 0 and value == "out", type(timer).__name__
    no_flush = type("NoFlush", (), {"name": "x", "time": lambda self, work: (0.0, None)})()
    assert not isinstance(no_flush, gpu_timing.Timer)


def test_jax_flush_timer_touches_its_buffer_before_each_timed_call():
    jax = pytest.importorskip("jax")
    timer = gpu_timing.JaxFlushTimer(jax.devices("cpu")[0], nbytes=1 << 20)
    touched = []
    original = timer._touch
    timer._touch = lambda x: (touched.append(1), original(x))[1]
    work = Workload(run=lambda: jax.numpy.ones(4) * 2, block=jax.block_until_ready,
                    check=lambda v: True, input_bytes=0)
    elapsed, value = timer.time(work)
    assert touched == [1] and elapsed >= 0 and float(value[0]) == 2.0
    assert "flushed: 1 MiB" in gpu_timing.l2_flush_note(timer, "cuda")


# -- records and report ------------------------------------------------------------------------
def test_runner_copies_clock_fields_into_the_record_and_the_report_lists_throttled(tmp_path):
    from harness.contract.records import Point, TimingResult
    from fake_executor import PassingExecutor
    from harness.report import render_report
    from harness.measure.runner import Runner
    from harness.grid.settings import RunSettings
    from harness.store.run_dir import RunDir

    def timing(_args):
        result = TimingResult(time_samples_s=[0.01, 0.011, 0.012], time_s=0.011,
                              time_iqr_s=0.001, time_min_s=0.01, timer="cudagraph")
        result.set_conditions({
            "l2_flush": "flushed: 256 MiB ...",
            "matmul_precision": "torch highest (tf32 matmul off, cudnn on)",
            "sm_clock_mhz_min": 1500.0, "sm_clock_mhz_max": 1980.0,
            "max_sm_clock_mhz": 1980.0, "throttle_reasons": ["sw_power_cap"],
            "throttled": True, "clock_samples": 12})
        return result

    peaks = {"cpu": {"matmul_flops_per_s": {"float32": {"value": 1e12}},
                     "memory_bytes_per_s": {"value": 1e11}}}
    run_dir = RunDir.create(tmp_path / "run", {"peaks": peaks["cpu"]})
    runner = Runner(run_dir, RunSettings(), executor=PassingExecutor(timing), peaks=peaks)
    summary = runner.run([Point(impl="softmax_torch", seq_len=256, head_dim=32),
                          Point(impl="hrr_torch", seq_len=256, head_dim=32)])
    record = next(r for r in summary.records if r.impl == "softmax_torch")
    assert record.throttled is True and record.sm_clock_mhz_min == 1500.0
    assert record.throttle_reasons == ["sw_power_cap"] and record.timer == "cudagraph"
    assert record.extra["clock_samples"] == 12
    assert record.bytes_moved > 0 and record.pct_peak_bandwidth is not None
    assert record.pct_peak_flops == pytest.approx(
        100 * record.flops / record.time_s / 1e12)
    report = render_report([run_dir.path], tmp_path / "rep")
    text = (report / "report.md").read_text()
    assert "**Throttled**" in text and "SM clock down to 1500 of 1980 MHz" in text
    assert "reasons sw_power_cap" in text and "75% of the application clock" in text


def test_timer_flag_is_checked(capsys):
    from harness.cli import main

    assert main(["sweep", "--impl", "hrr_torch", "--device", "cpu", "--timer", "cudagraph",
                 "--dry-run"]) == 2
    assert "--timer cudagraph: needs a CUDA device" in capsys.readouterr().err
    assert main(["sweep", "--impl", "hrr_torch", "--device", "cpu", "--timer", "wall",
                 "--dry-run"]) == 2
