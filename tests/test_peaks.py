"""Machine peaks (harness.metrics.peaks), bytes-moved models (harness.metrics.traffic) and % of peak."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

import harness
from harness.metrics import peaks, traffic
from harness.contract.records import Point


# -- the data-sheet table ----------------------------------------------------------------------
@pytest.mark.parametrize("name, entry", [
    ("NVIDIA H100 80GB HBM3", "H100 SXM"),
    ("NVIDIA H100 PCIe", "H100 PCIe"),
    ("NVIDIA H200", "H200 SXM"),
    ("NVIDIA A100-SXM4-40GB", "A100 40GB"),
    ("NVIDIA A100-PCIE-40GB", "A100 40GB"),
    ("NVIDIA A100-SXM4-80GB", "A100 80GB SXM"),
    ("NVIDIA A100 80GB PCIe", "A100 80GB PCIe"),
    ("NVIDIA L4", "L4"),
    ("NVIDIA L40S", "L40S"),
    ("NVIDIA GeForce RTX 4090", "RTX 4090"),
    ("AMD Instinct MI300X", "MI300X"),
])
def test_table_recognises_each_gpu_by_its_driver_name(name, entry):
    assert peaks.table_entry(name).name == entry


@pytest.mark.parametrize("name", ["NVIDIA H100 NVL", "NVIDIA L40", "Tesla V100-SXM2-16GB",
                                  "NVIDIA H200 NVL", "NVIDIA GeForce RTX 4090 Laptop GPU"])
def test_table_does_not_guess_unknown_variants(name):
    assert peaks.table_entry(name) is None


def test_table_holds_dense_peaks_not_sparsity_figures():
    h100 = peaks.table_entry("NVIDIA H100 80GB HBM3")
    assert h100.matmul_flops_per_s["bfloat16"] == pytest.approx(989.5e12)
    assert h100.memory_bytes_per_s == pytest.approx(3.35e12)
    assert peaks.table_entry("NVIDIA A100-SXM4-80GB").matmul_flops_per_s["float16"] == 312e12
    assert peaks.table_entry("NVIDIA L4").matmul_flops_per_s["bfloat16"] == 121e12
    # the RTX 4090's float16 figure is the float32-accumulate one (torch's), not 330
    assert peaks.table_entry("NVIDIA GeForce RTX 4090").matmul_flops_per_s["float16"] == \
        pytest.approx(165.2e12)
    for entry in peaks.GPU_TABLE:
        assert entry.citation and set(entry.matmul_flops_per_s) >= {"float32", "bfloat16",
                                                                     "float16"}
        # tensor-core half precision is never below plain float32
        assert entry.matmul_flops_per_s["bfloat16"] >= entry.matmul_flops_per_s["float32"]


def test_run_json_peaks_show_measured_and_table_on_a_gpu():
    measured = {"matmul_flops_per_s": {"float32": {"value": 5e13, "source": "measured"}},
                "memory_bytes_per_s": {"value": 3e12, "source": "measured"}}
    out = peaks.with_table(measured, "NVIDIA H100 80GB HBM3")
    assert out["matmul_flops_per_s"]["float32"]["source"] == "measured"
    assert out["table"]["source"] == "table" and out["table"]["gpu"] == "H100 SXM"
    unknown = peaks.with_table(measured, "Some GPU")
    assert "not in attnbench's table" in unknown["table"]["unavailable"]
    assert "table" not in peaks.with_table(measured, None)   # CPU: no table


# -- measuring and caching ---------------------------------------------------------------------
def test_measured_peaks_are_work_over_the_best_call():
    assert peaks.best_rate(10.0, [2.0, 1.0, 4.0]) == 10.0
    gemm = peaks.measure_gemm("cpu", "float32", n=128, repeats=3)
    copy = peaks.measure_copy("cpu", nbytes=1 << 20, repeats=3)
    assert gemm.value == pytest.approx(2 * 128 ** 3 / min(gemm.samples_s))
    assert copy.value == pytest.approx(2 * (1 << 20) / min(copy.samples_s))
    assert "STREAM" in copy.method and len(copy.samples_s) == 3


@dataclass
class FakeOutcome:
    status: str
    result: Any = None
    message: str = ""


def test_peaks_are_cached_per_machine_and_reused_only_when_asked(tmp_path):
    calls = []
    fake = {"matmul_flops_per_s": {"float32": {"value": 1e11}},
            "memory_bytes_per_s": {"value": 2e10}}

    def measure(device):
        calls.append(device)
        return FakeOutcome("ok", fake)

    first = peaks.obtain(["cpu"], measure, cache_root=tmp_path, hardware_id="abc", reuse=True)
    assert calls == ["cpu"] and first["cpu"]["memory_bytes_per_s"]["value"] == 2e10
    cache = peaks.cache_file(tmp_path, "abc", "cpu")
    assert json.loads(cache.read_text())["matmul_flops_per_s"]["float32"]["value"] == 1e11
    again = peaks.obtain(["cpu"], measure, cache_root=tmp_path, hardware_id="abc", reuse=True)
    assert calls == ["cpu"] and again["cpu"]["cached_from"] == str(cache)
    peaks.obtain(["cpu"], measure, cache_root=tmp_path, hardware_id="abc", reuse=False)
    assert calls == ["cpu", "cpu"]   # without the flag: measured again
    failed = peaks.obtain(["cpu"], lambda d: FakeOutcome("timeout", message="killed"),
                          cache_root=tmp_path / "x", hardware_id="abc", reuse=False)
    assert "timeout" in failed["cpu"]["unavailable"]
    assert peaks.flops_peak(failed["cpu"], "float32") is None


# -- traffic models ----------------------------------------------------------------------------
def point(**kw) -> Point:
    base = dict(impl="x", seq_len=1024, head_dim=64, batch=2, heads=4, dtype="float32")
    return Point(**{**base, **kw})


def test_compulsory_traffic_reads_qkv_and_writes_o():
    p = point()
    tensor = 2 * 4 * 1024 * 64 * 4
    assert traffic.compulsory(p).bytes_moved == 4 * tensor
    assert traffic.compulsory(point(pass_="backward")).bytes_moved == 7 * tensor
    assert traffic.compulsory(point(pass_="forward_backward")).bytes_moved == 11 * tensor
    assert traffic.compulsory(point(dtype="bfloat16")).bytes_moved == 2 * tensor


def test_materialising_methods_add_the_t_by_t_scores_and_tiled_ones_do_not():
    p = point()
    square = 2 * 4 * 1024 * 1024 * 4
    assert traffic.materialised_scores(p).bytes_moved == \
        traffic.compulsory(p).bytes_moved + 4 * square
    assert traffic.tiled_exact(p).bytes_moved == traffic.compulsory(p).bytes_moved
    fb = point(pass_="forward_backward")
    assert traffic.materialised_scores(fb).bytes_moved == \
        traffic.compulsory(fb).bytes_moved + 9 * square
    assert traffic.tiled_exact(fb).bytes_moved > traffic.compulsory(fb).bytes_moved


def test_performer_and_hrr_models():
    p = point(dtype="float16")
    features = 2 * 4 * 1024 * 256 * 4          # float32 features even for float16 input
    assert traffic.random_features(256)(p).bytes_moved == \
        traffic.compulsory(p).bytes_moved + 4 * features
    rows = 2 * 4 * 1024 * 4
    assert traffic.hrr(p).bytes_moved == traffic.compulsory(p).bytes_moved + 2 * rows


def test_every_builtin_implementation_declares_a_traffic_model():
    # built-in methods only: other tests register their own (impls_faults) in this process
    for impl in (i for i in harness.all_implementations()
                 if i.module.startswith("implementations.")):
        assert impl.traffic is not None, impl.name
        model = impl.traffic(point(impl=impl.name))
        assert model.bytes_moved >= traffic.compulsory(point()).bytes_moved
        assert model.model.startswith("compulsory")


def test_utilisation_percentages():
    out = traffic.utilisation(bytes_moved=1e9, flops=4e9, time_s=0.5, peak_bytes_per_s=4e9,
                              peak_flops_per_s=1e10)
    assert out == {"achieved_bytes_per_s": 2e9, "pct_peak_bandwidth": 50.0,
                   "pct_peak_flops": 80.0, "arithmetic_intensity": 4.0}
    none = traffic.utilisation(bytes_moved=1e9, flops=None, time_s=0.5, peak_bytes_per_s=None,
                               peak_flops_per_s=None)
    assert none["pct_peak_bandwidth"] is None and none["pct_peak_flops"] is None
    undeclared = traffic.traffic_metrics(point(), None, time_s=1.0, flops=None,
                                         peak_bytes_per_s=1e9, peak_flops_per_s=None)
    assert "declares no model" in undeclared["bytes_model"]


def test_merged_runs_keep_the_peaks_of_their_machine(tmp_path):
    from harness.contract.records import SpeedRecord
    from harness.store.merge import merge_runs
    from harness.store.run_dir import RunDir

    fake = {"matmul_flops_per_s": {"float32": {"value": 1e11}},
            "memory_bytes_per_s": {"value": 2e10}}
    for index, seq_len in enumerate((256, 512)):
        run = RunDir.create(tmp_path / f"part{index}", {
            "machine": {"hardware_id": "h1", "hardware_tag": "cpu-x"}, "peaks": fake})
        run.append(SpeedRecord.for_point(point(impl="hrr_torch", seq_len=seq_len),
                                         framework="torch", family="hrr", status="ok",
                                         hardware_id="h1"))
    merge_runs([tmp_path / "part0", tmp_path / "part1"], tmp_path / "all")
    meta = json.loads((tmp_path / "all" / "run.json").read_text())
    assert meta["peaks"] == fake and meta["peaks_by_machine"] == {"h1": fake}


# -- peaks that hold: the stop rule, a fake clock ----------------------------------------------
class FakeClock:
    """A clock a fake call advances by the next of ``durations`` (warm-up calls included)."""

    def __init__(self, durations):
        self.now = 0.0
        self.durations = list(durations)
        self.calls = 0

    def __call__(self) -> float:
        return self.now

    def call(self) -> None:
        self.now += self.durations[min(self.calls, len(self.durations) - 1)]
        self.calls += 1


def sample(durations, rule):
    clock = FakeClock(durations)
    return peaks.sample_until_stable(clock.call, lambda: None, rule, clock=clock, warmup=1)


def test_sampling_goes_on_while_the_best_call_still_improves():
    """The issue's five samples (0.187 .. 0.119 s, still falling) are not a peak: the rule
    keeps timing until the best has held for ``window`` calls."""
    rule = peaks.StopRule(min_samples=5, window=3, tolerance=0.02, min_work_s=0.5, max_s=60)
    falling = [0.2, 0.187, 0.136, 0.136, 0.126, 0.119, 0.105, 0.1, 0.1, 0.101, 0.1, 0.1]
    out = sample(falling, rule)
    assert out.stable and out.samples_s[:5] == [0.187, 0.136, 0.136, 0.126, 0.119]
    assert len(out.samples_s) > 5
    assert min(out.samples_s) == pytest.approx(0.1)
    # stopped once nothing in the last 3 beat the best before them by more than 2%
    assert peaks.held(out.samples_s, rule) and not peaks.held(out.samples_s[:-1], rule)


def test_sampling_needs_a_second_of_work_even_when_flat():
    rule = peaks.StopRule(min_samples=5, window=3, min_work_s=1.0, max_s=60)
    out = sample([0.05] * 100, rule)
    assert out.stable and sum(out.samples_s) >= 1.0
    assert sum(out.samples_s[:-1]) < 1.0


def test_sampling_stops_at_the_time_cap_and_says_it_is_not_stable():
    rule = peaks.StopRule(min_samples=5, window=3, min_work_s=0.1, max_s=2.0)
    ever_faster = [0.5 * 0.9 ** i for i in range(400)]   # a new best by 10% every call
    out = sample(ever_faster, rule)
    assert not out.stable and "time cap" in out.stop
    assert out.elapsed_s >= 2.0


def test_a_small_improvement_within_the_tolerance_does_not_restart_the_window():
    rule = peaks.StopRule(min_samples=4, window=3, tolerance=0.02, min_work_s=0.0, max_s=60)
    assert peaks.held([1.0, 0.995, 0.99, 0.985], rule)
    assert not peaks.held([1.0, 0.995, 0.97, 0.99], rule)


def test_measure_peaks_records_role_threads_times_and_stability(monkeypatch):
    import torch

    def fake(value, stable=True):
        return peaks.PeakMeasurement(value, "fake", [0.1, 0.1], stable=stable, stop="x")

    monkeypatch.setattr(peaks, "device_kind", lambda device: "cuda")
    monkeypatch.setattr(peaks, "measure_gemm",
                        lambda device, dtype: fake({"float32": 5e13}.get(dtype, 9e14)))
    monkeypatch.setattr(peaks, "measure_copy", lambda device: fake(3e12, stable=False))
    out = peaks.measure_peaks("cuda:0", role="end")
    assert out["role"] == "end" and out["threads"] == torch.get_num_threads()
    assert set(out["matmul_flops_per_s"]) == set(peaks.GPU_DTYPES)
    assert out["started_at"] and out["ended_at"] and out["measure_s"] >= 0
    assert out["stable"] is False   # the copy hit its cap


# -- a run's measurements: best kept, all in run.json ------------------------------------------
def one(flops, copy, role, when="2025-01-01T10:00:00"):
    return {"device": "cpu", "role": role, "started_at": when, "threads": 2,
            "matmul_flops_per_s": {"float32": {"value": flops, "samples_s": [1.0]}},
            "memory_bytes_per_s": {"value": copy, "samples_s": [1.0]}}


def test_the_run_peak_is_the_best_of_its_measurements_and_all_are_kept():
    start = peaks.add_measurement({}, one(144e9, 9e9, "start"))
    assert start["measurements"][0]["role"] == "start"
    both = peaks.add_measurement(start, one(190e9, 8e9, "end", "2025-01-01T10:05:00"), "end")
    assert [m["role"] for m in both["measurements"]] == ["start", "end"]
    assert peaks.flops_peak(both, "float32") == 190e9      # the end's GEMM
    assert peaks.bandwidth_peak(both) == 9e9                # the start's copy
    assert both["matmul_flops_per_s"]["float32"]["role"] == "end"
    assert both["memory_bytes_per_s"]["role"] == "start"
    assert peaks.roofs(both) == ({"float32": 190e9}, 9e9)
    assert "best of start measurement" in peaks.peaks_against(both)


def test_an_old_run_json_with_one_peak_still_loads_as_its_start_measurement():
    old = {"device": "cpu", "matmul_flops_per_s": {"float32": {"value": 1e11}},
           "memory_bytes_per_s": {"value": 2e10}, "threads": 2, "measured_at": "t0"}
    runs = peaks.measurements(old)
    assert len(runs) == 1 and runs[0]["role"] == "start"
    assert peaks.roofs(old) == ({"float32": 1e11}, 2e10)
    later = peaks.add_measurement(old, one(3e11, 1e10, "report"))
    assert [m["role"] for m in later["measurements"]] == ["start", "report"]
    assert peaks.flops_peak(later, "float32") == 3e11
    assert peaks.measurements({"unavailable": "x"}) == []


def test_measure_again_adds_the_end_measurement_and_updates_the_cache(tmp_path):
    start = peaks.obtain(["cpu"], lambda d: FakeOutcome("ok", one(1e11, 2e10, "start")),
                         cache_root=tmp_path, hardware_id="abc", reuse=False)
    end = peaks.measure_again(start, lambda d: FakeOutcome("ok", one(2e11, 1e10, "start")),
                              "end", cache_root=tmp_path, hardware_id="abc")
    assert [m["role"] for m in end["cpu"]["measurements"]] == ["start", "end"]
    cached = peaks.read_cache(peaks.cache_file(tmp_path, "abc", "cpu"))
    assert peaks.flops_peak(cached, "float32") == 2e11 and len(cached["measurements"]) == 2
    failed = peaks.measure_again(end, lambda d: FakeOutcome("timeout", message="killed"), "end")
    assert len(failed["cpu"]["measurements"]) == 2 and "timeout" in \
        failed["cpu"]["remeasure_failed"]
    # reused from the cache by a later run: every measurement, the best at the top
    reused = peaks.obtain(["cpu"], lambda d: pytest.fail("measured"), cache_root=tmp_path,
                          hardware_id="abc", reuse=True)
    assert peaks.flops_peak(reused["cpu"], "float32") == 2e11


def test_a_point_above_the_peak_names_the_measurement_it_beat():
    start = peaks.add_measurement({}, one(144e9, 9e9, "start", "2025-01-01T10:00:00"))
    mark = peaks.under_measured(133.0, 50.0, start, "float32")
    assert "float32 GEMM 133%" in mark and "start measurement (2025-01-01T10:00:00)" in mark
    assert "copy" not in mark
    assert "copy 120%" in peaks.under_measured(None, 120.0, start, "float32")
    assert peaks.under_measured(99.9, 100.0, start, "float32") == ""
    assert peaks.peaks_against({"unavailable": "peaks not measured: worker timeout"}) \
        .startswith("peaks not measured")


# -- report --measure-peaks --------------------------------------------------------------------
def _run_with_peaks(tmp_path, hardware_id):
    from harness.contract.records import SpeedRecord
    from harness.store.run_dir import RunDir

    start = peaks.add_measurement({}, one(1e11, 2e10, "start"))
    run = RunDir.create(tmp_path / "run", {"kind": "speed", "peaks": start,
                                           "machine": {"hardware_id": hardware_id,
                                                       "hardware_tag": "cpu-x"}})
    run.append(SpeedRecord.for_point(point(impl="hrr_torch"), framework="torch", family="hrr",
                                     status="ok", hardware_id=hardware_id))
    run.release()
    return run


def test_report_measure_peaks_is_refused_on_another_machine(tmp_path, capsys, monkeypatch):
    from harness.cli import main
    import harness.store.hardware as hardware

    monkeypatch.setattr(hardware, "fingerprint", lambda: {"hardware_id": "here"})
    run = _run_with_peaks(tmp_path, "elsewhere")
    assert main(["report", str(run.path), "--measure-peaks", "--out", str(tmp_path / "r")]) == 2
    assert "only be measured again on the machine that ran it" in capsys.readouterr().err
    assert len(peaks.measurements(run.metadata()["peaks"])) == 1


def test_report_measure_peaks_of_a_merge_of_machines_says_so(tmp_path, capsys, monkeypatch):
    from harness.cli import main
    import harness.store.hardware as hardware

    monkeypatch.setattr(hardware, "fingerprint", lambda: {"hardware_id": "here"})
    run = _run_with_peaks(tmp_path, "mixed")
    run.update_metadata(machines={"here": {}, "there": {}})
    assert main(["report", str(run.path), "--measure-peaks", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "a merge of records from here, there" in err and "each machine's own run" in err
    assert len(err.strip().splitlines()) == 1


def test_report_measure_peaks_adds_a_report_measurement(tmp_path, monkeypatch):
    from harness.commands.report import measure_peaks_again
    import harness.measure.runner as runner
    import harness.store.hardware as hardware

    class Executor:
        def run(self, task, device, role, context, timeout=None, key=None):
            assert task == "peaks" and role == "report"
            return FakeOutcome("ok", one(3e11, 1e10, role))

        def close(self):
            pass

    monkeypatch.setattr(hardware, "fingerprint", lambda: {"hardware_id": "here"})
    monkeypatch.setattr(runner, "make_executor", lambda isolate: Executor())
    run = _run_with_peaks(tmp_path, "here")
    measure_peaks_again([run.path])
    after = run.metadata()["peaks"]
    assert [m["role"] for m in after["measurements"]] == ["start", "report"]
    assert peaks.flops_peak(after, "float32") == 3e11 and peaks.bandwidth_peak(after) == 2e10


def test_a_peak_measured_while_others_took_the_cpus_says_so():
    """A stop rule sees a steadily loaded machine as stable: the measurement records the
    machine's state, and its name in marks and tables says it was busy."""
    from harness.measure import machine_state as ms
    from harness.measure.worker import peaks_machine_state
    from harness.report.render import machine_text

    class Watch:
        def __init__(self, others: float) -> None:
            self.others = others

        def state(self, cpus_needed):
            return ms.MachineState(load_avg_1m=2.0, cpus_available=2, cpus_needed=cpus_needed,
                                   other_cpus=self.others, cpu_steal_fraction=0.0,
                                   state_window_s=3.4)

    busy = peaks_machine_state(Watch(1.4), "cpu", 2)
    quiet = peaks_machine_state(Watch(0.02), "cpu", 2)
    assert "1.40 of 2 CPUs" in busy["busy"] and quiet["busy"] == ""
    assert busy["other_cpus"] == 1.4 and quiet["cpus_needed"] == 2
    measurement = {"role": "start", "started_at": "2026-12-05T18:26:43+0000"}
    assert peaks.describe({**measurement, "machine_state": busy}).endswith(", machine busy")
    assert not peaks.describe({**measurement, "machine_state": quiet}).endswith("busy")
    assert machine_text(busy).startswith("busy: other processes used 1.40")
    assert machine_text(quiet) == "quiet" and machine_text(None) == ""


# -- --resume keeps the peaks measured before it ------------------------------------------------
def test_resume_keeps_the_earlier_sessions_peaks_each_once(tmp_path):
    from harness.store.run_dir import RunDir

    first = peaks.add_measurement(peaks.add_measurement({}, one(1e11, 2e10, "start", "t0")),
                                  one(3e11, 1e10, "end", "t1"))
    run = RunDir.create(tmp_path / "run", {"kind": "speed", "peaks": first,
                                           "machine": {"hardware_id": "h1"}})
    run.release()
    earlier = run.metadata()
    # the resumption rewrites run.json: the peaks measured so far stay in it until the
    # resumed session's own are added
    resumed = RunDir.create(tmp_path / "run", {"kind": "speed",
                                               "machine": {"hardware_id": "h1"}}, resume=True)
    resumed.release()
    assert resumed.metadata()["peaks"] == first
    now = {"cpu": peaks.add_measurement({}, one(2e11, 3e10, "start", "t2"))}
    kept = peaks.with_earlier(now, earlier, "h1")
    assert [m["started_at"] for m in kept["cpu"]["measurements"]] == ["t0", "t1", "t2"]
    assert peaks.flops_peak(kept["cpu"], "float32") == 3e11
    assert peaks.bandwidth_peak(kept["cpu"]) == 3e10
    # a measurement already there (--reuse-peaks reads the cache, which holds them) once
    again = peaks.with_earlier({"cpu": kept["cpu"]}, {"peaks": kept["cpu"],
                                                      "machine": {"hardware_id": "h1"}}, "h1")
    assert len(again["cpu"]["measurements"]) == 3
    # peaks of another machine are no roof for this one: kept apart, not in the best
    other = peaks.with_earlier(now, earlier, "h2")
    assert len(other["cpu"]["measurements"]) == 1
    assert other["cpu"]["earlier_machines"]["h1"]["measurements"] == first["measurements"]


def test_a_merge_keeps_every_peaks_measurement_of_each_machine_once(tmp_path):
    from harness.contract.records import SpeedRecord
    from harness.store.merge import merge_runs
    from harness.store.run_dir import RunDir

    shared = one(1e11, 2e10, "start", "t0")   # the same measurement in both (a resumed copy)
    parts = [peaks.add_measurement(peaks.add_measurement({}, shared), one(3e11, 1e10, "end",
                                                                          "t1")),
             peaks.add_measurement(peaks.add_measurement({}, shared), one(2e11, 4e10, "end",
                                                                          "t2"))]
    for index, (seq_len, measured) in enumerate(zip((256, 512), parts)):
        run = RunDir.create(tmp_path / f"part{index}", {
            "machine": {"hardware_id": "h1", "hardware_tag": "cpu-x"}, "peaks": measured})
        run.append(SpeedRecord.for_point(point(impl="hrr_torch", seq_len=seq_len),
                                         framework="torch", family="hrr", status="ok",
                                         hardware_id="h1"))
        run.release()
    merge_runs([tmp_path / "part0", tmp_path / "part1"], tmp_path / "all")
    meta = json.loads((tmp_path / "all" / "run.json").read_text())
    assert [m["started_at"] for m in meta["peaks"]["measurements"]] == ["t0", "t1", "t2"]
    assert peaks.roofs(meta["peaks"]) == ({"float32": 3e11}, 4e10)
    assert meta["peaks_by_machine"]["h1"] == meta["peaks"]


def test_a_finished_run_resumed_keeps_its_peaks_and_measures_none(tmp_path):
    """--resume of a run with every point recorded has nothing to set new peaks against: the
    run's peaks are kept as they are; a point left, or another machine, measures them."""
    from types import SimpleNamespace

    from harness.contract.records import SpeedRecord
    from harness.scale.inprocess import finished_peaks
    from harness.store.run_dir import RunDir

    held = peaks.add_measurement({}, one(3e11, 2e10, "start", "t0"))
    run = RunDir.create(tmp_path / "run", {"kind": "speed", "peaks": held,
                                           "machine": {"hardware_id": "h1"}})
    done = point(impl="hrr_torch", seq_len=256)
    run.append(SpeedRecord.for_point(done, framework="torch", family="hrr", status="ok"))
    run.release()
    meta = run.metadata()
    sweep = SimpleNamespace(resume=True, points=[done])
    assert finished_peaks(sweep, run, meta, "h1") == {"cpu": held}
    left = SimpleNamespace(resume=True, points=[done, point(impl="hrr_torch", seq_len=512)])
    assert finished_peaks(left, run, meta, "h1") is None
    assert finished_peaks(sweep, run, meta, "h2") is None
    assert finished_peaks(SimpleNamespace(resume=False, points=[done]), run, meta, "h1") is None
