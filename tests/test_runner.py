"""The runner with real worker processes: records, failures as data, resume, memory scaling."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_cli

from harness.grid.settings import TimingSettings
from harness.contract.records import STATUSES, Point, SpeedRecord
from harness.measure.runner import Runner
from harness.grid.settings import RunSettings
from harness.store.run_dir import RunDir, load_results

ROOT = Path(__file__).resolve().parent.parent
FAST = TimingSettings(warmup=1, min_time_s=0.05, min_repeats=3, max_repeats=5)
TEST_MODULES = ("impls_for_tests",)


def make_runner(tmp_path, **settings) -> Runner:
    run_dir = RunDir.create(tmp_path / "run", {"kind": "speed", "machine": {}})
    values = dict(timeout_s=60, timing=FAST, impl_modules=TEST_MODULES)
    values.update(settings)
    return Runner(run_dir, RunSettings(**values), hardware_id="test-hw")


def points(impl, seq_lens, **kw):
    kw = {"head_dim": 16, "heads": 2, **kw}
    return [Point(impl=impl, seq_len=t, **kw) for t in seq_lens]


def by_t(records):
    return {r.seq_len: r for r in records}


def test_ok_records_have_the_schema(tmp_path):
    runner = make_runner(tmp_path)
    grid = points("softmax_torch", [64, 128], pass_="forward") + \
        points("hrr_torch", [64], pass_="forward_backward") + \
        points("performer_torch", [64], pass_="backward")
    summary = runner.run(grid)
    assert [r.status for r in summary.records] == ["ok"] * 4, [r.message for r in summary.records]
    lines = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 4
    for line in lines:
        data = json.loads(line)
        for key in ("impl", "framework", "device", "batch", "heads", "seq_len", "head_dim",
                    "dtype", "causal", "pass", "status", "message", "time_s", "time_samples_s",
                    "peak_mem_bytes", "schema_version", "point_id", "hardware_id"):
            assert key in data, key
        assert data["status"] in STATUSES
        samples = data["time_samples_s"]
        assert len(samples) >= 3 and data["time_s"] == pytest.approx(float(np.median(samples)))
        assert data["time_min_s"] == min(samples) and data["time_iqr_s"] >= 0
        assert data["peak_mem_bytes"] is not None and data["peak_mem_bytes"] >= 0
        assert data["tokens_per_s"] == pytest.approx(data["seq_len"] * data["batch"] /
                                                     data["time_s"])
        assert data["threads"] >= 1 and data["timer"] == "perf_counter"
    records = [SpeedRecord.from_json(json.loads(line)) for line in lines]
    softmax = [r for r in records if r.impl == "softmax_torch"][0]
    assert softmax.tflops == pytest.approx(4 * 2 * 64 * 64 * 16 / softmax.time_s / 1e12)
    assert softmax.gate_max_error is not None and softmax.gate_max_error < 1e-5
    hrr = [r for r in records if r.impl == "hrr_torch"][0]
    assert hrr.tflops is None and "not computed" in hrr.flop_model
    performer = [r for r in records if r.impl == "performer_torch"][0]
    assert performer.pass_ == "backward"


def test_fidelity_is_recorded_for_approximate_methods(tmp_path):
    summary = make_runner(tmp_path).run(points("performer_torch", [64]) +
                                        points("sdpa_math", [64]))
    performer, sdpa = sorted(summary.records, key=lambda r: r.impl)
    assert performer.deviation_from_softmax is not None and 0 < performer.deviation_from_softmax
    assert sdpa.deviation_from_softmax is None  # exact: checked by the gate instead


def test_oom_is_data_and_larger_seq_lens_are_skipped(tmp_path):
    # 200 MB cap: T=4096 with 8 heads needs a 512 MB score matrix and really fails to allocate
    runner = make_runner(tmp_path, max_memory_bytes=200 * 10 ** 6)
    summary = runner.run(points("softmax_torch", [256, 4096, 8192], heads=8, head_dim=32))
    result = by_t(summary.records)
    assert result[256].status == "ok"
    assert result[4096].status == "oom", result[4096].message
    assert result[8192].status == "skipped" and "4096" in result[8192].message


def test_nan_output_is_a_failure(tmp_path):
    summary = make_runner(tmp_path).run(points("test_nan", [64, 128]))
    result = by_t(summary.records)
    assert result[64].status == "ok"
    assert result[128].status == "error" and "non-finite" in result[128].message


def test_exception_is_an_error_and_gate_stops_wrong_numbers(tmp_path):
    summary = make_runner(tmp_path).run(points("test_raises", [128]) +
                                        points("test_wrong", [128]))
    result = {r.impl: r for r in summary.records}
    assert result["test_raises"].status == "error"
    assert "boom at long T" in result["test_raises"].message
    assert result["test_wrong"].status == "error"
    assert "correctness gate" in result["test_wrong"].message
    assert result["test_wrong"].time_s is None  # never timed


def test_unsupported_points_are_records_with_reasons(tmp_path):
    summary = make_runner(tmp_path).run(points("hrr_torch", [64], causal=True) +
                                        points("xformers", [64]))
    assert [r.status for r in summary.records] == ["unsupported", "unsupported"]
    assert all(r.message for r in summary.records)


def test_resume_skips_recorded_points(tmp_path):
    runner = make_runner(tmp_path)
    first = runner.run(points("softmax_torch", [64]))
    assert len(first.records) == 1
    again = Runner(RunDir.create(tmp_path / "run", {"kind": "speed"}, resume=True),
                   runner.settings).run(points("softmax_torch", [64, 128]), resume=True)
    assert again.resumed_skips == 1
    assert [r.seq_len for r in again.records] == [128]
    frame = load_results(tmp_path / "run")
    assert sorted(frame["seq_len"]) == [64, 128]
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["resumed"]


@pytest.mark.slow
def test_memory_scales_as_t_squared_for_softmax_and_t_for_hrr(tmp_path):
    runner = make_runner(tmp_path, timing=TimingSettings(warmup=0, min_time_s=0, min_repeats=1,
                                                         max_repeats=1))
    grid = points("softmax_torch", [512, 1024, 2048], heads=4, head_dim=64) + \
        points("hrr_torch", [4096, 8192, 16384], heads=4, head_dim=64)
    summary = runner.run(grid)
    slopes = {}
    for impl in ("softmax_torch", "hrr_torch"):
        rows = sorted((r.seq_len, r.peak_mem_bytes) for r in summary.records if r.impl == impl)
        assert all(r[1] and r[1] > 0 for r in rows), rows
        slopes[impl] = np.polyfit([math.log(t) for t, _ in rows],
                                  [math.log(m) for _, m in rows], 1)[0]
    assert 1.7 < slopes["softmax_torch"] < 2.3, slopes
    assert 0.7 < slopes["hrr_torch"] < 1.3, slopes


def test_time_budget_cuts_the_largest_t_and_leaves_it_for_resume(tmp_path, monkeypatch):
    """The budget's clock is faked: each point measured costs 100 s. A 350 s budget over
    two implementations: each gets half, smallest T first, each implementation's points in one
    go (no worker started twice); what is left stays unrecorded and --resume measures it."""
    import time
    from types import SimpleNamespace

    from harness.measure import runner as runner_module

    grid = points("softmax_torch", [32, 64, 128]) + points("hrr_torch", [32, 64, 128])
    # a budget of ~0 s: nothing is started, nothing is recorded, all is left for --resume
    nothing = make_runner(tmp_path / "a", time_budget_s=1e-9).run(grid)
    assert len(nothing.records) == 0 and nothing.not_tried == 6
    clock = [0.0]
    monkeypatch.setattr(runner_module, "time", SimpleNamespace(
        monotonic=lambda: clock[0], perf_counter=time.perf_counter, sleep=time.sleep))
    started = []

    def listener(event, payload):
        if event == "point":
            started.append((payload.impl, payload.seq_len))
        elif event == "record":      # the point's measurement "took" 100 s
            clock[0] += 100.0

    # (a task's timeout is cut to the budget left: at least 50 s here, in real seconds)
    runner = make_runner(tmp_path / "b", time_budget_s=350.0)
    runner.listener = listener
    partial = runner.run(grid)
    measured = [(r.impl, r.seq_len) for r in partial.records]
    assert measured == started
    assert sorted(measured) == [("hrr_torch", 32), ("hrr_torch", 64),
                                ("softmax_torch", 32), ("softmax_torch", 64)]
    assert [i for i, _ in measured] in (["hrr_torch"] * 2 + ["softmax_torch"] * 2,
                                        ["softmax_torch"] * 2 + ["hrr_torch"] * 2)
    assert partial.not_tried == 2
    assert partial.overhead.workers_started <= 4     # memory + timing worker per method
    monkeypatch.undo()
    settings = RunSettings(timeout_s=60, timing=FAST, impl_modules=TEST_MODULES)
    resumed = Runner(RunDir.create(tmp_path / "b" / "run", {}, resume=True),
                     settings).run(grid, resume=True)
    assert resumed.resumed_skips == 4 and resumed.not_tried == 0
    assert len(load_results(tmp_path / "b" / "run")) == 6


def test_time_a_budget_leaves_at_the_end_goes_to_the_points_a_share_left(tmp_path, monkeypatch):
    """hrr_torch's points "take" 100 s, softmax_torch's 10 s, budget 300 s: hrr_torch's share
    (150 s) leaves its T=128 behind; softmax_torch's three points leave 70 s, and a second
    pass spends them on hrr_torch's T=128."""
    import time
    from types import SimpleNamespace

    from harness.measure import runner as runner_module

    grid = points("hrr_torch", [32, 64, 128]) + points("softmax_torch", [32, 64, 128])
    clock = [0.0]
    monkeypatch.setattr(runner_module, "time", SimpleNamespace(
        monotonic=lambda: clock[0], perf_counter=time.perf_counter, sleep=time.sleep))
    cost = {"hrr_torch": 100.0, "softmax_torch": 10.0}

    def listener(event, payload):
        if event == "record":
            clock[0] += cost[payload.impl]

    runner = make_runner(tmp_path, time_budget_s=300.0)
    runner.listener = listener
    summary = runner.run(grid)
    assert [(r.impl, r.seq_len) for r in summary.records] == [
        ("hrr_torch", 32), ("hrr_torch", 64), ("softmax_torch", 32), ("softmax_torch", 64),
        ("softmax_torch", 128), ("hrr_torch", 128)]
    assert summary.not_tried == 0


def test_budget_shares_pass_unused_time_on():
    """A worker that finishes early leaves its time to the next; the deadline stops all."""
    from harness.measure.budget import BudgetShares, budget_order

    clock = [0.0]
    shares = BudgetShares(9.0, ["a", "b", "c"], clock=lambda: clock[0])
    assert shares.allows("a")          # a's share: 3 s
    clock[0] = 1.0                     # a is done after 1 s
    assert shares.allows("b")          # b's share: (9 - 1) / 2 = 4 s, until 5
    clock[0] = 4.9
    assert shares.allows("b")
    clock[0] = 5.0
    assert not shares.allows("b") and not shares.spent()
    assert shares.allows("c")          # c: the 4 s left
    clock[0] = 9.0
    assert not shares.allows("c") and shares.spent() and shares.left_s() == 0
    grid = points("m", [128, 32]) + points("n", [64, 32]) + points("m", [64], causal=True)
    order = budget_order(grid, lambda p: p.impl)
    assert [(p.impl, p.seq_len) for p in order] == [("m", 32), ("m", 64), ("m", 128),
                                                     ("n", 32), ("n", 64)]


@pytest.mark.parametrize("args, expected", [
    (["sweep", "--impl", "nope"], "unknown implementation 'nope'"),
    (["sweep", "--preset", "huge"], "unknown preset 'huge'"),
    (["sweep", "--seq-len", "0"], "sizes must be positive"),
    (["sweep", "--head-dim", ""], "empty list"),
    (["sweep", "--dtype", "int8"], "unknown dtype"),
    (["sweep", "--impl", "flash_attn", "--dtype", "float32", "--device", "cpu"],
     "no selected implementation supports it"),
    (["sweep", "--config", "/nonexistent.toml"], "not found"),
    (["sweep", "--resume", "/nonexistent-run"], "does not exist"),
    (["sweep", "--max-memory", "lots"], "max-memory"),
    (["frobnicate"], "unknown command 'frobnicate'"),
    pytest.param(["sweep", "--device", "cuda"], "torch.cuda.is_available() is False",
                 marks=pytest.mark.skipif(__import__("torch").cuda.is_available(),
                                          reason="a CUDA device is present")),
])
def test_bad_input_exits_2_with_one_line(args, expected, tmp_path):
    result = run_cli(*args, "--out", str(tmp_path / "out")) if args[0] == "sweep" else \
        run_cli(*args)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_dry_run_lists_points_and_reasons():
    result = run_cli("sweep", "--dry-run", "--seq-len", "1K,2K", "--impl",
                     "softmax_torch,hrr_torch,xformers", "--causal", "both")
    assert result.returncode == 0, result.stderr
    assert "hrr_torch" in result.stdout and "no causal mode" in result.stdout
    assert "xformers" in result.stdout and "skip" in result.stdout


def test_cli_sweep_writes_run_dir_and_resumes(tmp_path):
    out = tmp_path / "run"
    args = ["sweep", "--impl", "softmax_torch,hrr_jax", "--seq-len", "64", "--head-dim", "16",
            "--heads", "2", "--pass", "fwd", "--min-time", "0.02", "--reuse-peaks", "--out",
            str(out)]   # --reuse-peaks: measured once (nothing cached yet), read back on --resume
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    meta = json.loads((out / "run.json").read_text())
    for key in ("schema_version", "command", "machine", "settings", "started_at", "finished_at"):
        assert key in meta
    for key in ("cpu_model", "ram_bytes", "packages", "git", "hardware_id", "python"):
        assert key in meta["machine"]
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["impl"] for r in records} == {"softmax_torch", "hrr_jax"}
    jax_record = [r for r in records if r["impl"] == "hrr_jax"][0]
    assert jax_record["status"] == "ok" and jax_record["compile_time_s"] is not None
    again = run_cli("sweep", "--resume", str(out))  # the stored grid is reused
    assert again.returncode == 0, again.stderr
    assert "resuming: 2 point(s) already recorded" in again.stdout
    assert len((out / "results.jsonl").read_text().splitlines()) == len(records)
    exists = run_cli(*args)
    assert exists.returncode == 2 and "already exists" in exists.stderr


def test_oom_classification_covers_cuda_jax_and_cpu_messages():
    from harness.measure.worker import classify

    cases = {
        "CUDA out of memory. Tried to allocate 2.00 GiB": "oom",
        "[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't allocate memory": "oom",
        "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 4294967296 bytes": "oom",
        "shape mismatch": "error",
    }
    for message, expected in cases.items():
        assert classify(RuntimeError(message), "torch")[0] == expected, message
    assert classify(RuntimeError(list(cases)[2]), "jax")[0] == "oom"
    assert classify(MemoryError(), "torch")[0] == "oom"


def test_worker_killed_by_the_kernel_is_recorded_as_oom(monkeypatch):
    """oom only when the kernel's oom_kill counter rose during the task (tests/test_faults.py
    has the rule's other cases)."""
    import signal as sig

    from harness.measure import processes as executor
    from harness.measure.processes import LocalExecutor

    class Dead:
        exitcode = -sig.SIGKILL

    monkeypatch.setattr(executor, "oom_kill_count", lambda: 1)
    outcome = LocalExecutor._death(Dead(), 0.0, 0)
    assert outcome.status == "oom" and "out-of-memory killer" in outcome.message
    assert LocalExecutor._death(Dead(), 0.0, 1).status == "error"
    Dead.exitcode = -sig.SIGSEGV
    assert LocalExecutor._death(Dead(), 0.0, 0).message == "worker died with SIGSEGV"


def test_default_command_runs_and_renders_its_report(tmp_path):
    """`run_bench.py` with no command: the run, its summary, then its report."""
    result = run_cli("--impl", "softmax_torch,hrr_torch", "--seq-len", "64,128", "--head-dim",
                     "16", "--heads", "2", "--pass", "fwd", "--min-time", "0.02", "--out",
                     str(tmp_path / "run"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "median time" in result.stdout and "report: reports/run" in result.stdout
    report = tmp_path / "reports" / "run"
    assert (report / "report.md").exists() and (report / "report.html").exists()
    assert (report / "figures" / "time_vs_seq_len.png").exists()
