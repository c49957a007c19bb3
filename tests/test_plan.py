"""The sweep plan from a typed request, and executors chosen by name (no argparse below
harness.commands)."""

from __future__ import annotations

import pytest

from harness.errors import UsageError
from harness.grid.plan import SweepRequest, plan
from harness.scale.executors import EXECUTORS, ExecutorOptions, make_executor


def test_a_request_plans_points_and_settings_without_argparse():
    sweep = plan(SweepRequest(impl="hrr_torch,softmax_torch", seq_len="64,128", head_dim="16",
                              heads="2", pass_="fwd", device="cpu", warmup=1, seed=3))
    assert len(sweep.points) == 4 and sweep.out is None and not sweep.resume
    assert sweep.settings.seed == 3 and sweep.settings.timing.warmup == 1
    assert sweep.description["arguments"]["pass"] == "fwd"
    with pytest.raises(UsageError, match="--timeout"):
        plan(SweepRequest(impl="hrr_torch", seq_len="64", device="cpu", timeout=0))


def test_executors_are_chosen_by_name_and_plan_the_same_request():
    assert {"local", "in-process", "per-gpu", "slurm"} <= set(EXECUTORS)
    request = SweepRequest(impl="hrr_torch", seq_len="64", head_dim="16", device="cpu")
    for name in ("local", "in-process", "per-gpu"):
        executor = make_executor(name, ExecutorOptions())
        assert executor.name == name
        assert [p.point_id for p in executor.plan(request).points] == \
            [p.point_id for p in plan(request).points]
    with pytest.raises(UsageError, match="unknown executor 'nope'"):
        make_executor("nope")


def test_the_in_process_executor_runs_a_plan(tmp_path, capsys):
    from harness.console import make_console

    request = SweepRequest(impl="softmax_torch", seq_len="64", head_dim="8", heads="1",
                           pass_="fwd", device="cpu", out=str(tmp_path / "run"),
                           min_time=0.0, max_repeats=2, warmup=0)
    executor = make_executor("in-process")
    result = executor.run(executor.plan(request), make_console())
    assert result.exit_status == 0 and result.run_path == tmp_path / "run"
    assert (tmp_path / "run" / "results.jsonl").read_text().count("\n") == 1
