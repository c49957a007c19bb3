"""The pure parts of the overhead breakdown (harness.measure.overhead) and of
benchmarks/reuse_vs_isolated.py's comparison, on fake records: no process, no timing."""

from __future__ import annotations

import pytest

from benchmarks import harness_overhead
from benchmarks.reuse_vs_isolated import (
    MEMORY_SLACK_BYTES,
    Observation,
    compare,
    memory_agrees,
    mode_order,
    table,
    verdict,
)
from harness.measure.overhead import (
    ImplTime,
    Overhead,
    OverheadSummary,
    breakdown_lines,
    impl_table,
    impl_times,
    total_time,
)

MIB = 2 ** 20


# -- the overhead breakdown -----------------------------------------------------------------------
def test_impl_times_sums_per_implementation_in_order_of_appearance():
    records = [
        {"impl": "b", "status": "ok", "wall_s": 2.0, "time_samples_s": [0.25, 0.25],
         "compile_time_s": 1.0},
        {"impl": "a", "status": "ok", "wall_s": 1.0, "time_samples_s": [0.5],
         "compile_time_s": None},
        {"impl": "b", "status": "unsupported", "wall_s": None, "time_samples_s": []},
        {"impl": "a", "status": "oom", "wall_s": 3.0},
        {"kind": "accuracy", "impl": "a", "wall_s": 100.0},
    ]
    rows = impl_times(records)
    assert [r.impl for r in rows] == ["b", "a"]
    b, a = rows
    assert (b.points, b.ok, b.wall_s, b.samples_s, b.compile_s) == (2, 1, 2.0, 0.5, 1.0)
    assert (a.points, a.ok, a.wall_s, a.samples_s, a.compile_s) == (2, 1, 4.0, 0.5, 0.0)
    assert b.samples_share == pytest.approx(0.5 / (2.0 - 1.0))
    total = total_time(rows)
    assert (total.points, total.ok, total.wall_s, total.samples_s) == (4, 2, 6.0, 1.0)


def test_samples_share_is_undefined_without_time_outside_compilation():
    assert ImplTime("x", 1, 1, wall_s=1.0, samples_s=0.0, compile_s=1.0).samples_share is None
    assert OverheadSummary(0.0, 0.0, 0.0, 0.0, 0.0, 0.0).samples_share is None


def test_impl_table_has_a_row_per_implementation_and_a_total():
    rows = [ImplTime("softmax_torch", 2, 2, 4.0, 2.0, 0.0), ImplTime("flex", 1, 1, 10.0, 1.0, 8.0)]
    lines = impl_table(rows)
    assert len(lines) == 1 + len(rows) + 1
    assert lines[1].split()[0] == "softmax_torch" and lines[1].split()[-1] == "50%"
    assert lines[2].split()[-1] == "50%"          # 1 s of samples in 10 - 8 s
    assert lines[-1].split()[0] == "total"
    assert lines[-1].split()[-1] == f"{3.0 / (14.0 - 8.0):.0%}"
    assert impl_table([]) == lines[:1]


def test_breakdown_lines_parts_add_up_to_the_wall_time():
    overhead = Overhead(started=0.0)
    overhead.add_task(wall_s=5.0, task_s=4.0, compile_s=1.5)   # 1 s outside: start-up
    overhead.add_task(wall_s=3.0, task_s=None)     # died: all of it inside
    overhead.add_timing([0.5, 0.5, 1.0])
    overhead.add_start(0.5)
    summary = OverheadSummary.from_dict(
        {**overhead.summary(wall_s=10.0).as_dict(), "isolation": "worker",
         "workers_started": 2})
    assert summary.samples_s == 2.0 and summary.compile_s == 1.5
    assert summary.worker_start_s == 1.5 and summary.workers_other_s == 7.0 - 3.5
    parts = summary.samples_s + summary.compile_s + summary.worker_start_s + \
        summary.workers_other_s + summary.parent_s
    assert parts == pytest.approx(summary.wall_s)
    lines = breakdown_lines(summary)
    assert "isolation worker" in lines[0] and "2 worker(s) started" in lines[0]
    seconds = [float(line.split()[-3]) for line in lines[1:6]]
    assert sum(seconds) == pytest.approx(10.0, abs=0.3)
    assert lines[-1].endswith(f"{2.0 / (10.0 - 1.5):.0%}")


def test_breakdown_lines_of_a_run_without_the_block():
    assert "no overhead block" in breakdown_lines(None)[0]


def test_describe_reads_a_run_directory(tmp_path):
    from harness.contract.records import Point, SpeedRecord
    from harness.store.run_dir import RunDir

    run = RunDir.create(tmp_path / "run", {"kind": "speed"})
    summary = OverheadSummary(wall_s=4.0, samples_s=1.0, compile_s=0.0, worker_start_s=1.0,
                              workers_other_s=1.0, parent_s=1.0, tasks=3, isolation="point")
    run.update_metadata(overhead=summary.as_dict())
    run.append(SpeedRecord.for_point(Point(impl="softmax_torch", seq_len=64, head_dim=16),
                                     framework="torch", family="exact", status="ok",
                                     time_s=0.1, time_samples_s=[0.1, 0.1],
                                     wall_s=1.0))
    run.release()
    text = "\n".join(harness_overhead.describe(run.path))
    assert "isolation point" in text and "softmax_torch" in text
    assert harness_overhead.main([str(tmp_path / "missing")]) == 2


# -- reused vs isolated ---------------------------------------------------------------------------
def _obs(mode, round_, time_s, mem, status="ok", label="softmax_torch T=1024 forward"):
    return Observation(label=label, mode=mode, round=round_, status=status, time_s=time_s,
                       peak_mem_bytes=mem, worker_point=1 if mode == "worker" else None)


def test_compare_takes_the_median_over_rounds_per_mode():
    observations = [_obs("worker", 0, 1.00, 10 * MIB), _obs("point", 0, 1.00, 10 * MIB),
                    _obs("worker", 1, 1.02, 10 * MIB), _obs("point", 1, 0.99, 10 * MIB),
                    _obs("worker", 2, 5.00, 10 * MIB), _obs("point", 2, 1.01, 10 * MIB)]
    (row,) = compare(observations)
    assert row.time_reused_s == 1.02 and row.time_isolated_s == 1.00
    assert row.time_ratio == pytest.approx(1.02)
    assert row.paired_ratio == pytest.approx(1.02 / 0.99)
    assert row.spread_reused == pytest.approx((1.00 / 1.02, 5.00 / 1.02))
    assert row.time_ok and row.mem_ok and row.passed
    assert verdict([row])[0] == 0


def test_a_time_ratio_outside_five_percent_fails():
    (row,) = compare([_obs("worker", 0, 1.06, MIB), _obs("point", 0, 1.00, MIB)])
    assert not row.time_ok and row.mem_ok and not row.passed
    status, text = verdict([row])
    assert status == 1 and "time outside 5%: 1" in text
    assert "| FAIL |" in table([row])[2]


def test_memory_within_five_percent_or_one_mib():
    assert memory_agrees(100 * MIB, 104 * MIB)                 # 4%
    assert not memory_agrees(100 * MIB, 106 * MIB)             # 6%, 6 MiB
    assert memory_agrees(0, MEMORY_SLACK_BYTES)                # small peaks: 1 MiB slack
    assert not memory_agrees(0, MEMORY_SLACK_BYTES + 1)
    assert not memory_agrees(None, 0)


def test_a_failed_status_or_a_missing_mode_is_a_problem():
    rows = compare([_obs("worker", 0, 1.0, MIB), _obs("point", 0, None, None, status="oom"),
                    _obs("worker", 0, 1.0, MIB, label="only reused")])
    assert [r.label for r in rows] == ["softmax_torch T=1024 forward", "only reused"]
    assert "point round 0: oom" in rows[0].problem and not rows[0].passed
    assert "not measured in mode point" in rows[1].problem
    assert verdict(rows)[0] == 1
    assert verdict([])[0] == 1     # nothing compared is no pass


def test_mode_order_alternates():
    assert mode_order(0) == ("worker", "point") and mode_order(1) == ("point", "worker")
    assert mode_order(2) == mode_order(0)


def test_the_peaks_workers_start_is_worker_start_up_not_the_parents(tmp_path):
    """A reused pool times a worker's start apart from its task (ExecutorStats.start_s); the
    machine's peaks worker is the run's first, whose start boots the forkserver."""
    from rich.console import Console

    from harness.grid.plan import SweepRequest, plan
    from harness.measure.overhead import Overhead
    from harness.measure.processes import ExecutorStats, Outcome
    from harness.scale.inprocess import machine_peaks

    class StartingPool:
        stats = ExecutorStats()

        def run(self, task, *args, timeout=None, key=None, group=None):
            self.stats.start_s += 2.0          # the worker's start, outside the task
            return Outcome("error", message="no peaks here", wall_s=0.5, task_s=0.25)

    sweep = plan(SweepRequest(impl="softmax_torch", seq_len="64", device="cpu"),
                 check_devices=False)
    overhead = Overhead(started=0.0)
    machine_peaks(sweep, {"hardware_id": "test"}, StartingPool(), tmp_path,
                  Console(file=open(tmp_path / "out.txt", "w")), overhead)
    assert overhead.worker_start_s == 2.0 + 0.25     # the start, and the task's pipe time
    assert overhead.task_s == 0.25


def test_a_run_resumed_in_another_isolation_mode_says_mixed(tmp_path):
    from harness.scale.inprocess import run_isolation
    from harness.store.run_dir import RunDir

    run_dir = RunDir.create(tmp_path / "run", {"kind": "speed", "isolation": "point"})
    assert run_isolation(run_dir, "point", resume=True) == "point"
    assert run_isolation(run_dir, "worker", resume=True) == "mixed"
    assert run_isolation(run_dir, "worker", resume=False) == "worker"
    run_dir.update_metadata(isolation="mixed")
    assert run_isolation(run_dir, "point", resume=True) == "mixed"
    run_dir.release()
