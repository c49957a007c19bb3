"""--time-budget: no task gets a timeout beyond the budget left, and a task cut by the budget's
end leaves its point unrecorded (not tried), so --resume measures it.

A fake executor and a fake clock: each task "takes" a set number of simulated seconds, ends
with a timeout when its timeout is shorter, and advances the clock by what it used.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from harness.contract.probe import GateResult, ProbeResult
from harness.contract.records import Point
from harness.grid.settings import RunSettings
from harness.measure import runner as runner_module
from harness.measure.processes import Outcome
from harness.measure.runner import Runner
from harness.store.run_dir import RunDir


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    perf_counter = monotonic

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class FakeExecutor:
    """Tasks take ``durations[name]`` simulated seconds; every timeout given is logged beside
    the budget left at that moment."""

    def __init__(self, clock: FakeClock, runner_ref: list, durations: dict[str, float],
                 mode: str = "point") -> None:
        self.clock, self.runner_ref, self.durations, self.mode = clock, runner_ref, durations, mode
        self.given: list[tuple[str, float, float]] = []   # task, timeout, budget left

    def run(self, name, *args, timeout, key=None, group=None):
        shares = self.runner_ref[0].shares
        left = float("inf") if shares is None else shares.left_s()
        self.given.append((name, timeout, left))
        took = self.durations[name]
        if took > timeout:
            self.clock.now += timeout
            return Outcome("timeout", message=f"no result after {timeout:g} s; worker killed")
        self.clock.now += took
        if name == "probe":
            gate = GateResult(True, 0.0, 1e-3, 0.0)
            return Outcome("ok", result={combo: ProbeResult(True, "", gate=gate)
                                         for combo in args[0]})
        return Outcome("error", message="fake task: measured nothing")   # a record all the same

    def interrupt(self) -> None:
        pass


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(runner_module, "time", SimpleNamespace(
        monotonic=fake.monotonic, perf_counter=fake.perf_counter, sleep=fake.sleep))
    return fake


def make(tmp_path, clock, durations, mode="point", **settings):
    ref: list = []
    executor = FakeExecutor(clock, ref, durations, mode)
    values = dict(timeout_s=30.0, compile_allowance_s=600.0, probe_timeout_s=300.0)
    values.update(settings)
    runner = Runner(RunDir.create(tmp_path / "run", {}), RunSettings(**values),
                    executor=executor)
    ref.append(runner)
    return runner, executor


GRID = [Point(impl="softmax_torch", seq_len=t, head_dim=16, heads=2) for t in (32, 64, 128, 256)]


@pytest.mark.parametrize("mode", ["point", "worker"])
def test_a_task_cut_by_the_budget_leaves_its_point_for_resume(tmp_path, clock, mode):
    # probe 1 s, each point's memory task 25 s (an error record: done); budget 60 s
    runner, executor = make(tmp_path, clock, {"probe": 1.0, "memory": 25.0}, mode=mode,
                            time_budget_s=60.0)
    summary = runner.run(GRID)
    # 32 and 64 fit (1 + 25 + 25 = 51 s); 128's task is cut to the 9 s left and runs out
    assert [r.seq_len for r in summary.records] == [32, 64]
    assert summary.not_tried == 2
    assert all(timeout <= left for _, timeout, left in executor.given), executor.given
    assert executor.given[-1][1] == pytest.approx(9.0)          # the cut timeout
    done = runner.run_dir.done_point_ids()
    assert done == {p.point_id for p in GRID[:2]}               # 128 is not recorded: resumable


def test_the_probe_is_held_to_the_budget_too(tmp_path, clock):
    # a compiling-sized probe timeout (300 s) against a 5 s budget: cut to 5 s, runs out
    runner, executor = make(tmp_path, clock, {"probe": 50.0, "memory": 1.0},
                            time_budget_s=5.0)
    summary = runner.run(GRID)
    assert summary.records == [] and summary.not_tried == len(GRID)
    assert executor.given[0][1] == pytest.approx(5.0)
    assert runner.run_dir.done_point_ids() == set()


def test_without_a_budget_timeouts_are_not_cut(tmp_path, clock):
    runner, executor = make(tmp_path, clock, {"probe": 1.0, "memory": 25.0})
    summary = runner.run(GRID)
    assert len(summary.records) == len(GRID) and summary.not_tried == 0
    assert {timeout for name, timeout, _ in executor.given if name == "memory"} == {30.0}


def test_a_gate_the_method_refused_when_called_is_an_unsupported_record(tmp_path):
    """The probe's gate found the method refusing its inputs at call time (UnsupportedError:
    a limit only the shapes show): the point is recorded unsupported with that reason, not an
    error of the correctness gate."""
    refused = GateResult(False, None, None, None, "kernel: D_v above 64", unsupported=True)

    class RefusingExecutor:
        def run(self, name, *args, timeout, key=None, group=None):
            if name == "probe":
                return Outcome("ok", result={combo: ProbeResult(True, "", gate=refused)
                                             for combo in args[0]})
            raise AssertionError(f"nothing is measured after a refused gate ({name})")

        def interrupt(self) -> None:
            pass

    runner = Runner(RunDir.create(tmp_path / "run", {}),
                    RunSettings(timeout_s=30.0), executor=RefusingExecutor())
    summary = runner.run(GRID[:1])
    (record,) = summary.records
    assert record.status == "unsupported" and "D_v above 64" in record.message


def test_the_continue_line_gives_a_larger_budget_when_nothing_fitted_in_it():
    """A resume keeps the stored --time-budget: one in which no point was recorded would
    record nothing again, so the line names a larger one; otherwise the plain resume."""
    from pathlib import Path

    from harness.measure.runner import RunSummary
    from harness.scale.inprocess import budget_spent_line

    nothing = RunSummary(not_tried=16)
    line = budget_spent_line(nothing, 1.0, Path("RUN"))
    assert "--resume RUN --time-budget 60" in line and "no point fitted in 1 s" in line
    some = RunSummary(records=[object()], not_tried=3)
    assert budget_spent_line(some, 1.0, Path("RUN")).endswith("--resume RUN")
