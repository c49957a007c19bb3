"""The in-process executor: the sweep's points run by this process's Runner (each point in its
own worker processes) into one run directory. What ``sweep`` does on a CPU or one GPU, and what
each shard process of the other executors runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from harness.console import ProgressListener, print_run_summary
from harness.hardware import fingerprint, gpu_info, hardware_summary
from harness.plan import SweepPlan
from harness.run_metadata import run_metadata, shard_info
from harness.runner import Runner
from harness.store import RunDir, default_run_path, now_iso


@dataclass(frozen=True)
class SweepResult:
    exit_status: int
    run_path: Path
    complete: bool = True        # every point has its record: a report may be rendered now


def run_in_process(sweep: SweepPlan, console: Console) -> SweepResult:
    machine = fingerprint()
    out = sweep.out if sweep.out is not None else default_run_path(machine["hardware_tag"])
    metadata = run_metadata("speed", sweep=sweep, machine=machine, shard=shard_info(sweep))
    run_dir = RunDir.create(out, metadata.as_dict(), resume=sweep.resume)
    shard_text = f" (shard {sweep.shard} of {sweep.grid_points})" if sweep.shard else ""
    console.print(f"[bold]attnbench[/] {len(sweep.points)} point(s){shard_text} on "
                  f"{hardware_summary(machine)} -> {run_dir.path}")
    runner = Runner(run_dir, sweep.settings, hardware_id=machine["hardware_id"],
                    listener=ProgressListener(console, quiet_unsupported=True))
    summary = runner.run(sweep.points, resume=sweep.resume)
    run_dir.update_metadata(finished_at=now_iso(), interrupted=summary.interrupted,
                            not_tried_time_budget=summary.not_tried, gpu_end=gpu_info())
    print_run_summary(run_dir, console)
    if summary.not_tried:
        console.print(f"[yellow]time budget spent[/]: {summary.not_tried} point(s) not tried; "
                      f"continue with: python run_bench.py sweep --resume {run_dir.path}")
    if summary.interrupted:
        console.print(f"[yellow]interrupted[/]: everything measured so far is in {run_dir.path}; "
                      f"continue with: python run_bench.py sweep --resume {run_dir.path}")
        return SweepResult(130, run_dir.path, complete=False)
    return SweepResult(0, run_dir.path)
