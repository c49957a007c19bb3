"""The run cost model (harness.grid.cost) and --dry-run's predictions (harness.grid.forecast):
composition properties, calibration from a run directory, a prediction for every preset and
device kind. Pure: nothing is timed, no worker is started."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from harness.contract.records import SCHEMA_VERSION, Point
from harness.grid import presets
from harness.grid.cost import (
    DEFAULTS,
    CostConstants,
    Method,
    calibrate,
    expected_work,
    run_cost,
)
from harness.grid.forecast import predict_presets
from harness.grid.settings import TimingSettings

PLAIN = Method("plain", "exact")
COMPILED = Method("compiled", "exact", compiles=True)
METHODS = {m.name: m for m in (PLAIN, COMPILED)}
# round numbers, and no per-call or per-run extras, so that differences are exact
CONSTANTS = CostConstants(kind="cpu", source="test", worker_start_s=2.0, probe_s=0.5,
                          point_s=0.25, call_overhead_s=0.0, rate_flops={"float32": 1e9},
                          compile_s={"torch.compile": 7.0, "jax": 1.0},
                          first_compile_s={"torch.compile": 11.0, "jax": 3.0}, run_s=0.0)


def cost(points, isolate="worker", constants=CONSTANTS, **kwargs):
    return run_cost(points, METHODS.__getitem__, lambda _device: constants, isolate=isolate,
                    **kwargs)


def series(impl="plain", seq_lens=(64, 128, 256), **axes):
    return [Point(impl, seq_len=t, head_dim=16, heads=2, **axes) for t in seq_lens]


def test_more_points_cost_more_time():
    few = series(seq_lens=(64, 128))
    more = few + series(seq_lens=(256,)) + series(seq_lens=(64,), pass_="forward_backward")
    for isolate in ("worker", "point"):
        assert cost(more, isolate).total_s > cost(few, isolate).total_s
        assert cost(few, isolate).total_s > cost([], isolate).total_s


def test_the_total_is_the_sum_of_its_parts():
    points = series() + series("compiled")
    for isolate in ("worker", "point"):
        c = cost(points, isolate, cooldown_s=0.5)
        assert c.total_s == pytest.approx(c.calls_s + c.compile_s + c.worker_start_s +
                                          c.fixed_s + c.probe_s + c.cooldown_s + c.run_s)
        assert sum(c.series_s.values()) < c.total_s
        assert c.cooldown_s == 0.5          # one change of implementation


def test_point_isolation_costs_about_two_starts_per_point_more():
    # calls of a second or more: no warm-up in either mode, so the calls are the same
    slow = replace(CONSTANTS, point_s=0.0, rate_flops={"float32": 1e3})
    points = series() + series(seq_lens=(64, 128), causal=True)
    worker = cost(points, "worker", slow, timeout_s=1e9)
    point = cost(points, "point", slow, timeout_s=1e9)
    assert point.calls_s == pytest.approx(worker.calls_s)
    workers = len({(p.impl, p.device, p.dtype) for p in points})
    # point: one probe worker + two per point; worker: one per (impl, device, dtype)
    assert point.total_s - worker.total_s == pytest.approx(
        (1 + 2 * len(points) - workers) * slow.worker_start_s)
    assert point.workers == 1 + 2 * len(points) and worker.workers == workers


def test_compile_counted_once_per_distinct_compiled_shape_in_a_worker():
    points = series("compiled") + series("compiled", pass_="forward_backward")
    shapes = len(points)
    worker = cost(points + points[:2], "worker")        # the same shapes again: no compile
    assert worker.compiled_shapes == shapes
    assert worker.compile_s == pytest.approx(shapes * 7.0)
    point = cost(points, "point")        # both fresh processes of a point compile, first time
    assert point.compile_s == pytest.approx(2 * shapes * 11.0)
    assert cost(series(), "worker").compile_s == 0.0    # a method that does not compile
    jax = run_cost(series("j"), lambda name: Method(name, framework="jax"),
                   lambda _device: CONSTANTS)
    assert jax.compile_s == pytest.approx(3 * 1.0)      # JAX compiles each shape too


def test_probe_per_combination_and_the_first_compilation_per_worker():
    points = series("compiled") + series("compiled", causal=True) + series()
    c = cost(points)
    assert c.probes == 3
    assert c.probe_s == pytest.approx(3 * 0.5 + 11.0)   # one worker for both "compiled" probes


def test_out_of_memory_and_timeouts_skip_the_larger_lengths():
    scores = Method("scores", scores=True)
    small = replace(CONSTANTS, memory_bytes=2 * 2 * 128 * 128 * 4)   # T=128 fits, 256 does not
    points = series("scores", seq_lens=(64, 128, 256, 512, 1024))
    c = run_cost(points, lambda _name: scores, lambda _device: small)
    assert (c.failures, c.skipped) == (1, 2)
    slow = replace(CONSTANTS, rate_flops={"float32": 1.0})          # every call far too long
    c = cost(series(), constants=slow, timeout_s=10.0)
    assert (c.failures, c.skipped) == (1, 2)
    assert c.total_s < 10.0 * 2 + 10                                # the timeout, not the calls


def fake_run(tmp_path, truth: CostConstants, timing: TimingSettings) -> tuple:
    """A worker-isolated run dir whose records and overhead follow ``truth`` exactly."""
    impls = {"softmax_torch": Method("softmax_torch", "exact"),
             "flex_attention": Method("flex_attention", "exact", compiles=True)}
    records, in_points, samples_total = [], 0.0, 0.0
    for impl, method in impls.items():
        for t in (256, 512):
            point = Point(impl, seq_len=t, head_dim=32, heads=2)
            median = expected_work(point, method.family) / truth.rate(impl, "float32")
            samples = [median] * 5
            compile_s = truth.compile_time(method)
            first = median + compile_s
            warm = 1
            wall = truth.point_s + first + sum(samples) + (2 + warm) * median
            records.append({
                "kind": "speed", "schema_version": SCHEMA_VERSION, "impl": impl,
                "device": "cpu", "batch": 1, "heads": 2, "seq_len": t, "head_dim": 32,
                "dtype": "float32", "causal": False, "pass": "forward", "status": "ok",
                "time_s": median, "time_samples_s": samples, "warmup": warm,
                "compile_time_s": compile_s if method.compiles else None,
                "isolation": "worker", "wall_s": wall, "extra": {"first_call_s": first}})
            in_points += wall
            samples_total += sum(samples)
    workers = len(impls)
    probes = len(impls) * truth.probe_s + truth.compile_time(impls["flex_attention"],
                                                             first=True)
    parent = truth.run_s
    overhead = {"wall_s": parent + workers * truth.worker_start_s + in_points + probes,
                "samples_s": samples_total, "worker_start_s": workers * truth.worker_start_s,
                "parent_s": parent, "tasks": len(records) + workers,
                "workers_started": workers, "isolation": "worker"}
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({
        "schema_version": SCHEMA_VERSION, "overhead": overhead,
        "settings": {"cooldown_s": 0.0}}))
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run, impls


def test_calibration_from_a_run_dir_reproduces_its_constants(tmp_path):
    truth = replace(CONSTANTS, worker_start_s=0.125, probe_s=0.75, point_s=0.375, run_s=3.0,
                    call_overhead_s=0.0, compile_s={"torch.compile": 12.0, "jax": 1.0},
                    first_compile_s={"torch.compile": 40.0, "jax": 3.0},
                    impl_rate_flops={"softmax_torch/float32": 4e9,
                                     "flex_attention/float32": 2e9})
    run, impls = fake_run(tmp_path, truth, TimingSettings())
    from harness.measure.progress import cost_constants
    from harness.store.run_dir import open_run

    meta = json.loads((run / "run.json").read_text())
    records = list(open_run(run).raw_records())
    base = replace(CONSTANTS, call_overhead_s=0.0, probe_s=99.0, point_s=99.0,
                   worker_start_s=99.0, run_s=99.0, first_compile_s=truth.first_compile_s)
    got = calibrate(meta["overhead"], records, impls.__getitem__, base, meta["settings"])
    assert got.measured and got.kind == "cpu"
    for name in ("worker_start_s", "probe_s", "point_s", "run_s"):
        assert getattr(got, name) == pytest.approx(getattr(truth, name)), name
    assert got.compile_s["flex_attention"] == pytest.approx(12.0)
    assert got.rate("softmax_torch", "float32") == pytest.approx(4e9)
    assert got.rate("flex_attention", "float32") == pytest.approx(2e9)
    # the dry run's reader: the run's device kind calibrated, the other kinds' defaults kept
    constants = cost_constants(str(run))
    assert constants["cpu"].measured and str(run) in constants["cpu"].source
    assert constants["cuda"] == DEFAULTS["cuda"]


def test_calibration_without_measurements_keeps_the_base():
    assert calibrate(None, [], METHODS.__getitem__, CONSTANTS) is CONSTANTS


def test_every_preset_has_a_prediction_on_every_device_kind():
    found = predict_presets(DEFAULTS, here={"cpu"})
    assert {(p.preset, p.kind) for p in found} == {(name, kind) for name in presets.PRESETS
                                                  for kind in DEFAULTS}
    for p in found:
        assert p.points > 0, (p.preset, p.kind)
        assert p.cost["worker"].total_s > 0 and p.cost["point"].total_s > 0
        if not p.cost["worker"].failures:   # timeouts are per task: 1 task a point, or 2
            assert p.cost["point"].total_s > p.cost["worker"].total_s, (p.preset, p.kind)
    assert not DEFAULTS["cuda"].measured          # the CUDA figures are a model


def test_quick_cuda_preset_is_predicted_within_five_minutes_on_an_h100():
    (quick,) = predict_presets({"cuda": DEFAULTS["cuda"]}, here={"cpu"}, names=["quick"])
    assert quick.cost["worker"].total_s <= 300
    passes = {g["pass_"] for g in presets.PRESETS["quick"]["cuda"]}
    assert {"forward", "forward_backward"} <= {p for group in passes for p in group}


def test_dry_run_prints_the_prediction_of_every_preset_and_device(capsys):
    from harness import cli

    assert cli.main(["sweep", "--impl", "softmax_torch", "--seq-len", "64", "--head-dim", "16",
                     "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "predicted:" in out and "worker isolation" in out and "point isolation" in out
    assert "a model, not a measurement" in out
    for name in presets.PRESETS:
        assert name in out, name
    for column in ("cpu worker", "cpu point", "cuda worker", "cuda point"):
        assert column in out, column


@pytest.mark.parametrize("axes", [dict(), dict(causal=True), dict(q_len=64, seq_len=256),
                                  dict(pass_="forward_backward", causal=True)])
def test_expected_work_of_exact_attention_is_the_flop_count(axes):
    from harness.metrics.flops import attention_flops

    point = Point("softmax_torch", **{"seq_len": 128, "head_dim": 16, "heads": 2, **axes})
    assert expected_work(point, "exact") == pytest.approx(attention_flops(point))


def test_costs_from_needs_dry_run(tmp_path, capsys):
    from harness import cli

    assert cli.main(["sweep", "--impl", "softmax_torch", "--costs-from", str(tmp_path),
                     "--out", str(tmp_path / "out")]) == 2
    assert "--dry-run" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_dry_run_plans_a_device_this_machine_lacks(capsys, monkeypatch):
    """`sweep --dry-run --device cuda` on a machine without CUDA shows the CUDA plan by the
    methods' capabilities and its predicted time; the same flags without --dry-run are
    refused with the reason."""
    from harness import cli
    from harness.contract.frameworks import torch_fw
    from harness.contract.registry import Availability

    monkeypatch.setattr(torch_fw, "device_present", lambda device: Availability(
        device.startswith("cpu"), "torch.cuda.is_available() is False (faked)"))
    assert cli.main(["sweep", "--preset", "paper", "--device", "cuda", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "cuda: not present here" in out
    assert "predicted:" in out and "would run" in out
    runs = int(out.split(" point(s) would run")[0].split()[-1])
    assert runs > 0
    assert cli.main(["sweep", "--preset", "paper", "--device", "cuda", "--out",
                     "/nonexistent/never-made"]) == 2
    assert "torch.cuda.is_available() is False (faked)" in capsys.readouterr().err


def test_dry_run_of_a_resume_leaves_out_the_points_already_recorded(tmp_path, capsys):
    """`sweep --dry-run --resume DIR` shows what the resumed run would measure: the points
    DIR already holds are counted apart and neither listed to run nor predicted."""
    import shutil
    from pathlib import Path

    from harness import cli
    from harness.store.run_dir import open_run

    run = tmp_path / "run"
    shutil.copytree(Path(__file__).parent / "fixtures" / "old_run_speed", run)
    done = open_run(run).done_point_ids()
    assert done
    assert cli.main(["sweep", "--resume", str(run), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"{len(done)} point(s) already recorded" in out
    assert "0 point(s) would run" in out


def test_a_busy_machine_adds_at_most_the_samples_up_to_the_time_cap():
    """The total assumes a quiet machine (the spread target met at the minimum); the bound
    beside it is each point sampled on to --max-time, within --max-repeats."""
    points = series(seq_lens=(256,))   # about 8 ms a call at these constants
    timing = TimingSettings(min_time_s=0.5, max_time_s=2.0, max_repeats=10_000)
    c = cost(points, timing=timing)
    assert c.busy_extra_s == pytest.approx(2.0 - c.samples_s, rel=0.05) and c.busy_extra_s > 1
    assert cost(points, timing=replace(timing, max_time_s=0.5)).busy_extra_s == 0.0
    # a fast call already sampled max_repeats times has no more to take
    capped = cost(series(seq_lens=(64,)), timing=replace(timing, max_repeats=3))
    assert capped.busy_extra_s == 0.0
