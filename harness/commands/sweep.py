"""``run_bench.py sweep``: run a chosen grid (preset, config file, flags) into a run directory."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from harness import presets
from harness.console import ProgressListener, make_console, summary_tables, unsupported_table
from harness.errors import UsageError
from harness.hardware import fingerprint, gpu_info, hardware_summary
from harness.measure import TimingSettings
from harness.records import Point
from harness.registry import REGISTRY, device_kind
from harness.runner import Runner, RunSettings, best_device, static_check
from harness.scale.options import add_slurm_arguments
from harness.scale.shard import ShardSpec, parse_shard, select_shard
from harness.store import RunDir, default_run_path, now_iso, open_run
from harness.sweep_spec import (
    SweepSpec,
    expand,
    overrides_from,
    parse_bytes,
    parse_devices,
    read_config,
)

INPUT_DISTRIBUTION = ("q, k, v ~ N(0, 1), seeded (seed in settings); no key-padding mask; "
                      "packed documents (--documents) split T at seeded random points "
                      "(seed 0)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    grid = parser.add_argument_group("grid (comma-separated lists; ranges like 1K..128K "
                                     "double, 512..4096:+512 step)")
    grid.add_argument("--impl", help="implementations (default: all registered)")
    grid.add_argument("--seq-len", help="sequence lengths, e.g. 1024,2048 or 1K..128K")
    grid.add_argument("--head-dim", help="head dimensions, e.g. 64,128")
    grid.add_argument("--batch", help="batch sizes")
    grid.add_argument("--heads", help="head counts")
    grid.add_argument("--dtype", help="float32, float16 (fp16), bfloat16 (bf16), float64")
    grid.add_argument("--causal", help="true, false or both (bottom-right aligned when "
                                       "q-len < seq-len)")
    grid.add_argument("--kv-heads", help="key/value heads (GQA; 1 = MQA; default: = heads)")
    grid.add_argument("--q-len", help="query lengths (default: = seq-len; --seq-len is the "
                                      "key/value length; 1 = a decode step)")
    grid.add_argument("--window", help="sliding windows of LEFT keys back (right side 0 with "
                                       "--causal, LEFT otherwise); 'none' = no window")
    grid.add_argument("--alibi", help="ALiBi biases (BLOOM's slopes): true, false or both")
    grid.add_argument("--documents", help="split T into N packed documents of seeded random "
                                          "lengths")
    grid.add_argument("--pass", dest="pass_", metavar="PASS",
                      help="forward, backward, forward_backward (aliases fwd, bwd, fwd_bwd)")
    grid.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda if present, else cpu)")
    grid.add_argument("--preset", help=f"one of {', '.join(presets.PRESETS)} "
                                       f"(default {presets.DEFAULT_PRESET})")
    grid.add_argument("--config", help="TOML file with the same names as these flags; "
                                       "flags override it")
    run = parser.add_argument_group("run")
    run.add_argument("--out", help="run directory (default results/<time>-<hardware>)")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue a run, skipping recorded points")
    run.add_argument("--dry-run", action="store_true",
                     help="print the grid and what would be skipped, run nothing")
    run.add_argument("--timeout", type=float, help="seconds per worker task (default 120; "
                                                    "+600 for methods that compile)")
    run.add_argument("--max-memory", help="cap each worker, e.g. 4GB (CPU: address space above "
                                          "its start; CUDA: allocator fraction)")
    run.add_argument("--min-time", type=float, help="seconds of samples to collect (default 0.5)")
    run.add_argument("--max-repeats", type=int, help="most samples per point (default 50)")
    run.add_argument("--warmup", type=int, help="warm-up calls before sampling (default 2)")
    run.add_argument("--seed", type=int, help="input seed (default 0)")
    run.add_argument("--cooldown", type=float, default=None,
                     help="seconds to pause between implementations (default 0.5 on CUDA)")
    run.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                     help="start no point after this many seconds of measuring; points are then "
                          "taken in order of increasing T across series, and those not tried "
                          "are left for --resume")
    run.add_argument("--no-report", action="store_true", help="do not render the report")
    scale = parser.add_argument_group("scale-out (README: Running on many GPUs and on Slurm)")
    scale.add_argument("--shard", metavar="I/N",
                       help="run only the I-th of N disjoint parts of the grid (1-based), "
                            "balanced by expected cost")
    scale.add_argument("--grid-from", metavar="RUN_DIR",
                       help="take the grid and settings stored in RUN_DIR's run.json")
    scale.add_argument("--executor", choices=("local", "slurm"), default="local",
                       help="local (default: one process per visible GPU when there are "
                            "several) or slurm (a job array through submitit)")
    scale.add_argument("--shards", type=int, default=None,
                       help="number of parts for --executor slurm (default: one per series, "
                            "at most 32)")
    add_slurm_arguments(parser)


@dataclass
class SweepPlan:
    points: list[Point]          # this run's points (one shard's with --shard)
    settings: RunSettings
    out: Path
    resume: bool
    description: dict[str, Any]
    shard: ShardSpec | None = None
    grid_points: int = 0         # points in the whole grid


WORKLOAD_ARGUMENTS = ("kv_heads", "q_len", "window", "alibi", "documents")
SETTING_ARGUMENTS = ("timeout", "max_memory", "min_time", "max_repeats", "warmup", "seed",
                     "cooldown", "time_budget", "shard")


def plan(args: argparse.Namespace, *, check_devices: bool = True,
         default_device: str | None = None) -> SweepPlan:
    raw: dict[str, Any] = {}
    grid_from = getattr(args, "grid_from", None)
    if grid_from:
        raw.update(stored_grid_arguments(grid_from, "--grid-from") or {})
    if getattr(args, "config", None):
        raw.update(read_config(args.config))
    for name in ("impl", "seq_len", "head_dim", "batch", "heads", "dtype", "causal", "device",
                 "preset", "out", *WORKLOAD_ARGUMENTS, *SETTING_ARGUMENTS):
        value = getattr(args, name, None)
        if value is not None:
            raw[name] = value
    if getattr(args, "pass_", None) is not None:
        raw["pass"] = args.pass_
    resume = getattr(args, "resume", None)
    if resume:
        raw = resumed_arguments(resume, raw)
    overrides = overrides_from({k: v for k, v in raw.items() if k not in SETTING_ARGUMENTS})
    if "impl" in overrides.values:
        REGISTRY.resolve(overrides.values["impl"])  # unknown names: exit 2, listing valid ones
    devices = overrides.values.get("device") or (default_device or best_device(),)
    preset_name = raw.get("preset", presets.DEFAULT_PRESET)
    groups: list[SweepSpec] = []
    for device in parse_devices(devices):
        groups.extend(overrides.apply(g) for g in presets.preset_groups(preset_name, device))
    points = expand(groups, REGISTRY.names())
    validate_points(points, check_devices=check_devices)
    shard = parse_shard(raw["shard"]) if raw.get("shard") is not None else None
    grid_points = len(points)
    if shard is not None:
        points = select_shard(points, shard, family_of)
    timing = TimingSettings(
        warmup=int(raw.get("warmup", 2)), min_time_s=float(raw.get("min_time", 0.5)),
        max_repeats=int(raw.get("max_repeats", 50)))
    if timing.warmup < 0 or timing.min_time_s < 0 or timing.max_repeats < 1:
        raise UsageError("--warmup and --min-time must be >= 0 and --max-repeats >= 1")
    timeout = float(raw.get("timeout", 120.0))
    if timeout <= 0:
        raise UsageError(f"--timeout: must be positive, got {timeout:g}")
    max_memory = parse_bytes(raw["max_memory"]) if raw.get("max_memory") is not None else None
    cooldown = float(raw["cooldown"]) if raw.get("cooldown") is not None else (
        0.5 if any(device_kind(d) == "cuda" for d in devices) else 0.0)
    budget = float(raw["time_budget"]) if raw.get("time_budget") is not None else None
    if budget is not None and budget <= 0:
        raise UsageError(f"--time-budget: must be positive, got {budget:g}")
    settings = RunSettings(timeout_s=timeout, max_memory_bytes=max_memory, timing=timing,
                           seed=int(raw.get("seed", 0)), impl_modules=tuple(
                               getattr(args, "impl_module", []) or []), cooldown_s=cooldown,
                           time_budget_s=budget)
    out = Path(resume) if resume else Path(raw["out"]) if raw.get("out") else None
    description = {"arguments": {k: v for k, v in raw.items() if k != "out"},
                   "preset": preset_name, "overrides": {k: list(v) for k, v in
                                                        overrides.values.items()},
                   "config_file": getattr(args, "config", None),
                   "input_distribution": INPUT_DISTRIBUTION}
    return SweepPlan(points, settings, out or Path(), bool(resume), description, shard,
                     grid_points)


def family_of(impl: str) -> str:
    return REGISTRY.get(impl).family if impl in REGISTRY.names() else "exact"


GRID_ARGUMENTS = ("impl", "seq_len", "head_dim", "batch", "heads", "dtype", "causal", "device",
                  "preset", "pass", *WORKLOAD_ARGUMENTS)


def resumed_arguments(resume: str, given: dict[str, Any]) -> dict[str, Any]:
    """On --resume without grid flags, the grid (and settings) of the run being resumed."""
    if any(name in given for name in GRID_ARGUMENTS):
        return given
    stored = stored_grid_arguments(resume, "--resume")
    return given if stored is None else {**stored, **given}


def stored_grid_arguments(run_dir: str, flag: str) -> dict[str, Any] | None:
    """The grid flags stored in RUN_DIR's run.json; refused for a merge of different grids."""
    meta = open_run(run_dir).metadata()
    if meta.get("grids"):
        raise UsageError(f"{flag} {run_dir}: this run merges {len(meta['grids'])} different "
                         "grids, so it has no one grid to take; give the grid flags")
    return (meta.get("grid") or {}).get("arguments")


def validate_points(points: list[Point], *, check_devices: bool = True) -> None:
    """Bad input that no implementation could run: one clear line, exit 2."""
    if not points:
        raise UsageError("the grid is empty")
    for device in sorted({p.device for p in points}):
        kind = device_kind(device)
        if kind == "cuda" and not check_devices:
            continue   # checked where the points run (e.g. on a Slurm node, not the login node)
        if kind == "cuda":
            from harness.frameworks import torch_fw

            present = torch_fw.device_present(device)
            if not present:
                raise UsageError(f"--device {device}: {present.reason}")
        for dtype in sorted({p.dtype for p in points if p.device == device}):
            if not any(static_check(REGISTRY.get(p.impl), p) is None for p in points
                       if p.device == device and p.dtype == dtype):
                raise UsageError(f"--dtype {dtype}: no selected implementation supports it on "
                                 f"{device}")


def run(args: argparse.Namespace, *, default_report: bool = False) -> int:
    console = make_console()
    executor = getattr(args, "executor", "local")
    if executor == "slurm":
        from harness.scale import slurm

        return slurm.run_sweep(args, console)
    sweep = plan(args)
    if args.dry_run:
        return dry_run(sweep, console)
    if sweep.shard is None:
        from harness.scale import local

        gpus = local.gpus_for(sweep.points)
        if len(gpus) > 1:
            return local.run_sweep_per_gpu(args, sweep, gpus, console)
    machine = fingerprint()
    out = sweep.out if sweep.out != Path() else default_run_path(machine["hardware_tag"])
    metadata = {
        "kind": "speed", "command": sys.argv, "started_at": now_iso(), "machine": machine,
        "settings": sweep.settings.as_dict(), "grid": sweep.description,
        "points": len(sweep.points),
    }
    if sweep.shard is not None:
        metadata["shard"] = {"index": sweep.shard.index, "count": sweep.shard.count,
                             "grid_points": sweep.grid_points,
                             "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                             "slurm_job_id": os.environ.get("SLURM_JOB_ID")}
    run_dir = RunDir.create(out, metadata, resume=sweep.resume)
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
        return 130
    if default_report and not getattr(args, "no_report", False):
        render_report(run_dir.path, console)
    return 0


def print_run_summary(run_dir: RunDir, console: Console) -> None:
    """The end-of-run tables (median time per implementation x T) and counts per status."""
    all_records = [r for r in run_dir.records() if r.kind == "speed"]
    for table in summary_tables(all_records):
        console.print(table)
    table = unsupported_table(all_records)
    if table is not None:
        console.print(table)
    counts = {s: sum(r.status == s for r in all_records)
              for s in ("ok", "oom", "timeout", "error", "unsupported", "skipped")}
    console.print("records: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v) +
                  f"  ->  {run_dir.results_path}")


def render_report(run_path: Path, console: Console) -> None:
    from harness.report import render_report as render

    console.print(f"report: {render([run_path])}")


def dry_run(sweep: SweepPlan, console: Console) -> int:
    from rich.table import Table

    preset = sweep.description.get("preset")
    note = presets.note(preset, {p.device for p in sweep.points}) if preset else ""
    if note:
        console.print(f"preset {preset}: {note}")
    table = Table(title=f"dry run: {len(sweep.points)} point(s) (probes and the correctness "
                        f"gate run at run time)", title_justify="left")
    for column in ("impl", "device", "dtype", "causal", "pass", "B", "H", "D", "workload",
                   "seq_len", "plan"):
        table.add_column(column)
    groups: dict[tuple, list[Point]] = {}
    for p in sweep.points:
        groups.setdefault(p.series_key(), []).append(p)
    will_run = 0
    for items in groups.values():
        first = items[0]
        reason = static_check(REGISTRY.get(first.impl), first)
        will_run += len(items) if reason is None else 0
        seq = ",".join(str(p.seq_len) for p in items)
        table.add_row(first.impl, first.device, first.dtype, str(first.causal), first.pass_,
                      str(first.batch), str(first.heads), str(first.head_dim),
                      first.workload_label() or "-", seq, "[green]run[/]" if reason is None
                      else f"[dim]skip: {reason}[/]")
    console.print(table)
    console.print(f"{will_run} point(s) would run, {len(sweep.points) - will_run} skipped as "
                  f"unsupported")
    return 0

