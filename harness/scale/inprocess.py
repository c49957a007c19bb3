"""The in-process executor: the sweep's points run by this process's Runner (each point in its
own worker processes) into one run directory. What ``sweep`` does on a CPU or one GPU, and what
each shard process of the other executors runs."""

from __future__ import annotations

import math

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from harness.metrics import peaks as peaks_mod
from harness.measure.progress import ProgressListener, print_run_summary
from harness.measure.overhead import Overhead
from harness.measure.runner import make_executor
from harness.store.hardware import fingerprint, gpu_info, hardware_summary
from harness.metrics.peaks import peaks_metadata
from harness.grid.plan import SweepPlan
from harness.store.run_metadata import run_metadata, shard_info
from harness.measure.runner import Runner
from harness.errors import UsageError
from harness.store.run_dir import RunDir, default_run_path, now_iso, open_run


@dataclass(frozen=True)
class SweepResult:
    exit_status: int
    run_path: Path
    complete: bool = True        # every point has its record: a report may be rendered now


def peaks_measurer(sweep: SweepPlan, executor: Any, console: Console,
                   overhead: Overhead | None = None, role: str = "start"):
    """device -> the executor's outcome of one peaks measurement (``role``: start or end of
    the run) in a worker, its time counted in the run's overhead."""
    context = sweep.settings.worker_context()

    def measure(device: str) -> Any:
        console.print(f"measuring the peaks of {device} (GEMM, copy; {role} of the run) ...")
        stats = getattr(executor, "stats", None)
        started_before = stats.start_s if stats is not None else 0.0
        outcome = executor.run("peaks", device, role, context,
                               timeout=sweep.settings.probe_timeout_s, key=("peaks", device))
        if overhead is not None:
            overhead.add_task(outcome.wall_s, outcome.task_s, outcome.compile_s)
            # a reused pool times its worker's start apart from the task (the run's first
            # start also boots the forkserver, importing torch and JAX): worker start-up, not
            # the parent's time, as when the peaks come from the cache and a point's worker
            # is the first
            if stats is not None:
                overhead.add_start(stats.start_s - started_before)
        return outcome

    return measure


def machine_peaks(sweep: SweepPlan, machine: dict[str, Any], executor: Any,
                  cache_root: Path, console: Console,
                  overhead: Overhead | None = None) -> dict[str, Any]:
    """device -> run.json's peaks: measured in a worker (cached under the results folder) or,
    with --reuse-peaks, read from that cache."""
    return peaks_mod.obtain(sorted({p.device for p in sweep.points}),
                            peaks_measurer(sweep, executor, console, overhead),
                            cache_root=cache_root, hardware_id=machine["hardware_id"],
                            reuse=sweep.reuse_peaks,
                            gpu_names=lambda device: peaks_mod.gpu_name(machine, device))


def end_peaks(sweep: SweepPlan, machine: dict[str, Any], executor: Any, cache_root: Path,
              console: Console, peaks: dict[str, Any],
              overhead: Overhead | None = None) -> dict[str, Any]:
    """The peaks measured once more at the end of the run (the machine may have been busier
    at the start than while the points ran): every measurement kept, the best at the top.
    Not with --reuse-peaks (the run measures no peaks) nor where none was measured."""
    measured = {d: p for d, p in peaks.items() if peaks_mod.measurements(p)}
    if sweep.reuse_peaks or not measured:
        return peaks
    again = peaks_mod.measure_again(measured, peaks_measurer(sweep, executor, console, overhead,
                                                             role="end"), "end",
                                    cache_root=cache_root, hardware_id=machine["hardware_id"])
    return {**peaks, **again}


def finished_peaks(sweep: SweepPlan, run_dir: RunDir, earlier: dict[str, Any] | None,
                   hardware_id: str) -> dict[str, Any] | None:
    """The peaks of a resumed run with no point left to measure, as it holds them (nothing to
    set against new peaks, so none are measured); None when points are left, the run was made
    on another machine, or a device has no measured peaks in it."""
    if not sweep.resume or not earlier:
        return None
    if {p.point_id for p in sweep.points} - run_dir.done_point_ids():
        return None
    if str((earlier.get("machine") or {}).get("hardware_id") or "") != hardware_id:
        return None
    held = peaks_mod.by_device(earlier)
    devices = {p.device for p in sweep.points}
    if not all(peaks_mod.measurements(held.get(d)) for d in devices):
        return None
    return {d: held[d] for d in sorted(devices)}


def refuse_mixed_resume(earlier: dict | None, machine: dict, out: object) -> None:
    """A resumed run's remaining points must be measured with the threads per worker its first
    ones had (OMP_NUM_THREADS); otherwise the run would mix two configurations without a word.
    Refused with one line naming both, before run.json is touched."""
    if not earlier:
        return
    before = earlier.get("machine") or {}
    threads, now = before.get("torch_threads"), machine.get("torch_threads")
    if threads and now and threads != now:
        raise UsageError(f"--resume {out}: the run was measured with {threads} thread(s) per "
                         f"worker, this process would use {now}; resume with "
                         f"OMP_NUM_THREADS={threads} (times with other thread counts are "
                         f"not comparable)")


def run_isolation(run_dir: RunDir, mode: str, resume: bool) -> str:
    """run.json's ``isolation``: this run's mode, or ``mixed`` when a resumed run's earlier
    points were measured in another (each record says its own)."""
    earlier = run_dir.metadata().get("isolation") if resume else None
    return mode if earlier in (None, mode) else "mixed"


def budget_spent_line(summary: Any, budget_s: float | None, out: Path) -> str:
    """What to do once --time-budget stopped the run. The resumed run keeps the stored budget,
    so a budget in which no point was recorded (worker start-up, probes and peaks alone take
    seconds) would record nothing again, however often resumed: then the line says so and
    gives a larger one."""
    line = (f"[yellow]time budget spent[/]: {summary.not_tried} point(s) not tried; continue "
            f"with: python run_bench.py sweep --resume {out}")
    if summary.records or not budget_s:
        return line
    return (line + f" --time-budget {max(60, math.ceil(4 * budget_s))} (no point fitted in "
            f"{budget_s:g} s, which a resume would keep)")


def run_in_process(sweep: SweepPlan, console: Console) -> SweepResult:
    machine = fingerprint()
    out = sweep.out if sweep.out is not None else default_run_path(machine["hardware_tag"])
    metadata = run_metadata("speed", sweep=sweep, machine=machine, shard=shard_info(sweep))
    # a resumed run's peaks: the earlier sessions' measurements (on this machine) stay in them
    earlier = open_run(out).metadata() if sweep.resume else None
    refuse_mixed_resume(earlier, machine, out)      # before run.json is touched
    run_dir = RunDir.create(out, metadata.as_dict(), resume=sweep.resume)
    shard_text = f" (shard {sweep.shard} of {sweep.grid_points})" if sweep.shard else ""
    console.print(f"[bold]attnbench[/] {len(sweep.points)} point(s){shard_text} on "
                  f"{hardware_summary(machine)} -> {run_dir.path}")
    executor = make_executor(sweep.settings.isolate)
    overhead = Overhead()
    try:
        kept = finished_peaks(sweep, run_dir, earlier, machine["hardware_id"])
        peaks = kept if kept is not None else peaks_mod.with_earlier(
            machine_peaks(sweep, machine, executor, run_dir.path.parent, console, overhead),
            earlier, machine["hardware_id"])
        run_dir.update_metadata(**peaks_metadata(peaks),
                                isolation=run_isolation(run_dir, executor.mode, sweep.resume))
        runner = Runner(run_dir, sweep.settings, executor=executor,
                        hardware_id=machine["hardware_id"],
                        listener=ProgressListener(console, quiet_unsupported=True), peaks=peaks,
                        overhead=overhead)
        summary = runner.run(sweep.points, resume=sweep.resume)
        if not summary.interrupted and kept is None:
            peaks = end_peaks(sweep, machine, executor, run_dir.path.parent, console, peaks,
                              overhead)
            run_dir.update_metadata(**peaks_metadata(peaks))
        run_dir.update_metadata(finished_at=now_iso(), interrupted=summary.interrupted,
                                not_tried_time_budget=summary.not_tried, gpu_end=gpu_info(),
                                overhead=summary.overhead.as_dict())
    finally:
        executor.close()
        run_dir.release()   # one writer per run directory: held for the whole run
    print_run_summary(run_dir, console)
    console.print(summary.overhead.line())
    if summary.not_tried:
        console.print(budget_spent_line(summary, sweep.settings.time_budget_s, run_dir.path))
    if summary.interrupted:
        console.print(f"[yellow]interrupted[/]: everything measured so far is in {run_dir.path}; "
                      f"continue with: python run_bench.py sweep --resume {run_dir.path}")
        return SweepResult(130, run_dir.path, complete=False)
    return SweepResult(0, run_dir.path)
