"""One timing basis for every framework of a run (--timing-basis), tested on CPU with fakes:
the timers' bases (a fake torch.cuda with events and synchronize, a fake JAX array with
block_until_ready), the plan's resolution, the record field (old records read it from their
timer), compare refusing to judge across bases, the report's captions, and the timing loop that
enters the GPU watch after the warm-up."""

from __future__ import annotations

import pytest

from harness.contract.records import (
    SpeedRecord,
    TIMING_BASES,
    implied_timing_basis,
)
from harness.contract.workload import Workload
from harness.errors import UnsupportedError, UsageError
from harness.grid.plan import SweepRequest, plan, plan_timing_basis
from harness.grid.settings import RunSettings, TimingSettings, resolve_timing_basis
from harness.measure import timers
from harness.measure.timing import time_workload


class FakeEvent:
    """torch.cuda.Event: a recorded event holds the fake device clock (ms)."""
    device_ms = [0.0]

    def __init__(self, enable_timing=True):
        self.at = None

    def record(self):
        self.at = FakeEvent.device_ms[0]

    def synchronize(self):
        pass

    def elapsed_time(self, other):
        return other.at - self.at


class FakeCuda:
    def __init__(self, log):
        self.log = log
        self.Event = FakeEvent

    def synchronize(self, device=None):
        self.log.append("sync")


class FakeTorch:
    def __init__(self, log):
        self.cuda = FakeCuda(log)


class FakeJaxArray:
    """A JAX array whose result is ready only after block_until_ready."""

    def __init__(self, log):
        self.log = log

    def block_until_ready(self):
        self.log.append("block_until_ready")
        return self


def work_on(log, device_ms=0.0):
    def run():
        log.append("run")
        FakeEvent.device_ms[0] += device_ms
        return "out"
    return Workload(run=run, block=lambda v: None, check=lambda v: True, input_bytes=0)


def test_torch_host_sync_timer_synchronises_before_and_after_the_timed_call():
    log: list = []
    timer = timers.CudaSyncTimer("cuda:0", flush_l2=False, torch_module=FakeTorch(log))
    elapsed, value = timer.time(work_on(log))
    assert log == ["sync", "run", "sync"] and value == "out" and elapsed >= 0
    assert timer.basis == "host_sync" and timers.timer_basis(timer) == "host_sync"


def test_torch_event_timer_is_the_device_events_basis():
    log: list = []
    timer = timers.CudaEventTimer("cuda:0", flush_l2=False, torch_module=FakeTorch(log))
    elapsed, _ = timer.time(work_on(log, device_ms=3.0))
    assert elapsed == pytest.approx(0.003) and "sync" not in log
    assert timers.timer_basis(timer) == "device_events"


def test_cudagraph_timer_on_host_sync_replays_between_synchronisations():
    log: list = []
    timer = timers.CudaGraphTimer("cuda:0", torch_module=FakeTorch(log), basis="host_sync")
    timer.graph = type("G", (), {"replay": lambda self: log.append("replay")})()
    timer.output = "out"
    elapsed, value = timer.time(work_on(log))
    assert log == ["sync", "replay", "sync"] and value == "out"
    wrapped = timers.NvtxTimer(timer, "p", nvtx=type("N", (), {
        "range_push": staticmethod(lambda n: None), "range_pop": staticmethod(lambda: None)}))
    assert wrapped.basis == "host_sync"


def test_jax_is_timed_on_the_host_with_block_until_ready_inside_the_timed_region():
    log: list = []
    array = FakeJaxArray(log)
    work = Workload(run=lambda: (log.append("run"), array)[1],
                    block=lambda v: v.block_until_ready(), check=lambda v: True, input_bytes=0)
    timer = timers.WallClockTimer()
    _, value = timer.time(work)
    assert log == ["run", "block_until_ready"] and value is array
    assert timers.timer_basis(timer) == timers.timer_basis(None) == "host_sync"


def test_device_events_cannot_time_jax_on_cuda_and_host_sync_gives_torch_a_sync_timer():
    assert "no CUDA-event timer" in timers.basis_problem("device_events", "jax", "cuda:0")
    assert timers.basis_problem("device_events", "jax", "cpu") == ""
    assert timers.basis_problem("host_sync", "jax", "cuda") == ""
    with pytest.raises(UnsupportedError, match="no CUDA-event timer"):
        timers.device_timer("jax", "cuda:0", True, "device_events")
    pytest.importorskip("torch")
    assert isinstance(timers.device_timer("torch", "cuda:0", False, "host_sync"),
                      timers.CudaSyncTimer)
    assert type(timers.device_timer("torch", "cuda:0", False, "device_events")) is \
        timers.CudaEventTimer
    assert timers.device_timer("torch", "cpu", True, "host_sync") is None


def test_auto_is_device_events_for_torch_only_cuda_runs_and_host_sync_otherwise():
    assert TIMING_BASES == ("device_events", "host_sync")
    assert resolve_timing_basis("auto", {"torch"}) == "device_events"
    assert resolve_timing_basis("auto", {"torch", "jax"}) == "host_sync"
    assert resolve_timing_basis("auto", set()) == "host_sync"      # CPU only
    assert resolve_timing_basis("host_sync", {"torch"}) == "host_sync"
    assert TimingSettings().timing_basis == "auto"


def test_the_plan_resolves_one_basis_for_the_whole_grid_and_run_json_keeps_it():
    from harness.contract.records import Point

    torch_only = [Point("softmax_torch", 64, 16, device="cuda"), Point("hrr_torch", 64, 16)]
    mixed = torch_only + [Point("hrr_jax", 64, 16, device="cuda")]
    assert plan_timing_basis(None, torch_only) == "device_events"
    assert plan_timing_basis("auto", mixed) == "host_sync"
    assert plan_timing_basis("host_sync", torch_only) == "host_sync"
    with pytest.raises(UsageError, match="hrr_jax|jax"):
        plan_timing_basis("device_events", mixed)
    with pytest.raises(UsageError, match="--timing-basis"):
        plan_timing_basis("gpu", torch_only)
    with pytest.raises(UsageError, match="no point of this grid runs on a CUDA device"):
        plan_timing_basis("device_events", [Point("softmax_torch", 64, 16)])
    sweep = plan(SweepRequest(impl="hrr_torch", seq_len="64", head_dim="16", device="cpu"))
    assert sweep.settings.as_dict()["timing"]["timing_basis"] == "host_sync"
    sweep = plan(SweepRequest(impl="hrr_torch", seq_len="64", head_dim="16", device="cpu",
                              timing_basis="host_sync"))
    assert sweep.description["arguments"]["timing_basis"] == "host_sync"


def test_a_runner_given_auto_resolves_it_for_its_points():
    from harness.contract.records import Point
    from harness.measure.runner import with_timing_basis

    settings = RunSettings()
    cuda = with_timing_basis(settings, [Point("softmax_torch", 64, 16, device="cuda")])
    assert cuda.timing.timing_basis == "device_events"
    mixed = with_timing_basis(settings, [Point("softmax_torch", 64, 16, device="cuda"),
                                         Point("hrr_jax", 64, 16, device="cuda")])
    assert mixed.timing.timing_basis == "host_sync"
    fixed = RunSettings(timing=TimingSettings(timing_basis="host_sync"))
    assert with_timing_basis(fixed, [Point("softmax_torch", 64, 16, device="cuda")]) is fixed


def record(impl="softmax_torch", basis="", timer="cuda_event", samples=(0.01, 0.011, 0.012)):
    data = {"impl": impl, "framework": "torch", "family": "exact", "device": "cuda",
            "batch": 1, "heads": 8, "seq_len": 64, "head_dim": 16, "dtype": "float32",
            "causal": False, "pass": "forward", "status": "ok", "timer": timer,
            "time_samples_s": list(samples), "time_s": sorted(samples)[len(samples) // 2]}
    if basis:
        data["timing_basis"] = basis
    return SpeedRecord.from_json(data)


def test_records_without_a_basis_read_the_one_their_timer_implies():
    assert implied_timing_basis("cuda_event") == implied_timing_basis("cudagraph") == \
        "device_events"
    assert implied_timing_basis("perf_counter") == "host_sync"
    assert implied_timing_basis("perf_counter+block_until_ready") == "host_sync"
    assert implied_timing_basis("") == ""
    assert record(timer="cuda_event").timing_basis == "device_events"
    assert record(timer="perf_counter+block_until_ready").timing_basis == "host_sync"
    assert record(basis="host_sync", timer="cudagraph").timing_basis == "host_sync"
    again = SpeedRecord.from_json(record(basis="host_sync").to_json())
    assert again.timing_basis == "host_sync"


def test_compare_does_not_judge_times_on_different_bases():
    from harness.verdicts.compare import compare_records, run_bases
    from harness.verdicts.words import NOT_COMPARABLE

    slow = (0.02, 0.021, 0.022)
    result = compare_records([record(basis="device_events")],
                             [record(basis="host_sync", timer="perf_counter+cuda_sync",
                                     samples=slow)])
    (row,) = result.rows
    assert row.verdict == NOT_COMPARABLE and not row.fails
    assert "device_events vs host_sync" in row.note
    same = compare_records([record(basis="host_sync")], [record(basis="host_sync",
                                                                 samples=slow)])
    assert same.rows[0].verdict == "slower"
    # --relative-to: the point and its reference on different bases in one run
    mixed = [record(basis="host_sync"), record("ref", basis="device_events")]
    ref_rows = compare_records(mixed, mixed, __import__(
        "harness.verdicts.compare", fromlist=["Settings"]).Settings(relative_to="ref")).rows
    assert any(r.verdict == NOT_COMPARABLE and "ref" in r.note for r in ref_rows)
    assert run_bases(mixed) == {"host_sync", "device_events"}


def test_the_report_says_which_basis_its_times_are_on():
    import pandas as pd
    from harness.report.render import basis_caption

    one = pd.DataFrame({"timing_basis": ["host_sync", "host_sync", ""]})
    assert basis_caption(one).startswith("Timing basis: host_sync (wall clock")
    two = pd.DataFrame({"timing_basis": ["host_sync", "device_events"]})
    assert "not comparable" in basis_caption(two)
    assert basis_caption(pd.DataFrame({"timing_basis": [""]})) == ""


class RecordingWatch:
    def __init__(self, log):
        self.log = log

    def __enter__(self):
        self.log.append("watch on")
        return self

    def __exit__(self, *exc):
        self.log.append("watch off")


def test_the_gpu_watch_is_entered_after_the_warm_up_around_the_samples_only():
    log: list = []
    work = work_on(log)
    settings = TimingSettings(warmup=2, warmup_time_s=1e9, min_time_s=0.0, min_repeats=3,
                              max_repeats=3)
    samples, _ = time_workload(work, settings, watch=RecordingWatch(log))
    assert log == ["run", "run", "watch on", "run", "run", "run", "watch off"]
    spans = work.info["sample_spans"]
    assert len(spans) == len(samples) == 3 and all(end >= start for start, end in spans)


def test_a_worker_resolves_auto_for_its_point_alone():
    from harness.grid.settings import TimingSettings as TS
    from harness.measure.worker import point_timing_basis

    assert point_timing_basis(TS(), "torch", "cuda:0") == "device_events"
    assert point_timing_basis(TS(), "jax", "cuda:0") == "host_sync"
    assert point_timing_basis(TS(), "torch", "cpu") == "host_sync"
    assert point_timing_basis(TS(timing_basis="host_sync"), "torch", "cuda") == "host_sync"
