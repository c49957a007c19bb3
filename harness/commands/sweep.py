"""``run_bench.py sweep``: run a chosen grid (preset, config file, flags) into a run directory."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path
from typing import Any

from rich.console import Console

from harness.contract.axes import axes
from harness.contract.records import L2_STATES
from harness.grid import presets
from harness.measure.progress import dry_run
from harness.console import make_console
from harness.errors import UsageError
from harness.grid.plan import SweepRequest
from harness.grid.settings import ISOLATION_MODES
from harness.scale.executors import EXECUTORS, ExecutorOptions, make_executor
from harness.scale.options import SlurmOptions, add_slurm_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    grid = parser.add_argument_group("grid (comma-separated lists; ranges like 1K..128K "
                                     "double, 512..4096:+512 step)")
    grid.add_argument("--impl", help="implementations (default: all registered)")
    add_axis_arguments(grid)
    grid.add_argument("--preset", help=f"one of {', '.join(presets.PRESETS)} "
                                       f"(default {presets.DEFAULT_PRESET})")
    grid.add_argument("--config", help="TOML file with the same names as these flags; "
                                       "flags override it")
    run = parser.add_argument_group("run")
    run.add_argument("--out", help="run directory (default results/<time>-<hardware>)")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue a run, skipping recorded points")
    run.add_argument("--dry-run", action="store_true",
                     help="print the grid, what would be skipped and the predicted time of "
                          "this grid and of every preset on every device, run nothing")
    run.add_argument("--costs-from", metavar="RUN_DIR",
                     help="with --dry-run: calibrate the prediction with a run directory's "
                          "measured worker start-up, compile and call costs")
    run.add_argument("--timeout", type=float, help="seconds per worker task (default 120; "
                                                    "+600 for methods that compile)")
    run.add_argument("--max-memory", help="cap each worker, e.g. 4GB (CPU: address space above "
                                          "its start; CUDA: allocator fraction)")
    run.add_argument("--min-time", type=float, help="seconds of samples to collect (default 0.5)")
    run.add_argument("--max-repeats", type=int, help="most samples per point (default 200)")
    run.add_argument("--noise-target", type=float,
                     help="past --min-time, sample on until the samples' IQR / median is at "
                          "most this (default 0.05) or --max-time")
    run.add_argument("--max-time", type=float,
                     help="seconds of samples at most while the spread is above "
                          "--noise-target (default 2.0, or --min-time if larger)")
    run.add_argument("--warmup", type=int, help="warm-up calls before sampling (default 2)")
    run.add_argument("--seed", type=int, help="input seed (default 0)")
    run.add_argument("--cooldown", type=float, default=None,
                     help="seconds to pause between implementations (default 0.5 on CUDA)")
    run.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                     help="start no point after this many seconds of measuring; points are then "
                          "taken in order of increasing T across series, and those not tried "
                          "are left for --resume")
    run.add_argument("--isolate", choices=ISOLATION_MODES, default=None,
                     help="worker (default): one reused worker per implementation, device and "
                          "dtype measures point after point, replaced after any failure; point: "
                          "two fresh processes per point (memory, then timing)")
    run.add_argument("--compile-cache", metavar="DIR|run", default=None,
                     help="Inductor/Triton/JAX compile cache every worker uses and fills "
                          "(default: $ATTNBENCH_COMPILE_CACHE, else ~/.cache/attnbench/compile, "
                          "shared by your runs); 'run': the run directory's own compile-cache/, "
                          "so the run compiles every shape itself")
    run.add_argument("--no-report", action="store_true",
                     help="run: do not render the report after the benchmark (sweep never "
                          "renders one; accepted there for scripts that pass it to both)")
    run.add_argument("--serve-rounds", action="store_true",
                     help="for run_bench.py ab: plan and gate the grid once, then measure "
                          "points on request (JSON lines on stdin/stdout; harness/measure/round_server.py)")
    run.add_argument("--timer", choices=("events", "cudagraph"), default=None,
                     help="CUDA timer: events around each call (default) or cudagraph (the "
                          "call captured once in a CUDA graph and replayed between events)")
    run.add_argument("--timing-basis", choices=("auto", "device_events", "host_sync"),
                     default=None,
                     help="what a time sample is, the same for every framework of the run: "
                          "device_events (CUDA events around the call: the GPU's time; torch "
                          "only), host_sync (wall clock around the call and a wait for its "
                          "result: dispatch and synchronisation included; every framework, and "
                          "the CPU). Default auto: device_events when every method timed on "
                          "CUDA is torch, host_sync as soon as one is not (JAX)")
    run.add_argument("--l2", choices=L2_STATES, default=None,
                     help="GPU cache state at each sample: cold (default: a buffer larger than "
                          "L2 written before each sample, untimed, for torch and JAX) or warm "
                          "(nothing written: what the previous call left in L2 may serve the "
                          "next). CPU samples are warm either way: no CPU cache is flushed")
    run.add_argument("--reuse-peaks", action="store_true", default=None,
                     help="take the machine's GEMM and copy peaks from the cache under the "
                          "results folder when present, instead of measuring them (a few "
                          "seconds) at the start of the run")
    scale = parser.add_argument_group("scale-out (docs/scale-out.md)")
    scale.add_argument("--shard", metavar="I/N",
                       help="run only the I-th of N disjoint parts of the grid (1-based), "
                            "balanced by expected cost")
    scale.add_argument("--grid-from", metavar="RUN_DIR",
                       help="take the grid and settings stored in RUN_DIR's run.json")
    scale.add_argument("--executor", choices=tuple(EXECUTORS), default="local",
                       help="local (default: one process per visible GPU when there are "
                            "several, else in-process), in-process, per-gpu, or slurm (a job "
                            "array through submitit)")
    scale.add_argument("--shards", type=int, default=None,
                       help="number of parts for --executor slurm (default: one per series, "
                            "at most 32)")
    add_slurm_arguments(parser)


def add_axis_arguments(group: Any, *, help: bool = True) -> None:
    """One flag per axis of the table (harness.contract.axes), plug-in axes included: the
    modules that declare them are imported before the parser is built (harness.cli)."""
    for axis in axes():
        group.add_argument(axis.flag, dest=axis.dest, default=None,
                           metavar=axis.name.upper() if axis.name == "pass" else None,
                           help=(axis.help or f"values of {axis.name}") if help
                           else argparse.SUPPRESS)


def request_from_args(args: argparse.Namespace) -> SweepRequest:
    """The parsed flags as a typed request (None: not given)."""
    values = {f.name: getattr(args, f.name, None) for f in fields(SweepRequest)
              if f.name not in ("impl_modules", "extra_axes")}
    extra = tuple((a.name, getattr(args, a.dest)) for a in axes()
                  if a.field is None and getattr(args, a.dest, None) is not None)
    return SweepRequest(**values, extra_axes=extra,
                        impl_modules=tuple(getattr(args, "impl_module", None) or ()))


def executor_options(args: argparse.Namespace) -> ExecutorOptions:
    """What the executor needs from the flags (Slurm options only for --executor slurm)."""
    shards = getattr(args, "shards", None)
    if shards is not None and shards < 1:
        raise UsageError(f"--shards: must be at least 1, got {shards}")
    if getattr(args, "executor", "local") != "slurm":
        return ExecutorOptions()
    return ExecutorOptions(slurm=SlurmOptions.from_args(args), shards=args.shards)


def run(args: argparse.Namespace, *, default_report: bool = False) -> int:
    if getattr(args, "serve_rounds", False):
        return serve_rounds(args)
    console = make_console()
    executor = make_executor(getattr(args, "executor", "local"), executor_options(args))
    if getattr(args, "costs_from", None) and not args.dry_run:
        raise UsageError("--costs-from: calibrates --dry-run's prediction; give --dry-run too")
    if args.dry_run and executor.name != "slurm":
        # a plan for a device this machine lacks (a CUDA sweep seen from a laptop) is shown
        # by capability, not refused: nothing runs
        from harness.store.resume import plan_sweep

        sweep = plan_sweep(request_from_args(args), check_devices=False)
    else:
        sweep = executor.plan(request_from_args(args))
    if args.dry_run:
        return dry_run(sweep, console, getattr(args, "costs_from", None))
    result = executor.run(sweep, console)
    if result.exit_status == 0 and result.complete and default_report and \
            not getattr(args, "no_report", False):
        render_report(result.run_path, console)
    return result.exit_status


def serve_rounds(args: argparse.Namespace) -> int:
    from harness.store.resume import plan_sweep as sweep_plan
    from harness.measure.round_server import serve

    if args.dry_run or args.resume or getattr(args, "shard", None) or \
            getattr(args, "executor", "local") not in ("local", "in-process"):
        raise UsageError("--serve-rounds: measures one grid in this process; not with "
                         "--dry-run, --resume, --shard or another executor")
    return serve(sweep_plan(request_from_args(args)))


def render_report(run_path: Path, console: Console) -> None:
    from harness.report import render_report as render

    console.print(f"report: {render([run_path])}")
