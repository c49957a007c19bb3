"""Fault injection: every fault ends with each measured point recorded exactly once and every
line of every results file valid JSON (docs/methodology.md, "What survives what")."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import run_cli

from harness.errors import UsageError
from harness.measure.processes import classify_death
from harness.grid.settings import TimingSettings
from harness.contract.records import AccuracyRecord, Point, SpeedRecord
from harness.measure.runner import Runner
from harness.grid.settings import RunSettings
from harness.store.run_dir import LOCK_FILE, RunDir, RunLockedError, repair_torn_tail

FAST = TimingSettings(warmup=1, min_time_s=0.02, min_repeats=3, max_repeats=5)
MODULES = ("impls_faults",)


def runner_for(path: Path, *, resume: bool = False, **settings) -> Runner:
    run = RunDir.create(path, {"kind": "speed", "machine": {}}, resume=resume)
    values = {"timeout_s": 60, "timing": FAST, "impl_modules": MODULES, **settings}
    return Runner(run, RunSettings(**values), hardware_id="test-hw")


def points(impl: str, seq_lens, **kw) -> list[Point]:
    kw = {"head_dim": 16, "heads": 2, **kw}
    return [Point(impl=impl, seq_len=t, **kw) for t in seq_lens]


def lines_of(run: Path) -> list[dict]:
    """Every line of results.jsonl, each of which must be valid JSON (no NaN, no torn line)."""
    text = (run / "results.jsonl").read_text()
    assert text == "" or text.endswith("\n"), "torn last line"
    return [json.loads(line, parse_constant=_refuse) for line in text.splitlines()]


def _refuse(name: str):
    raise AssertionError(f"{name} in a results file")


def assert_once(run: Path, expected: list[Point]) -> list[dict]:
    records = lines_of(run)
    ids = [r["point_id"] for r in records]
    assert sorted(ids) == sorted(p.point_id for p in expected), records
    return records


# -- torn last line + resume --------------------------------------------------------------------
def test_repair_cuts_a_torn_tail_and_keeps_its_bytes(tmp_path, capsys):
    path = tmp_path / "results.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": 2}\n{"impl": "x", "seq_')
    assert repair_torn_tail(path) == len(b'{"impl": "x", "seq_')
    assert path.read_bytes() == b'{"a": 1}\n{"b": 2}\n'
    assert (tmp_path / "results.jsonl.torn").read_bytes() == b'{"impl": "x", "seq_\n'
    assert "torn" in capsys.readouterr().err
    assert repair_torn_tail(path) == 0                      # a whole file is left alone
    path.write_bytes(b'no newline at all')
    repair_torn_tail(path)
    assert path.read_bytes() == b""


def test_resume_after_a_torn_last_line_keeps_the_new_point(tmp_path):
    run = tmp_path / "run"
    first = runner_for(run).run(points("softmax_torch", [64]))
    assert [r.status for r in first.records] == ["ok"]
    with open(run / "results.jsonl", "ab") as handle:       # a crash while writing a record
        handle.write(b'{"schema_version": 1, "impl": "softmax_torch", "seq_len": 12')
    again = runner_for(run, resume=True).run(points("softmax_torch", [64, 128]), resume=True)
    assert again.resumed_skips == 1 and [r.seq_len for r in again.records] == [128]
    records = assert_once(run, points("softmax_torch", [64, 128]))
    assert {r["status"] for r in records} == {"ok"}
    assert b'"seq_len": 12' in (run / "results.jsonl.torn").read_bytes()


def test_a_whole_last_record_without_its_newline_is_kept(tmp_path, capsys):
    path = tmp_path / "results.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": 2}')
    assert repair_torn_tail(path) == 0
    assert path.read_bytes() == b'{"a": 1}\n{"b": 2}\n'
    assert not (tmp_path / "results.jsonl.torn").exists()
    path.write_bytes(b'{"a": 1}\n[1, 2]')                   # valid JSON but not a record
    assert repair_torn_tail(path) == len(b"[1, 2]")
    assert path.read_bytes() == b'{"a": 1}\n'


def test_resume_keeps_a_whole_last_record_that_lacks_its_newline(tmp_path):
    run = tmp_path / "run"
    runner_for(run).run(points("softmax_torch", [64]))
    path = run / "results.jsonl"
    path.write_bytes(path.read_bytes().rstrip(b"\n"))      # a whole record, no newline
    again = runner_for(run, resume=True).run(points("softmax_torch", [64, 128]), resume=True)
    assert again.resumed_skips == 1 and [r.seq_len for r in again.records] == [128]
    assert_once(run, points("softmax_torch", [64, 128]))
    assert not (run / "results.jsonl.torn").exists()


def tiny_sweep(run: Path) -> None:
    """One softmax_torch point measured by the command line into ``run``."""
    made = run_cli("sweep", "--impl", "softmax_torch", "--seq-len", "16", "--head-dim", "16",
                   "--heads", "1", "--batch", "1", "--min-time", "0.01", "--out", str(run),
                   "--no-report")
    assert made.returncode == 0, made.stderr


def test_a_corrupt_line_on_resume_is_one_warning_line_once(tmp_path):
    run = tmp_path / "run"
    tiny_sweep(run)
    path = run / "results.jsonl"
    path.write_bytes(b'{"broken\n' + path.read_bytes())
    result = run_cli("sweep", "--resume", str(run), "--no-report")
    assert result.returncode == 0, result.stderr
    about = [line for line in result.stderr.splitlines() if "line 1" in line]
    assert about == [f"warning: {path}: line 1 is truncated or corrupt; skipped"], result.stderr
    assert "Warning:" not in result.stderr and "raw_records" not in result.stderr


@pytest.mark.parametrize("change, words", [
    ({"status": "exploded"}, "status 'exploded'"), ({"status": None}, "status None"),
    ({"seq_len": "64"}, "seq_len = '64'"), ({"seq_len": 6.5}, "seq_len = 6.5"),
    ({"time_s": "fast"}, "time_s = 'fast'")])
def test_hand_edited_records_are_refused_by_merge_and_report_in_one_line(tmp_path, change,
                                                                          words):
    run = RunDir.create(tmp_path / "run", {"kind": "speed", "machine": {}})
    point = Point("softmax_torch", seq_len=16, head_dim=8)
    record = SpeedRecord.for_point(point, framework="torch", family="exact", status="ok",
                                   time_s=1e-3, time_samples_s=[1e-3] * 3).to_json()
    run.append_raw({**record, **change})
    run.release()
    for argv in (("merge", str(run.path), "--out", str(tmp_path / "merged")),
                 ("report", str(run.path), "--out", str(tmp_path / "report"))):
        done = run_cli(*argv)
        assert done.returncode == 2, (argv, done.stderr)
        err = done.stderr.strip().splitlines()
        assert len(err) == 1 and words in err[0], err
    assert not (tmp_path / "merged").exists() and not (tmp_path / "report").exists()


@pytest.mark.parametrize("change, words", [
    ({"seq_len": None}, "seq_len = None"), ({"seq_len": "64"}, "seq_len = '64'"),
    ({"status": "weird"}, "status 'weird'")])
def test_a_resume_of_hand_edited_records_is_refused_in_one_line(tmp_path, change, words):
    """As report and merge refuse them: one line naming the record, exit 2, nothing written
    (a null or string seq_len was a KeyError or TypeError traceback)."""
    run = tmp_path / "run"
    made = run_cli("sweep", "--impl", "softmax_torch", "--seq-len", "16,32", "--head-dim", "16",
                   "--heads", "1", "--min-time", "0.01", "--out", str(run), "--no-report")
    assert made.returncode == 0, made.stderr
    lines = (run / "results.jsonl").read_text().splitlines()
    (run / "results.jsonl").write_text("\n".join([json.dumps({**json.loads(lines[0]), **change}),
                                                  *lines[1:]]) + "\n")
    before = {name: (run / name).read_bytes() for name in ("run.json", "results.jsonl")}
    again = run_cli("sweep", "--resume", str(run), "--no-report")
    assert again.returncode == 2, again.stderr
    err = again.stderr.strip().splitlines()
    assert len(err) == 1 and words in err[0] and "refusing to resume" in err[0], err
    assert before == {name: (run / name).read_bytes() for name in ("run.json", "results.jsonl")}


def test_a_resume_with_another_thread_count_is_refused_before_touching_the_run(tmp_path):
    """Measured with 1 thread per worker, resumed with 2: refused with one line naming both
    and the fix; run.json and results.jsonl unchanged (a refused resume appends nothing)."""
    run = tmp_path / "run"
    made = run_cli("sweep", "--impl", "softmax_torch", "--seq-len", "16,32", "--head-dim", "16",
                   "--heads", "1", "--batch", "1", "--min-time", "0.01", "--out", str(run),
                   "--no-report", env={"OMP_NUM_THREADS": "1"})
    assert made.returncode == 0, made.stderr
    (run / "results.jsonl").write_text((run / "results.jsonl").read_text().splitlines()[0]
                                       + "\n")          # one point left to measure
    before = {name: (run / name).read_bytes() for name in ("run.json", "results.jsonl")}
    again = run_cli("sweep", "--resume", str(run), "--no-report", env={"OMP_NUM_THREADS": "2"})
    assert again.returncode == 2
    err = again.stderr.strip().splitlines()
    assert len(err) == 1 and "1 thread(s) per worker" in err[0] and \
        "OMP_NUM_THREADS=1" in err[0], err
    assert {name: (run / name).read_bytes() for name in before} == before


@pytest.mark.parametrize("stored, given", [(None, "1/2"), ("1/2", "2/2")])
def test_a_resume_with_another_shard_is_refused(tmp_path, stored, given):
    """--resume RUN --shard J/N would measure another part of the grid into RUN."""
    from harness.grid.plan import SweepRequest
    from harness.store.resume import plan_sweep

    arguments = {"impl": "softmax_torch", "seq_len": "16,32", **({"shard": stored}
                                                                   if stored else {})}
    run = RunDir.create(tmp_path / "run", {"kind": "speed", "grid": {"arguments": arguments}})
    run.release()
    with pytest.raises(UsageError, match="another shard would be measured into it"):
        plan_sweep(SweepRequest(resume=str(run.path), shard=given), check_devices=False)


def test_a_resume_of_a_run_without_a_stored_grid_is_refused(tmp_path):
    """No grid in run.json (a merge, an old tool): resuming would plan the default preset into
    the run; refused with one line, the run untouched."""
    run = RunDir.create(tmp_path / "run", {"kind": "speed"})
    run.release()
    before = (run.path / "run.json").read_bytes()
    done = run_cli("sweep", "--resume", str(run.path), "--no-report")
    assert done.returncode == 2 and "records no grid" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert (run.path / "run.json").read_bytes() == before


def test_lines_that_are_not_records_are_skipped_with_one_warning_each(tmp_path):
    """Bytes that are not UTF-8, a JSON value that is not an object, an object naming no
    method: each is one 'warning:' line naming it, the run's records are read (report) and
    resumed (sweep --resume measures nothing again), never a traceback."""
    run = tmp_path / "run"
    tiny_sweep(run)
    path = run / "results.jsonl"
    good = path.read_bytes()
    path.write_bytes(b'{"impl": "caf\xe9"}\n[1, 2, 3]\n"text"\n'
                     b'{"schema_version": 1, "status": "ok", "point_id": "x"}\n' + good)
    reasons = {1: "is not UTF-8 text", 2: "is not a JSON object (a list)",
               3: "is not a JSON object (a str)", 4: "is not a record: no method name (impl)"}
    for argv in (("report", str(run), "--out", str(tmp_path / "report")),
                 ("sweep", "--resume", str(run), "--no-report")):
        result = run_cli(*argv)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        for number, reason in reasons.items():
            expected = f"warning: {path}: line {number} {reason}; skipped"
            assert result.stderr.splitlines().count(expected) == 1, (expected, result.stderr)
    assert path.read_bytes().endswith(good)                  # nothing measured again


# -- a second writer ----------------------------------------------------------------------------
HOLD = """
import sys, time
from pathlib import Path
from harness.store.run_dir import RunDir
RunDir.create(Path(sys.argv[1]), {"kind": "speed", "grid": {"arguments": {
    "impl": "softmax_torch", "seq_len": "16"}}})
print("locked", flush=True)
time.sleep(3600)   # killed by the test when done
"""


def test_a_second_writer_is_refused_while_the_first_holds_the_lock(tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE,
                              text=True, env={**os.environ})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
            RunDir.create(run, {"kind": "speed"}, resume=True)
        refused = run_cli("sweep", "--resume", str(run))
        assert refused.returncode == 2, refused.stderr
        assert "being written by another attnbench process" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
    finally:
        holder.kill()
        holder.wait()
    assert lines_of(run) == []                               # nothing measured twice
    RunDir.create(run, {"kind": "speed"}, resume=True).release()   # free once it is gone


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_message(tmp_path, capsys):
    run = tmp_path / "run"
    RunDir.create(run, {"kind": "speed"}).release()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / LOCK_FILE).write_text(f"pid {dead.pid} since 2026-01-01T00:00:00+00:00\n")
    again = RunDir.create(run, {"kind": "speed"}, resume=True)
    try:
        err = capsys.readouterr().err
        assert f"pid {dead.pid}" in err and "no longer running" in err
        assert f"pid {os.getpid()}" in (run / LOCK_FILE).read_text()
    finally:
        again.release()
    RunDir.create(run, {"kind": "speed"}, resume=True).release()
    assert "taking over" not in capsys.readouterr().err     # a clean release leaves no owner


def test_readers_flag_several_ok_records_of_one_point(tmp_path):
    run = RunDir.create(tmp_path / "run", {"kind": "speed", "machine": {}})
    point = Point("softmax_torch", seq_len=64, head_dim=16)
    for time_s in (1e-3, 2e-3):
        run.append(SpeedRecord.for_point(point, framework="torch", family="exact", status="ok",
                                         time_s=time_s, time_samples_s=[time_s] * 3))
    run.release()
    assert run.duplicate_ok_points() == {point.point_id: 2}
    result = run_cli("report", str(run.path), "--out", str(tmp_path / "report"))
    assert result.returncode == 0, result.stderr
    assert "more than one ok record" in result.stderr
    compared = run_cli("compare", str(run.path), str(run.path), "--out", str(tmp_path / "c"))
    assert "more than one ok record" in compared.stderr


# -- a diverging training -------------------------------------------------------------------------
def test_non_finite_numbers_are_written_as_null_with_a_flag(tmp_path):
    run = RunDir.create(tmp_path / "run", {"kind": "accuracy"})
    record = AccuracyRecord(impl="hrr_torch", task="listops", status="error",
                            message="training diverged: 3 non-finite losses",
                            best_val_accuracy=0.1, curve=[{"epoch": 1, "train_loss": math.nan,
                                                           "val_loss": math.inf}])
    run.append(record)
    run.release()
    (data,) = lines_of(run.path)
    assert data["curve"][0]["train_loss"] is None and data["curve"][0]["val_loss"] is None
    assert data["nonfinite_fields"] == ["curve[0].train_loss", "curve[0].val_loss"]
    assert data["status"] == "error" and "diverged" in data["message"]


def test_a_diverging_lra_run_is_recorded(tmp_path):
    from accuracy_fixtures import write_bytes_folder

    from harness import cli

    data = write_bytes_folder(tmp_path / "files", per_class=12, size=80)
    out = tmp_path / "run"
    code = cli.main(["lra", "--task", "bytes", "--impl", "softmax_torch", "--data-dir",
                     str(data), "--epochs", "2", "--seq-len", "32", "--lr", "1e30",
                     "--out", str(out), "--no-progress"])
    (record,) = lines_of(out)
    assert code == 1                       # a failed run: exit 1, but recorded
    assert record["status"] == "error" and "diverged" in record["message"], record["message"]
    assert record["nonfinite_fields"]


# -- a fault in the middle of a series, in both isolation modes --------------------------------
SERIES = (32, 64, 128, 256)        # impls_faults.MID == 128: measured points on both sides
AFTER = (32, 64)                   # a second series of the same worker key (more heads)
MID_FAULTS = {   # fault -> (status at T=128, words in its message, larger T, settings)
    "segfault": ("error", "SIGSEGV", "ok", {}),
    "sigkill": ("error", "not by the kernel's out-of-memory killer", "ok", {}),
    "abort": ("error", "SIGABRT", "ok", {}),
    "exit": ("error", "status 3", "ok", {}),
    "oom": ("oom", "", "skipped", {"max_memory_bytes": 200 * 10 ** 6}),
    "hang": ("timeout", "no result after", "skipped", {"timeout_s": 6}),
    "shape": ("error", "wrong output shape", "ok", {}),
}


@pytest.mark.parametrize("isolate", ["worker", "point"])
def test_a_method_hanging_in_its_probe_is_a_timeout(tmp_path, isolate):
    """The probe's tiny run hangs: the worker is killed at --timeout and the point is recorded
    as a timeout (README: a point that does not finish within --timeout), not an error."""
    run = tmp_path / "run"
    runner_for(run, isolate=isolate, timeout_s=3).run(points("fault_hang_always", [32]))
    (record,) = lines_of(run)
    assert record["status"] == "timeout", record
    assert "probe" in record["message"] and "no result after" in record["message"]


# tests/impls_faults.py's ORPHAN_MARKER (that module registers its methods where it is imported)
ORPHAN_MARKER = "attnbench-test-orphan-of-a-killed-worker"


def processes_with(marker: str) -> list[int]:
    """pids of the running processes whose command line holds ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                found.append(int(entry))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
@pytest.mark.parametrize("isolate", ["method", "point"])
def test_a_timed_out_worker_takes_the_processes_it_started_with_it(tmp_path, isolate):
    """A method that starts a process of its own and hangs: the timeout kills the worker and
    that process (a `| grep` of the sweep's output would otherwise wait on it for good); the
    point is a timeout and the next one is measured."""
    for pid in processes_with(ORPHAN_MARKER):     # left by an earlier failed run
        os.kill(pid, signal.SIGKILL)
    run = tmp_path / "run"
    runner_for(run, isolate=isolate, timeout_s=10).run(
        points("fault_child_then_hang", [64, 128]) + points("softmax_torch", [64]))
    records = {(r["impl"], r["seq_len"]): r["status"] for r in lines_of(run)}
    assert records == {("fault_child_then_hang", 64): "ok", ("fault_child_then_hang", 128):
                       "timeout", ("softmax_torch", 64): "ok"}, records
    left = processes_with(ORPHAN_MARKER)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == [], "the worker's own process outlived it"


def test_an_output_in_another_dtype_is_an_error_not_a_float32_point(tmp_path):
    """Right values in float64 for float32 inputs pass a gate that compares values; the timed
    point is recorded as an error naming the dtype, never as an ok float32 point."""
    run = tmp_path / "run"
    runner_for(run).run(points("fault_float64_out", [32]))
    (record,) = lines_of(run)
    assert record["status"] == "error" and "output dtype float64" in record["message"], record


def test_an_exact_method_wrong_only_at_long_t_is_an_error_there(tmp_path):
    """5% off from T=256 on, right at the gate's size: T=128 is ok, T=256 and 512 are errors
    naming the check, never ok with a fine time."""
    run = tmp_path / "run"
    runner_for(run).run(points("fault_off_when_long", [128, 256, 512]))
    records = {r["seq_len"]: r for r in lines_of(run)}
    assert records[128]["status"] == "ok"
    for t in (256, 512):
        assert records[t]["status"] == "error", records[t]
        assert "wrong values at the timed size" in records[t]["message"]


def test_a_method_wrong_on_every_other_call_is_never_ok(tmp_path):
    """Right on odd calls only: whichever call the gate and the last sample land on, the two
    consecutive calls checked at the timed size include a wrong one."""
    run = tmp_path / "run"
    runner_for(run).run(points("fault_every_other_call", [64, 128, 256]))
    records = lines_of(run)
    assert len(records) == 3 and all(r["status"] == "error" for r in records), records


def test_a_method_writing_its_inputs_in_place_is_an_error(tmp_path):
    """q scaled in place on every call: the inputs sampled before and after the calls differ,
    and the point is an error naming q."""
    run = tmp_path / "run"
    runner_for(run).run(points("fault_scales_q_in_place", [32]))
    (record,) = lines_of(run)
    assert record["status"] == "error", record
    assert "changed its inputs in place (q differ" in record["message"]


def test_a_method_answering_from_a_cache_of_its_input_tensors_is_an_error(tmp_path):
    """The output does not follow q changed in place: an error, not a dictionary lookup's time
    recorded as attention's."""
    run = tmp_path / "run"
    runner_for(run).run(points("fault_cached_by_tensor", [64, 128]))
    records = lines_of(run)
    assert len(records) == 2 and all(r["status"] == "error" for r in records), records
    assert all("wrong values at the timed size" in r["message"] for r in records)


def test_a_cache_of_input_contents_never_answers_a_timed_call(tmp_path):
    """A method caching its output on a fingerprint of its inputs' contents (its hits 5% off):
    without varied inputs every timed call after the first would be a hit, the last one
    included. The timing loop permutes q's values before every call (Workload.vary), so the
    last timed call computes (its values are checked) and the point is ok: the time recorded
    is the method computing. q passes the in-place check (a permutation keeps its sums)."""
    run = tmp_path / "run"
    runner_for(run).run(points("fault_cached_by_content", [128, 256]))
    records = lines_of(run)
    assert [r["status"] for r in records] == ["ok", "ok"], records
    assert all(len(r["time_samples_s"]) > 1 for r in records)


def test_a_backward_answered_from_a_cache_of_its_graph_is_an_error(tmp_path):
    """A backward-only point reuses one forward's graph; a backward caching its gradients per
    graph was timed as a lookup. The upstream gradient is varied before every call, and the last
    timed call's dq must be a fresh forward and backward's: an error; softmax_torch is ok."""
    run = tmp_path / "run"
    runner_for(run).run([*points("fault_backward_cached", [64], pass_="backward"),
                         *points("softmax_torch", [64], pass_="backward")])
    records = {r["impl"]: r for r in lines_of(run)}
    cached = records["fault_backward_cached"]
    assert cached["status"] == "error" and "fresh forward and backward" in cached["message"]
    assert records["softmax_torch"]["status"] == "ok", records["softmax_torch"]


def test_a_method_computing_only_evenly_spaced_rows_is_an_error(tmp_path):
    """At T=512 the checks read 256 rows: drawn at random, not the evenly spaced ones a method
    could compute alone (every other row here, zeros elsewhere)."""
    run = tmp_path / "run"
    runner_for(run).run(points("fault_sampled_rows_only", [256, 512]))
    records = {r["seq_len"]: r for r in lines_of(run)}
    assert records[256]["status"] == "ok", records[256]
    assert records[512]["status"] == "error", records[512]
    assert "wrong values at the timed size" in records[512]["message"]


def test_an_approximation_answering_from_a_cache_is_an_error(tmp_path):
    """No gate compares a kernel approximation's values; its output must still change when q
    is negated in place. One keyed on q's sum of squares gives the same output: an error."""
    run = tmp_path / "run"
    runner_for(run).run(points("fault_cached_by_norm", [64, 128]))
    records = lines_of(run)
    assert [r["status"] for r in records] == ["error", "error"], records
    assert all("did not change when q was negated" in r["message"] for r in records)


def test_long_cycle_permutation_is_a_permutation_whose_order_is_the_primes_product():
    import math

    import numpy as np

    from harness.contract.frameworks.torch_fw import long_cycle_permutation

    for n, order in ((1, 1), (2, 2), (5, 6), (32, 2310), (64, 510510)):
        perm = long_cycle_permutation(n)
        assert sorted(perm) == list(range(n))
        cycles, seen = [], set()
        for start in range(n):
            length, i = 0, start
            while i not in seen:
                seen.add(i)
                i = perm[i]
                length += 1
            if length:
                cycles.append(length)
        assert math.lcm(*cycles) == order, (n, cycles)
    assert (long_cycle_permutation(8) != np.arange(8)).any()


def test_a_method_that_fills_its_output_on_a_thread_after_returning_is_an_error(tmp_path):
    """Zeros returned at once, filled by the method's own thread during the next call: an
    error at every timed size whatever the family (this one is a kernel approximation, whose
    values no gate compares); below LONG it computes before returning and is ok. A method
    that waits for its own thread pool before returning is ok at the same points."""
    run = tmp_path / "run"
    runner_for(run).run([*points("fault_fills_on_thread", [64, 128, 256]),
                         *points("fault_pooled_exact", [64, 128, 256])])
    records = {(r["impl"], r["seq_len"]): r for r in lines_of(run)}
    assert len(records) == 6
    assert records[("fault_fills_on_thread", 64)]["status"] == "ok"
    for t in (128, 256):
        record = records[("fault_fills_on_thread", t)]
        assert record["status"] == "error", record
        assert "changed after the call returned" in record["message"], record
        assert "thread(s) it started were running" in record["message"], record
    for t in (64, 128, 256):
        assert records[("fault_pooled_exact", t)]["status"] == "ok", records[("fault_pooled_exact", t)]


@pytest.mark.parametrize("pass_", ["forward_backward", "backward"])
def test_fake_gradients_are_an_error_and_real_ones_pass(tmp_path, pass_):
    """A method with the right forward and fake dq, dk, dv: its backward points are errors
    naming the gradient check; softmax_torch's real gradients pass it at the same points."""
    run = tmp_path / "run"
    grid = [*points("fault_fake_gradients", [32, 64], pass_=pass_),
            *points("softmax_torch", [32, 64], pass_=pass_)]
    runner_for(run).run(grid)
    records = {(r["impl"], r["seq_len"]): r for r in lines_of(run)}
    for t in (32, 64):
        fake, real = records[("fault_fake_gradients", t)], records[("softmax_torch", t)]
        assert fake["status"] == "error" and "gradients do not match" in fake["message"], fake
        assert real["status"] == "ok", real


def test_correct_gradients_pass_at_the_default_seed_and_shape(tmp_path):
    """softmax_torch and sdpa_math at seed 0, H=8, T=64, D=32, float32: a random direction's
    directional derivative nearly cancelled there (0.027) and a correct backward was recorded
    as an error; along the gradient they are ok."""
    run = tmp_path / "run"
    runner_for(run).run([Point(impl=impl, seq_len=64, head_dim=32, heads=8,
                               pass_="forward_backward")
                         for impl in ("softmax_torch", "sdpa_math")])
    assert [r["status"] for r in lines_of(run)] == ["ok", "ok"], lines_of(run)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_fake_gradients_in_half_precision_are_an_error_and_real_ones_pass(tmp_path, dtype):
    """Half precision's rounding swamps a random direction's step: the check goes along the
    method's own gradient, per input; fake dq, dk, dv are still errors and softmax_torch's and
    sdpa_math's real ones pass."""
    run = tmp_path / "run"
    runner_for(run).run([point for impl in ("fault_fake_gradients", "softmax_torch", "sdpa_math")
                         for point in points(impl, [64, 128], dtype=dtype,
                                             pass_="forward_backward")])
    records = {(r["impl"], r["seq_len"]): r for r in lines_of(run)}
    for t in (64, 128):
        fake = records[("fault_fake_gradients", t)]
        assert fake["status"] == "error" and "gradients do not match" in fake["message"], fake
        assert dtype in fake["message"], fake
        for real in ("softmax_torch", "sdpa_math"):
            assert records[(real, t)]["status"] == "ok", records[(real, t)]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fake_gradients_of_a_jax_method_are_an_error_and_real_ones_pass(tmp_path, dtype):
    """A JAX method whose custom_vjp returns fake gradients: its forward_backward and backward
    points are errors; softmax_jax and hrr_jax (its own vjp through FFTs) pass at the same
    points."""
    pytest.importorskip("jax")
    run = tmp_path / "run"
    grid = [Point(impl=impl, seq_len=64, head_dim=16, heads=2, dtype=dtype, pass_=pass_)
            for impl in ("fault_fake_gradients_jax", "softmax_jax", "hrr_jax")
            for pass_ in ("forward_backward", "backward")]
    runner_for(run).run(grid)
    records = {(r["impl"], r["pass"]): r for r in lines_of(run)}
    assert len(records) == 6, records
    for pass_ in ("forward_backward", "backward"):
        fake = records[("fault_fake_gradients_jax", pass_)]
        assert fake["status"] == "error" and "gradients do not match" in fake["message"], fake
        for real in ("softmax_jax", "hrr_jax"):
            assert records[(real, pass_)]["status"] == "ok", records[(real, pass_)]


def test_output_kind_problem_reads_torch_and_jax_outputs():
    import numpy as np
    import torch

    from harness.measure.output_checks import output_kind_problem

    point = Point("softmax_torch", seq_len=8, head_dim=4, dtype="float32", device="cuda")
    assert "on cpu" in output_kind_problem(torch.zeros(2, dtype=torch.float32), point)
    assert "float16" in output_kind_problem(torch.zeros(2, dtype=torch.float16), point)
    cpu_point = Point("softmax_torch", seq_len=8, head_dim=4, dtype="bfloat16")
    assert output_kind_problem((torch.zeros(2, dtype=torch.bfloat16), None), cpu_point) == ""
    assert output_kind_problem(np.zeros(2, dtype=np.float32),
                               Point("x", seq_len=8, head_dim=4)) == ""
    jnp = pytest.importorskip("jax.numpy")
    assert output_kind_problem(jnp.zeros(2, dtype=jnp.float32),
                               Point("x", seq_len=8, head_dim=4)) == ""
    assert "float32" in output_kind_problem(jnp.zeros(2, dtype=jnp.float32), cpu_point)


def mid_series(impl: str) -> list[Point]:
    return points(impl, SERIES) + points(impl, AFTER, heads=4)


@pytest.mark.parametrize("isolate", ["worker", "point"])
@pytest.mark.parametrize("fault", list(MID_FAULTS))
def test_a_fault_mid_series_costs_that_point_only(tmp_path, fault, isolate):
    status, words, larger, settings = MID_FAULTS[fault]
    run, impl = tmp_path / "run", f"fault_mid_{fault}"
    summary = runner_for(run, isolate=isolate, **settings).run(mid_series(impl))
    records = assert_once(run, mid_series(impl))             # every point, exactly once
    assert [r.seq_len for r in summary.records] == [*SERIES, *AFTER]
    got = {(r.heads, r.seq_len): r for r in summary.records}
    fault_record = got[2, 128]
    assert fault_record.status == status and words in fault_record.message, fault_record.message
    assert [got[2, t].status for t in (32, 64)] == ["ok", "ok"]
    assert got[2, 256].status == larger
    if larger == "skipped":
        assert "at seq_len=128" in got[2, 256].message
    assert [got[4, t].status for t in AFTER] == ["ok", "ok"]
    assert {r["isolation"] for r in records if r["status"] != "skipped"} == {isolate}
    measured = [r for r in summary.records if r.status != "skipped"]
    if isolate == "point":
        assert {r.worker_point for r in measured} == {1}
        return
    # on the CPU a key has a memory worker and a timing worker (harness.measure.runner's
    # worker_roles); the one that met the fault is replaced, the other goes on
    memory_turns = [r.extra.get("memory_worker_point", r.worker_point) for r in measured]
    timing_turns = [r.worker_point for r in measured if r is not fault_record]
    fresh_after = [1, 2, 3] if larger == "ok" else [1, 2]
    if fault == "shape":       # found by the timing pass
        assert memory_turns == list(range(1, len(measured) + 1))
        assert timing_turns == [1, 2] + fresh_after
    else:                      # met by the memory pass, which calls the method first
        assert memory_turns == [1, 2, 3] + fresh_after
        assert timing_turns == list(range(1, len(timing_turns) + 1))


def test_a_probe_that_crashes_costs_its_combination_and_the_next_gets_a_fresh_worker(tmp_path):
    """Worker mode probes and gates a combination in the worker that will measure it."""
    run = tmp_path / "run"
    grid = points("fault_segfault", [32, 64]) + points("softmax_torch", [32, 64])
    summary = runner_for(run).run(grid)
    assert_once(run, grid)
    crashed = [r for r in summary.records if r.impl == "fault_segfault"]
    assert [r.status for r in crashed] == ["error", "error"]
    assert all("probe worker failed" in r.message and "SIGSEGV" in r.message for r in crashed)
    ok = [r for r in summary.records if r.impl == "softmax_torch"]
    assert [(r.status, r.worker_point) for r in ok] == [("ok", 1), ("ok", 2)]


def test_a_worker_that_dies_while_starting_is_that_tasks_record(tmp_path, monkeypatch):
    """The first worker dies before it is ready (its combination's probe is the task that
    needed it); the next combination's worker starts and measures."""
    from functools import partial

    import pool_helpers
    from harness.measure import pool

    monkeypatch.setattr(pool, "_serve", partial(pool_helpers.dies_at_first_start,
                                                str(tmp_path / "started")))
    run = tmp_path / "run"
    grid = points("sdpa_math", [32]) + points("softmax_torch", [32, 64])   # in this order
    summary = runner_for(run).run(grid)
    assert_once(run, grid)
    died, *measured = summary.records
    assert died.impl == "sdpa_math" and died.status == "error", died
    assert "probe worker failed" in died.message and "did not start" in died.message
    assert "status 5" in died.message, died.message
    assert [(r.impl, r.status, r.worker_point) for r in measured] == [
        ("softmax_torch", "ok", 1), ("softmax_torch", "ok", 2)]


# -- a sweep killed mid-run, then resumed ------------------------------------------------------
ROOT = Path(__file__).resolve().parent.parent
KILLED_GRID = ("fault_hang_if_told", (32, 64, 128, 256)), ("softmax_torch", (32, 64, 128, 256))


def wait_for(condition, what: str, limit_s: float = 300.0):
    """Poll until condition() is true (the limit only bounds a broken run)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.05)


def tagged_processes(tag: str) -> list[int]:
    """Live processes (not zombies) whose environment holds ATTNBENCH_TEST_TAG=tag: the sweep
    and everything it started (forkserver, workers) inherit it."""
    entry = f"ATTNBENCH_TEST_TAG={tag}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if entry in environ and state not in ("Z", "X"):
            found.append(int(proc.name))
    return found


def test_a_sweep_killed_mid_run_resumes_with_every_point_once_and_leaves_no_worker(tmp_path):
    """Ctrl-C (SIGINT to the process group), then SIGTERM and SIGKILL of the sweep alone, each
    while its reused worker is measuring (hanging at T=128, on purpose): no process of the run
    is left, SIGTERM ends the sweep as Ctrl-C does (exit 130, one line, no traceback), and
    --resume measures every point exactly once."""
    run, hanging, tag = tmp_path / "run", tmp_path / "hanging", f"{os.getpid()}-{time.time()}"
    args = [sys.executable, str(ROOT / "run_bench.py"), "--impl-module", "impls_faults",
            "sweep", "--impl", ",".join(impl for impl, _ in KILLED_GRID), "--seq-len",
            "32,64,128,256", "--head-dim", "16", "--heads", "2", "--pass", "fwd",
            "--min-time", "0.02", "--timeout", "600", "--reuse-peaks", "--out", str(run)]
    env = {**os.environ, "ATTNBENCH_TEST_TAG": tag, "ATTNBENCH_TEST_HANG": str(hanging)}
    for kill in ("ctrl-c", "sigterm", "sigkill"):
        command = args if kill == "ctrl-c" else args[:4] + ["sweep", "--resume", str(run)]
        sweep = subprocess.Popen(command, env=env, start_new_session=True, cwd=tmp_path,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: hanging.exists() or sweep.poll() is not None, "the hang")
            assert sweep.poll() is None, sweep.communicate()[1]
            worker = int(hanging.read_text())
            if kill == "ctrl-c":
                os.killpg(sweep.pid, signal.SIGINT)
                assert sweep.wait(120) == 130
            elif kill == "sigterm":
                sweep.terminate()
                assert sweep.wait(120) == 130
                assert "Traceback" not in sweep.stderr.read()
            else:
                sweep.kill()
                assert sweep.wait(120) == -signal.SIGKILL
            hanging.unlink()
            wait_for(lambda: not tagged_processes(tag), "the run's processes to end", 60)
            assert not Path(f"/proc/{worker}").exists() or worker not in tagged_processes(tag)
        finally:
            if sweep.poll() is None:
                os.killpg(sweep.pid, signal.SIGKILL)
                sweep.wait()
        records = lines_of(run)                       # T=32, 64 of the hanging method
        assert [(r["seq_len"], r["status"]) for r in records] == [(32, "ok"), (64, "ok")]
    grid = [p for impl, ts in KILLED_GRID for p in points(impl, ts)]
    resumed = runner_for(run, resume=True).run(grid, resume=True)   # what --resume runs
    assert resumed.resumed_skips == 2 and not resumed.interrupted
    records = assert_once(run, grid)
    assert {r["status"] for r in records} == {"ok"}
    assert not tagged_processes(tag)


# -- SIGKILL vs OOM: the rule -----------------------------------------------------------------
@pytest.mark.parametrize("code, before, after, status, words", [
    (-signal.SIGKILL, 3, 4, "oom", "out-of-memory killer"),
    (-signal.SIGKILL, 3, 3, "error", "not by the kernel's out-of-memory killer"),
    (-signal.SIGKILL, None, None, "error", "unreadable"),
    (-signal.SIGTERM, 3, 4, "error", "SIGTERM"),              # only a SIGKILL is the OOM killer
    (-signal.SIGSEGV, 0, 0, "error", "SIGSEGV"),
    (1, 0, 0, "error", "status 1"),
])
def test_death_classification(code, before, after, status, words):
    got, message = classify_death(code, before, after)
    assert got == status and words in message


# -- wrong output at a timed size ---------------------------------------------------------------
def test_output_shape_check_accepts_right_shapes():
    import torch

    from harness.measure.output_checks import output_shape_problem

    q = k = v = torch.zeros(1, 2, 8, 4)
    assert output_shape_problem(torch.zeros(1, 2, 8, 4), (q, k, v), "forward") == ""
    assert "wrong output shape" in output_shape_problem(torch.zeros(1, 2, 4, 4), (q, k, v),
                                                        "forward")
    assert output_shape_problem((torch.zeros(1, 2, 8, 4), ()), (q, k, v), "backward") == ""
    assert "gradient" in output_shape_problem(torch.zeros(2, 8, 4), (q, k, v), "backward")


# -- check and list: isolated, NaN is a failure --------------------------------------------------
def test_check_fails_nan_and_survives_a_crashing_method():
    result = run_cli("--impl-module", "impls_faults", "check", "--impl",
                     "fault_nan_always,fault_segfault,fault_exit,softmax_torch", "--dtype", "fp32")
    assert result.returncode == 1, result.stderr
    rows: dict[str, str] = {}
    for line in result.stdout.splitlines():
        if line.startswith("│ fault_") or line.startswith("│ softmax_torch"):
            rows[line.split()[1]] = rows.get(line.split()[1], "") + line
    assert "FAIL" in rows["fault_nan_always"] and "non-finite" in rows["fault_nan_always"]
    assert "FAIL" in rows["fault_segfault"] and "SIGSEGV" in result.stdout
    assert "FAIL" in rows["fault_exit"]
    assert "ok" in rows["softmax_torch"] and "FAIL" not in rows["softmax_torch"]


def test_list_survives_a_crashing_method():
    result = run_cli("--impl-module", "impls_faults", "list", "--device", "cpu", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["softmax_torch"]["availability"]["cpu"]["available"]
    crashed = rows["fault_segfault"]["availability"]["cpu"]
    assert not crashed["available"] and "SIGSEGV" in crashed["reason"]


@pytest.mark.parametrize("args, expected", [
    (["check", "--dtype", "float17"], "unknown dtype"),
    (["check", "--device", "tpu"], "unknown device"),
    (["check", "--timeout", "nan"], "--timeout"),
    (["list", "--device", "tpu"], "unknown device"),
])
def test_check_and_list_refuse_bad_input(args, expected):
    result = run_cli(*args)
    assert result.returncode == 2 and expected in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# -- non-finite records in report, merge, compare ---------------------------------------------
def write_raw_run(path: Path, time_s: float) -> Path:
    """A run directory holding one ok record with time_s as given (NaN written as NaN)."""
    run = RunDir.create(path, {"kind": "speed", "machine": {"hardware_id": "a"}})
    run.release()
    point = Point("softmax_torch", seq_len=64, head_dim=16)
    data = SpeedRecord.for_point(point, framework="torch", family="exact", status="ok",
                                 time_s=time_s, time_samples_s=[time_s] * 3,
                                 hardware_id="a").to_json()
    (path / "results.jsonl").write_text(json.dumps(data) + "\n")   # json allows NaN here
    return path


@pytest.mark.parametrize("value", [math.nan, math.inf, -1e-3])
def test_impossible_numbers_are_refused_and_nothing_is_left_behind(tmp_path, value):
    bad = write_raw_run(tmp_path / "bad", value)
    good = write_raw_run(tmp_path / "good", 1e-3)
    report = run_cli("report", str(bad), "--out", str(tmp_path / "report"))
    assert report.returncode == 2 and "refusing to report" in report.stderr, report.stderr
    assert not (tmp_path / "report").exists()
    merged = run_cli("merge", str(good), str(bad), "--out", str(tmp_path / "merged"))
    assert merged.returncode == 2 and "refusing to merge" in merged.stderr, merged.stderr
    assert not (tmp_path / "merged").exists()
    compared = run_cli("compare", str(good), str(bad), "--out", str(tmp_path / "c"))
    assert compared.returncode == 2 and "malformed" in compared.stderr, compared.stderr


def test_report_of_runs_with_different_grids(tmp_path):
    """Two runs sharing no shape: the comparison figures have nothing to draw, and say so."""
    runs = []
    for name, seq_len in (("a", 64), ("b", 128)):
        run = RunDir.create(tmp_path / name, {"kind": "speed", "machine": {"hardware_id": name}})
        for impl in ("softmax_torch", "hrr_torch"):
            point = Point(impl, seq_len=seq_len, head_dim=16 if name == "a" else 32)
            run.append(SpeedRecord.for_point(point, framework="torch", family="exact",
                                             status="ok", time_s=1e-3,
                                             time_samples_s=[1e-3] * 3, hardware_id=name))
        run.release()
        runs.append(str(run.path))
    result = run_cli("report", *runs, "--out", str(tmp_path / "report"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "report" / "report.md").exists()


# -- bad paths ---------------------------------------------------------------------------------
def test_out_that_is_a_file_is_refused_by_every_command(tmp_path, capsys):
    from accuracy_fixtures import write_bytes_folder

    from harness import cli

    a_file = tmp_path / "file"
    a_file.write_text("x")
    good = write_raw_run(tmp_path / "good", 1e-3)
    commands = [
        ["sweep", "--impl", "softmax_torch", "--seq-len", "64", "--out", str(a_file)],
        ["report", str(good), "--out", str(a_file)],
        ["merge", str(good), "--out", str(a_file)],
        ["lra", "--task", "bytes", "--impl", "softmax_torch", "--data-dir",
         str(write_bytes_folder(tmp_path / "files", per_class=12, size=80)),
         "--out", str(a_file)],
        ["data", "listops", "--out", str(a_file), "--n-train", "2", "--n-val", "1",
         "--n-test", "1", "--min-length", "5", "--max-length", "60"],
    ]
    for args in commands:   # in this process: each is refused before it starts any work
        code = cli.main([*args, "--no-progress"] if args[0] == "lra" else args)
        err = capsys.readouterr().err
        assert code == 2, (args, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert a_file.read_text() == "x"
    lines_of(good)


def test_an_unwritable_out_is_refused(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = run_cli("sweep", "--impl", "softmax_torch", "--seq-len", "64", "--out",
                         str(locked / "run"))
        assert result.returncode == 2 and "cannot create" in result.stderr, result.stderr
    finally:
        locked.chmod(0o700)


# -- resume rules ------------------------------------------------------------------------------
def test_resume_refuses_grid_flags_out_and_the_other_kind(tmp_path):
    speed = write_raw_run(tmp_path / "speed", 1e-3)
    (speed / "run.json").write_text(json.dumps({"schema_version": 1, "kind": "speed",
                                                "grid": {"arguments": {"impl": "softmax_torch",
                                                                       "seq_len": "64"}}}))
    before = (speed / "results.jsonl").read_text()
    for extra, words in ((["--seq-len", "2048"], "--seq-len cannot"),
                         (["--out", str(tmp_path / "x")], "--out cannot")):
        result = run_cli("sweep", "--resume", str(speed), *extra)
        assert result.returncode == 2 and words in result.stderr, result.stderr
    accuracy = tmp_path / "acc"
    RunDir.create(accuracy, {"kind": "accuracy"}).release()
    result = run_cli("sweep", "--resume", str(accuracy))
    assert result.returncode == 2 and "accuracy run" in result.stderr, result.stderr
    assert json.loads((accuracy / "run.json").read_text())["kind"] == "accuracy"
    with pytest.raises(UsageError, match="holds a speed run"):
        RunDir.create(speed, {"kind": "accuracy"}, resume=True)
    assert (speed / "results.jsonl").read_text() == before
    assert json.loads((speed / "run.json").read_text())["kind"] == "speed"


# -- bad input: one clear line, exit 2 ----------------------------------------------------------
@pytest.mark.parametrize("args, expected", [
    (["--timeout", "nan"], "--timeout"),
    (["--timeout", "inf"], "--timeout"),
    (["--cooldown", "-1"], "--cooldown: must be at least 0"),
    (["--seq-len", "2^99"], "beyond any tensor dimension"),
    (["--seq-len", "1K..2^40"], "beyond any tensor dimension"),
    (["--seq-len", "512,,1024"], "empty item"),
    (["--shards", "0"], "--shards: must be at least 1"),
])
def test_sweep_refuses_bad_numbers(args, expected, capsys):
    from harness import cli

    code = cli.main(["sweep", "--impl", "softmax_torch", "--dry-run", *args])
    err = capsys.readouterr().err
    assert code == 2 and expected in err, err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("text, expected", [
    ('seq_len = 512\nimpl = "softmax_torch"\n', None),          # a scalar is one value
    ('pass = 5\n', "unknown pass '5'"),
    ('impl = 42\n', "unknown implementation '42'"),
    ('seed = 1.5\n', "--seed: expected a whole number"),
    ('timeout = "soon"\n', "--timeout: expected a number"),
    (b'seq_len = "\xff\xfe"\n', "not UTF-8"),
])
def test_config_with_wrong_types(tmp_path, capsys, text, expected):
    from harness import cli

    data = text if isinstance(text, bytes) else text.encode()
    config = tmp_path / "grid.toml"
    config.write_bytes(data)
    flags = [] if b"impl" in data else ["--impl", "softmax_torch"]
    code = cli.main(["sweep", "--config", str(config), "--dry-run", *flags])
    err = capsys.readouterr().err
    if expected is None:
        assert code == 0, err
    else:
        assert code == 2 and expected in err, err


def test_impl_modules_that_raise_or_clash(tmp_path):
    (tmp_path / "raising_mod.py").write_text("raise RuntimeError('broken at import')\n")
    (tmp_path / "clash_mod.py").write_text(
        "from harness import register\n"
        "@register('softmax_torch', framework='torch', family='exact')\n"
        "def mine(q, k, v, *, causal=False, key_padding_mask=None):\n    return q\n")
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    raising = run_cli("--impl-module", "raising_mod", "list", env=env)
    assert raising.returncode == 2 and "broken at import" in raising.stderr, raising.stderr
    clash = run_cli("--impl-module", "clash_mod", "list", env=env)
    assert clash.returncode == 2, clash.stderr
    assert "'softmax_torch' (in clash_mod) is already registered by implementations" in \
        clash.stderr


@pytest.mark.parametrize("args, expected", [
    (["--max-depth", "0"], "--max-depth must be at least 1"),
    (["--max-depth", "2"], "at most 12 tokens"),
    (["--min-length", "1999", "--max-length", "2000"], "no integer length"),
])
def test_listops_generator_refuses_what_it_cannot_meet(tmp_path, capsys, args, expected):
    from harness import cli

    started = time.monotonic()
    code = cli.main(["data", "listops", "--out", str(tmp_path / "d"), "--n-train", "2",
                     "--n-val", "1", "--n-test", "1", *args])
    err = capsys.readouterr().err
    assert code == 2 and expected in err, err
    assert time.monotonic() - started < 30
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("argv", [
    ["sweep", "--impl", "", "--dry-run"],
    ["sweep", "--impl", " , ", "--dry-run"],
    ["check", "--impl", ""],
    ["profile", "--impl", "", "--out", "PROFILE"],
    ["lra", "--task", "listops", "--impl", ""],
])
def test_an_empty_impl_list_is_refused_naming_the_flag(tmp_path, capsys, argv):
    from harness import cli

    argv = [str(tmp_path / "p") if a == "PROFILE" else a for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --impl: ") and "empty" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("dataset, subdir", [("listops", "listops-1000"),
                                             ("pathfinder", "pathfinder32/curv_contour_length_14")])
def test_data_refuses_an_existing_set_unless_asked_to_overwrite(tmp_path, capsys, dataset,
                                                                 subdir):
    from harness import cli

    official = tmp_path / "lra" / subdir
    official.mkdir(parents=True)
    (official / "basic_train.tsv").write_text("the official release\n")
    argv = ["data", dataset, "--out", str(tmp_path / "lra"), "--n-train", "2", "--n-val", "1",
            "--n-test", "1"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and str(official) in err and len(err.strip().splitlines()) == 1
    assert (official / "basic_train.tsv").read_text() == "the official release\n"
    assert cli.main([*argv, "--overwrite"]) == 0
    assert (official / "GENERATED.json").exists()
    stale = official / "basic_train.tsv"
    assert not stale.exists() or stale.read_text() != "the official release\n"


def test_listops_search_is_bounded():
    import random

    from harness.accuracy.tasks.listops import GrammarConfig, generate_example

    config = GrammarConfig(max_depth=3, min_length=120, max_length=123)   # barely reachable
    with pytest.raises(UsageError, match="no expression with"):
        generate_example(random.Random(0), config, max_attempts=50)


def test_a_binary_lra_file_is_bad_input(tmp_path, capsys):
    from harness import cli

    folder = tmp_path / "lra" / "listops-1000"
    folder.mkdir(parents=True)
    for split in ("train", "val", "test"):
        (folder / f"basic_{split}.tsv").write_bytes(b"Source\tTarget\n\xff\xfe\x00\x01\t3\n")
    code = cli.main(["lra", "--task", "listops", "--impl", "softmax_torch", "--data-dir",
                     str(tmp_path / "lra"), "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "not UTF-8" in err, err
    assert not (tmp_path / "run").exists()


def test_merge_into_an_existing_directory_does_not_suggest_resume(tmp_path):
    good = write_raw_run(tmp_path / "good", 1e-3)
    result = run_cli("merge", str(good), "--out", str(good))
    assert result.returncode == 2 and "already exists" in result.stderr
    assert "--resume" not in result.stderr


# -- the GPU's layout (one worker runs both passes of a point), run on the CPU ------------------
@pytest.mark.parametrize("fault", ["segfault", "shape"])
def test_the_joint_worker_layout_keeps_every_point_once(tmp_path, monkeypatch, fault):
    """On a GPU one reused worker runs a point's memory and timing passes (the ``point`` task);
    the same rules on the CPU: a fault costs its point, a fresh worker takes the next one."""
    from harness.measure import runner as runner_module

    monkeypatch.setattr(runner_module, "worker_roles", lambda point: ("point",))
    run, impl = tmp_path / "run", f"fault_mid_{fault}"
    summary = runner_for(run).run(mid_series(impl))
    assert_once(run, mid_series(impl))
    got = {(r.heads, r.seq_len): r for r in summary.records}
    words = {"segfault": "worker: worker died with SIGSEGV",
             "shape": "timing pass: wrong output shape"}[fault]
    assert got[2, 128].status == "error" and words in got[2, 128].message, got[2, 128].message
    assert [got[2, t].status for t in (32, 64, 256)] == ["ok", "ok", "ok"]
    turns = [got[key].worker_point for key in ((2, 32), (2, 64), (2, 128), (2, 256),
                                                (4, 32), (4, 64))]
    assert turns == [1, 2, 3, 1, 2, 3]
    assert all("memory_worker_point" not in r.extra for r in summary.records)
    ok = got[2, 64]
    assert ok.peak_mem_bytes is not None and ok.mem_method == "cpu_rss_hwm_above_inputs"
    assert ok.extra["first_call_s"] > 0 and ok.isolation == "worker"


# -- SIGTERM in the middle of a report ---------------------------------------------------------
TERMINATED_REPORT = """
import os, signal, sys
import harness.report.render as render
real = render._render_into

def terminated_midway(root, *args):
    (root / "figures").mkdir(exist_ok=True)            # something written already
    (root / "figures" / "half.png").write_bytes(b"half")
    os.kill(os.getpid(), signal.SIGTERM)                 # as `kill PID` would, mid-render
    return real(root, *args)

render._render_into = terminated_midway
from harness.cli import main
sys.exit(main(["report", sys.argv[1], "--out", sys.argv[2]]))
"""


def test_a_report_terminated_midway_leaves_no_folder_and_one_line(tmp_path):
    """SIGTERM while the report is being written (sent by the process itself at a fixed place,
    so no timing is involved): exit 143, one line, no traceback, no half-written folder."""
    run = tmp_path / "run"
    runner_for(run).run(points("softmax_torch", [32]))
    out = tmp_path / "report"
    done = subprocess.run([sys.executable, "-c", TERMINATED_REPORT, str(run), str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 143, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == ("terminated (SIGTERM): no partial output is "
                                                     "left behind")
    assert not out.exists()


# -- file-system faults: one line, nothing half-made -----------------------------------------------
def test_a_path_component_over_255_bytes_is_one_line(tmp_path):
    out = tmp_path / ("r" * 300)
    done = run_cli("sweep", "--impl", "softmax_torch", "--seq-len", "16", "--out", str(out),
                   "--no-report")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and "File name too long" in err[0], err


def test_a_lock_that_is_a_directory_is_one_line(tmp_path):
    (tmp_path / "run" / LOCK_FILE).mkdir(parents=True)
    with pytest.raises(UsageError, match="cannot open the run's lock file"):
        RunDir.create(tmp_path / "run", {"kind": "speed"}, resume=True)


def test_a_disk_full_at_the_start_leaves_no_directory(tmp_path, monkeypatch):
    import errno

    def full(self, metadata):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(RunDir, "write_metadata", full)
    with pytest.raises(UsageError, match="No space left on device"):
        RunDir.create(tmp_path / "run", {"kind": "speed"})
    assert not (tmp_path / "run").exists()


def test_results_that_cannot_be_written_mid_run_keep_what_was_written(tmp_path):
    """results.jsonl replaced by a directory between two records (as a full disk or a file
    made unwritable would fail the write): one UsageError naming --resume; the first record
    stays where it was moved."""
    run = RunDir.create(tmp_path / "run", {"kind": "speed"})
    point = Point("softmax_torch", seq_len=16, head_dim=8)
    record = SpeedRecord.for_point(point, framework="torch", family="exact", status="ok",
                                   time_s=1e-3, time_samples_s=[1e-3] * 3)
    run.append(record)
    kept = run.results_path.read_bytes()
    run.results_path.rename(tmp_path / "kept.jsonl")
    run.results_path.mkdir()
    with pytest.raises(UsageError, match=r"cannot write .*--resume"):
        run.append(record)
    run.release()
    assert (tmp_path / "kept.jsonl").read_bytes() == kept
