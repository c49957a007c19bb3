"""Noise measured and acted on: the sampling rule (a spread target or a time cap), the machine's
state from /proc (fixture texts), the noisy mark, and the report's handling of noisy points.
No test here depends on timing: samples come from scripted timers, /proc from fixture texts."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from harness.contract.records import NoiseMetrics, SpeedRecord, TimingResult
from harness.errors import UsageError
from harness.grid.plan import SweepRequest, plan
from harness.grid.settings import TimingSettings
from harness.measure import machine_state as ms
from harness.measure.timing import MAX_REPEATS, SPREAD_MET, TIME_CAP, stop_rule, time_workload
from harness.measure.worker import cpus_needed, noise_fields
from harness.metrics.noise import CONTENTION_SHARE, NOISY_MEDIAN, cpu_shortfall, noise_verdict
from harness.metrics import stats
from harness.metrics.stats import relative_spread

RULE = TimingSettings(min_time_s=0.5, min_repeats=3, max_repeats=200, noise_target=0.05,
                      max_time_s=2.0)


# -- the sampling rule -------------------------------------------------------------------------
def test_relative_spread_is_iqr_over_median_and_ignores_one_outlier():
    assert relative_spread([1.0, 1.0, 1.0, 1.0]) == 0.0
    assert relative_spread([]) is None
    steady = [0.010] * 20
    assert relative_spread(steady + [0.5]) == 0.0   # one preempted sample: IQR unmoved
    assert relative_spread([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx(2.0 / 3.0)


def test_sampling_stops_at_the_minimum_when_the_spread_is_met():
    samples = [0.1] * 5
    assert stop_rule(samples[:4], RULE) is None            # 0.4 s: below min_time_s
    assert stop_rule(samples, RULE) == SPREAD_MET          # 0.5 s, spread 0


def test_sampling_goes_on_past_the_minimum_while_the_spread_is_above_target():
    wide = [0.1, 0.2] * 3                                   # 0.9 s, spread ~ 0.67
    assert stop_rule(wide, RULE) is None
    capped = [0.1, 0.2] * 7                                 # 2.1 s of samples: the cap
    assert stop_rule(capped, RULE) == TIME_CAP
    many = [0.001, 0.002] * 100                             # 200 samples, 0.3 s
    assert stop_rule(many, RULE) == MAX_REPEATS


def test_max_repeats_still_bounds_a_fast_call_below_min_time():
    assert stop_rule([0.001] * 200, RULE) == MAX_REPEATS


class ScriptedTimer:
    """Returns the scripted times in turn (no clock is read)."""
    name = "scripted"

    def __init__(self, times):
        self.times = list(times)

    def time(self, work):
        return self.times.pop(0), None


class FakeWork:
    def __init__(self, times):
        self.timer = ScriptedTimer(times)
        self.info = {}

    def setup(self):
        pass

    def next_call(self):   # Workload's: the inputs varied (none here), then setup
        self.setup()


def test_time_workload_records_the_rule_that_ended_sampling():
    settings = dataclasses.replace(RULE, warmup=0)
    work = FakeWork([0.2, 0.2, 0.2, 0.9])
    samples, _ = time_workload(work, settings)
    assert samples == [0.2, 0.2, 0.2] and work.info["stop_rule"] == SPREAD_MET
    noisy = FakeWork([0.1, 0.3] * 10)
    samples, _ = time_workload(noisy, settings)
    assert sum(samples) >= settings.max_time_s and noisy.info["stop_rule"] == TIME_CAP
    assert len(noisy.info["cpu_samples"]) == len(samples)


def test_sweep_flags_set_the_target_and_the_cap_and_refuse_a_cap_below_the_minimum():
    sweep = plan(SweepRequest(impl="hrr_torch", seq_len="64", head_dim="16", device="cpu",
                              noise_target=0.02, max_time=3.0))
    assert sweep.settings.timing.noise_target == 0.02
    assert sweep.settings.timing.max_time_s == 3.0
    assert sweep.settings.as_dict()["timing"]["noise_target"] == 0.02   # run.json's settings
    longer = plan(SweepRequest(impl="hrr_torch", seq_len="64", device="cpu", min_time=5.0))
    assert longer.settings.timing.max_time_s == 5.0   # default cap never below the minimum
    with pytest.raises(UsageError, match="--max-time"):
        plan(SweepRequest(impl="hrr_torch", seq_len="64", device="cpu", min_time=1.0,
                          max_time=0.5))


def test_a_time_cap_the_worker_timeout_would_cut_is_refused():
    # a point still above the target at the cap would be killed as a timeout, its samples
    # lost, instead of ending at the cap with the noisy mark
    with pytest.raises(UsageError, match="--max-time 500 .*--timeout 120"):
        plan(SweepRequest(impl="hrr_torch", seq_len="64", device="cpu", max_time=500.0))
    fits = plan(SweepRequest(impl="hrr_torch", seq_len="64", device="cpu", max_time=500.0,
                             timeout=900.0))
    assert fits.settings.timing.max_time_s == 500.0
    # the default cap with a tiny --timeout (a run that wants timeouts) stays allowed
    assert plan(SweepRequest(impl="hrr_torch", seq_len="64", device="cpu",
                             timeout=1.0)).settings.timeout_s == 1.0


# -- the machine's state from /proc -----------------------------------------------------------
STAT_BEFORE = """cpu  1000 0 500 8000 100 0 0 0 0 0
cpu0 500 0 250 4000 50 0 0 0 0 0
cpu1 500 0 250 4000 50 0 0 0 0 0
intr 1 2 3
ctxt 99
"""
# one second later at 100 ticks/s: cpu0 fully busy, cpu1 busy 80 ticks, idle 10, stolen 10
STAT_AFTER = """cpu  1180 0 500 8010 100 0 0 10 0 0
cpu0 600 0 250 4000 50 0 0 0 0 0
cpu1 580 0 250 4010 50 0 0 10 0 0
intr 1 2 3
"""


def test_proc_stat_ticks_of_the_aggregate_and_of_chosen_cpus():
    assert ms.parse_proc_stat(STAT_BEFORE) == ms.CpuTicks(busy=1500, idle=8100, steal=0)
    assert ms.parse_proc_stat(STAT_AFTER, cpus=[1]) == ms.CpuTicks(busy=830, idle=4060, steal=10)
    assert ms.parse_proc_stat(STAT_AFTER, cpus=[7]).total == 0   # offline: nothing counted
    assert ms.parse_loadavg("0.52 0.90 1.30 1/96 23252\n") == 0.52
    assert ms.parse_loadavg("") is None


def snap(at, own, text, load=0.5):
    return ms.Snapshot(at_s=at, own_cpu_s=own, ticks=ms.parse_proc_stat(text), load_avg_1m=load)


def test_other_processes_cpus_are_busy_time_less_our_own_over_the_window():
    # 1.8 CPU-seconds busy in 1 s, 1.2 of them ours: others took 0.6 CPUs; steal 10/200
    state = ms.window_state(snap(10.0, 3.0, STAT_BEFORE), snap(11.0, 4.2, STAT_AFTER, 1.4),
                            clock_ticks=100, cpus_available=2, cpus_needed=2)
    assert state.other_cpus == pytest.approx(0.6)
    assert state.cpu_steal_fraction == pytest.approx(10 / 200)
    assert state.state_window_s == pytest.approx(1.0) and state.load_avg_1m == 1.4
    assert state.machine_state_note == ""
    # our own time above the tick count (tick rounding): none taken by others, never negative
    mine = ms.window_state(snap(10.0, 3.0, STAT_BEFORE), snap(11.0, 5.0, STAT_AFTER),
                           clock_ticks=100, cpus_available=2, cpus_needed=2)
    assert mine.other_cpus == 0.0


def test_without_proc_the_fields_are_none_with_the_reason(tmp_path):
    before = ms.snapshot(proc=tmp_path / "absent")
    assert before.ticks is None and "stat" in before.note
    state = ms.window_state(before, ms.snapshot(proc=tmp_path / "absent"), clock_ticks=100,
                            cpus_available=2, cpus_needed=2)
    assert state.other_cpus is None and state.cpu_steal_fraction is None
    assert "cannot read" in state.machine_state_note


def test_the_watch_reads_a_proc_folder_around_a_block(tmp_path):
    (tmp_path / "stat").write_text(STAT_BEFORE)
    (tmp_path / "loadavg").write_text("0.25 0.1 0.1 1/1 1\n")
    watch = ms.MachineStateWatch(cpus_needed=2, proc=tmp_path)
    with watch:
        (tmp_path / "stat").write_text(STAT_AFTER)
    state = watch.state()
    assert state.cpus_needed == 2 and state.load_avg_1m == 0.25
    assert state.cpu_steal_fraction is not None and state.other_cpus is not None
    assert set(state.fields()) == {f.name for f in dataclasses.fields(NoiseMetrics)} - {
        "time_rel_spread", "median_uncertainty", "noise_target", "stop_rule", "noisy",
        "noise_reason"}


# -- the noisy mark ---------------------------------------------------------------------------
def test_one_busy_core_beside_a_two_thread_worker_on_two_cpus_is_noisy():
    # a busy loop sharing two cores with two worker threads gets about a third of each
    verdict = noise_verdict(median_uncertainty=0.01, other_cpus=0.67, cpus_available=2,
                            cpus_needed=2, steal_fraction=0.0)
    assert verdict.noisy and "0.67 CPU short" in verdict.reason


def test_a_quiet_machine_is_not_noisy():
    verdict = noise_verdict(median_uncertainty=0.02, other_cpus=0.03, cpus_available=2,
                            cpus_needed=2, steal_fraction=0.002)
    assert not verdict.noisy and verdict.reason == ""


def test_others_on_cpus_the_worker_leaves_free_do_not_count():
    assert cpu_shortfall(1.5, cpus_available=4, cpus_needed=2) == 0.0
    assert not noise_verdict(median_uncertainty=0.01, other_cpus=1.5, cpus_available=4, cpus_needed=2).noisy
    short = CONTENTION_SHARE * 2 + 0.05
    assert noise_verdict(median_uncertainty=0.01, other_cpus=2 + short, cpus_available=4,
                         cpus_needed=2).noisy


def test_spread_steal_and_lockstep_rules():
    assert noise_verdict(median_uncertainty=NOISY_MEDIAN + 0.01).noisy
    assert not noise_verdict(median_uncertainty=None).noisy   # fewer than three samples
    assert "steal" in noise_verdict(median_uncertainty=0.0, steal_fraction=0.2).reason
    # run_bench.py ab's lockstep: the other side's turns are in the window by design
    assert not noise_verdict(median_uncertainty=0.0, other_cpus=1.0, cpus_available=2, cpus_needed=2,
                             judge_others=False).noisy


def test_noise_fields_fill_the_timing_result_and_the_record():
    state = ms.MachineState(load_avg_1m=1.0, cpus_available=2, cpus_needed=2, other_cpus=0.7,
                            cpu_steal_fraction=0.0, state_window_s=0.6)
    fields = noise_fields([0.30, 0.31, 0.32], RULE, state, stop=SPREAD_MET)
    result = TimingResult(time_s=0.31, time_samples_s=[0.30, 0.31, 0.32])
    result.set_conditions(fields)
    assert result.noisy is True and result.stop_rule == SPREAD_MET
    assert result.noise_target == RULE.noise_target and result.time_rel_spread > 0
    ab = noise_fields([0.3] * 3, RULE, state, stop="", lockstep="leader")
    assert ab["stop_rule"] == "lockstep" and ab["noisy"] is False
    assert cpus_needed("cpu", 2) == 2 and cpus_needed("cuda:0", 8) == 1
    assert cpus_needed("cpu", None) is None


def test_a_record_without_the_noise_fields_loads_unjudged():
    old = {"impl": "hrr_torch", "framework": "torch", "family": "hrr", "device": "cpu",
           "batch": 1, "heads": 8, "seq_len": 256, "head_dim": 64, "dtype": "float32",
           "causal": False, "pass": "forward", "status": "ok", "time_s": 0.01}
    record = SpeedRecord.from_json(old)
    assert record.noisy is None and record.stop_rule == "" and record.other_cpus is None
    assert json.loads(json.dumps(record.to_json()))["noisy"] is None


# -- the report -------------------------------------------------------------------------------
@pytest.fixture()
def noisy_run(tmp_path):
    from report_fixtures import make_noisy_run

    return make_noisy_run(tmp_path / "noisy")


def test_tables_mark_noisy_times_and_list_why(noisy_run):
    from harness.report import tables
    from harness.report.data import load
    from report_fixtures import NOISY_POINT, NOISY_REASON

    speed = load([noisy_run]).speed
    times = tables.pivot(speed, "time_s", 1e3)
    impl, t = NOISY_POINT
    row = times[times["impl"] == impl].iloc[0]
    assert str(row[f"T={t}"]).endswith(tables.NOISY_MARK)
    assert not any(str(v).endswith(tables.NOISY_MARK) for v in row.drop(f"T={t}"))
    mem = tables.pivot(speed, "peak_mem_bytes", mark_noisy=False)
    assert not mem.astype(str).apply(lambda c: c.str.endswith(tables.NOISY_MARK)).any().any()
    listed = tables.noisy_points(speed)
    assert list(listed["seq_len"]) == [t] and listed.iloc[0]["noise_reason"] == NOISY_REASON
    merged = tables.ratios(speed, "softmax_torch")
    assert merged[merged["seq_len"] == t]["noisy"].all()
    assert not merged[merged["seq_len"] != t]["noisy"].any()
    # the scaling fit leaves the noisy point out: hrr_torch stays linear
    fit = tables.scaling(speed, {})
    hrr = fit[fit["impl"] == impl].iloc[0]
    assert hrr["time_exponent"] == pytest.approx(1.0, abs=0.01)


def test_findings_do_not_quote_a_noisy_median(noisy_run):
    from harness.report.data import load
    from harness.report.findings import headline
    from report_fixtures import NOISY_POINT

    speed = load([noisy_run]).speed
    lines = headline(speed, "softmax_torch", speed.iloc[0:0])
    impl, t = NOISY_POINT
    compared = [line for line in lines if f"T={t}: {impl}" in line]
    assert compared and all("not compared" in line and "noisy" in line for line in compared)
    assert not any("slower than softmax_torch" in line for line in lines)
    fastest = [line for line in lines if "fastest" in line]
    assert fastest and "softmax_torch" in fastest[0] and "1 noisy" in fastest[0]
    assert any("marked noisy" in line and f"{impl} T={t}" in line for line in lines)


def test_points_csv_and_the_report_carry_the_noise_fields(noisy_run, tmp_path):
    import csv

    from harness.report.render import render_report

    out = render_report([noisy_run], tmp_path / "report")
    with open(out / "tables" / "points.csv") as handle:
        rows = list(csv.DictReader(handle))
    for name in (f.name for f in dataclasses.fields(NoiseMetrics)):
        assert name in rows[0]
    assert sum(r["noisy"] == "True" for r in rows) == 1
    text = (out / "report.md").read_text()
    assert "(noisy)" in text and "marked noisy" in text


def test_a_wide_spread_fixed_by_many_samples_is_not_noisy_a_few_wide_samples_are():
    # calls that genuinely vary by 30% on a quiet machine: 200 samples fix the median to ~3%
    wide = [1.0, 1.3] * 100
    spread = stats.relative_spread(wide)
    assert spread == pytest.approx(0.3 / 1.15, rel=1e-6)
    assert stats.median_uncertainty(wide) == pytest.approx(
        stats.MEDIAN_NOTCH * spread / math.sqrt(200))
    assert not noise_verdict(median_uncertainty=stats.median_uncertainty(wide)).noisy
    # the same spread over four samples leaves the median uncertain by ~20%
    assert noise_verdict(median_uncertainty=stats.median_uncertainty(wide[:4])).noisy
    assert stats.median_uncertainty([1.0, 1.1]) is None   # too few to say
