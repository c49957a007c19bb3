"""``run_bench.py lra``: train and evaluate a classifier per implementation on an LRA task
(or ``bytes``), writing accuracy records into a run directory: one record per task x
implementation x seed (``--seed 0,1,2``); with ``--tune`` each record is a grid search chosen
on validation only (harness.accuracy.tune).

Launched by ``torchrun`` (or any launcher setting RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT) it trains each run with DistributedDataParallel over the processes, with the
preset's batch as the global batch; rank 0 alone writes the run directory and prints
(harness.accuracy.distributed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.errors import UsageError
from harness.contract.parsers import parse_names as parse_list

if TYPE_CHECKING:
    from harness.accuracy.training_run import TrainingRunSettings
    from harness.accuracy.tasks.common import TaskData
    from harness.accuracy.tune import TuneGrid
    from harness.contract.records import AccuracyRecord
    from harness.contract.registry import Implementation
    from harness.store.run_dir import RunDir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from harness.accuracy.training_presets import PRESETS
    from harness.accuracy.tasks import TASKS

    parser.add_argument("--task", required=True,
                        help=f"comma-separated tasks: {', '.join(TASKS)}")
    parser.add_argument("--impl", required=True, help="comma-separated implementation names")
    parser.add_argument("--preset", default="smoke", choices=list(PRESETS),
                        help="smoke: tiny, CPU-sized; paper: the published settings")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="the LRA release (or a generated set), aclImdb, "
                             "cifar-10-batches-py, or for bytes a folder with one sub-folder "
                             "per class")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seed", default="0",
                        help="comma-separated seeds, e.g. 0,1,2: one record per task x "
                             "implementation x seed (the report gives mean, std and n)")
    parser.add_argument("--tune", nargs="+", default=None, metavar="NAME=V1,V2",
                        help="grid search per task x implementation x seed, chosen on "
                             "validation accuracy only, the same grid for every "
                             "implementation; e.g. --tune lr=1e-3,3e-3 dropout=0,0.1, or a "
                             "TOML file of arrays. Settings: lr, weight_decay, label_smoothing, "
                             "warmup_steps, batch_size, epochs, dropout, layers")
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--seq-len", type=int, default=None,
                        help="longest sequence kept (bytes: the first T bytes of each file)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--pooling", choices=("mean", "cls"), default=None)
    parser.add_argument("--dropout", type=float, default=None,
                        help="dropout rate of the model (default: the preset's)")
    parser.add_argument("--max-train", type=int, default=None, help="examples of train to use")
    parser.add_argument("--max-val", type=int, default=None)
    parser.add_argument("--max-test", type=int, default=None)
    parser.add_argument("--difficulty", default="hard", choices=("easy", "medium", "hard"),
                        help="pathfinder/pathx folder: curv_baseline, curv_contour_length_9, "
                             "curv_contour_length_14 (default, as LRA)")
    parser.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda if "
                                                       "available)")
    parser.add_argument("--no-amp", action="store_true", help="no bfloat16 autocast on CUDA")
    parser.add_argument("--out", type=Path, default=None, help="run directory to write")
    parser.add_argument("--resume", nargs="?", const=True, default=None, metavar="RUN_DIR",
                        help="continue RUN_DIR (or --out), skipping runs already recorded; "
                             "as in sweep")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--executor", choices=("local", "slurm"), default="local",
                        help="local (this process, or each process of torchrun) or slurm "
                             "(one job of --slurm-nodes x --slurm-tasks DDP processes)")
    from harness.scale.options import add_slurm_arguments

    add_slurm_arguments(parser, distributed=True)


def parse_names(text: str, what: str) -> list[str]:
    """Comma-separated names, each once (a task given twice would train and record it twice
    under one point id)."""
    names = list(parse_list(text, flag=f"--{what}"))
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(f"--{what}: {', '.join(twice)} given twice")
    return names


def check_rates(lr: float | None, dropout: float | None) -> None:
    """--lr a finite positive number, --dropout in [0, 1): a NaN or negative rate would train
    (or diverge) for hours and be recorded."""
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise UsageError(f"--lr: must be a finite number above 0, got {lr}")
    if dropout is not None and not (math.isfinite(dropout) and 0 <= dropout < 1):
        raise UsageError(f"--dropout: must lie in [0, 1), got {dropout}")


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> [0, 1, 2]: non-negative integers, each once."""
    seeds = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            seed = int(part)
        except ValueError:
            raise UsageError(f"--seed: {part!r} is not an integer (give e.g. 0,1,2)") from None
        if seed < 0:
            raise UsageError(f"--seed: seeds must not be negative, got {seed}")
        if seed in seeds:
            raise UsageError(f"--seed: {seed} is given twice")
        seeds.append(seed)
    if not seeds:
        raise UsageError("--seed: give at least one seed")
    return seeds


def pick_device(requested: str | None) -> str:
    import torch

    if requested is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {requested}: no CUDA device here")
    if requested.split(":")[0] not in ("cpu", "cuda"):
        raise UsageError(f"--device must be cpu or cuda[:N], got {requested!r}")
    return requested


def run(args: argparse.Namespace) -> int:
    from harness.accuracy import distributed, tasks, tune
    from harness.accuracy import training_presets as presets
    from harness.accuracy.training_run import (
        RankFailure,
        TrainingRunSettings,
        base_record,
        summary_row,
    )
    from harness.accuracy.tasks.common import Limits
    from harness.contract.records import point_id
    from harness.contract.registry import REGISTRY
    from harness.store.run_dir import now_iso

    task_names = parse_names(args.task, "task")
    for name in task_names:
        tasks.get(name)
    impls = REGISTRY.resolve(parse_names(args.impl, "impl"))
    seeds = parse_seeds(args.seed)
    check_rates(args.lr, args.dropout)
    grid = tune.parse_grid(args.tune) if args.tune else None
    for value, flag in ((args.epochs, "epochs"), (args.layers, "layers"),
                        (args.seq_len, "seq-len"), (args.batch_size, "batch-size"),
                        (args.max_train, "max-train"), (args.max_val, "max-val"),
                        (args.max_test, "max-test")):
        if value is not None and value < 1:
            raise UsageError(f"--{flag} must be at least 1, got {value}")
    if args.executor == "slurm":   # checked above here, run on the nodes
        from harness.console import make_console
        from harness.scale import slurm

        from harness.scale.options import SlurmOptions

        options = SlurmOptions.from_args(args)
        target = args.resume if isinstance(args.resume, str) else args.out
        return slurm.run_lra(options, args.argv, target, make_console())
    if isinstance(args.resume, str):
        if args.out is not None and Path(args.out) != Path(args.resume):
            raise UsageError("--resume RUN_DIR and --out name different directories")
        args.out = Path(args.resume)
    if args.resume and args.out is None:
        raise UsageError("--resume needs a run directory (--resume RUN_DIR)")
    device = pick_device(args.device)
    dist = distributed.from_env(os.environ, device.split(":")[0])
    device = distributed.resolve_device(dist, device)

    planned = []
    for name in task_names:
        preset = presets.get(args.preset, name).with_overrides(
            epochs=args.epochs, layers=args.layers, seq_len=args.seq_len,
            batch_size=args.batch_size, max_train=args.max_train, max_val=args.max_val,
            max_test=args.max_test, lr=args.lr, pooling=args.pooling, dropout=args.dropout)
        if name == "bytes" and args.preset == "paper" and args.batch_size is None:
            preset = replace(preset, train=replace(
                preset.train, batch_size=presets.bytes_batch_size(preset.seq_len)))
        limits = Limits(seq_len=preset.seq_len, max_train=preset.max_train,
                        max_val=preset.max_val, max_test=preset.max_test)
        distributed.check_batch_size(preset.train.batch_size, dist)
        for setting in grid.settings() if grid else []:     # bad grid values: exit 2 now
            distributed.check_batch_size(tune.apply(preset, setting).train.batch_size, dist)
        planned.append((name, preset, limits))

    def load(name: str, limits: Limits, seed: int) -> TaskData:
        return tasks.load(name, args.data_dir, limits, seed=seed, difficulty=args.difficulty)

    if args.resume and args.out is not None:
        refuse_other_settings(Path(args.out), [(name, preset) for name, preset, _ in planned],
                              amp=TrainingRunSettings(args.preset, planned[0][1],
                                                      device=device, amp=not args.no_amp,
                                                      dist=dist).uses_amp,
                              tuned=grid is not None)
    # every task loads (first seed) before the run directory exists: missing data is exit 2
    first = {name: load(name, limits, seeds[0]) for name, _, limits in planned}

    records: list[AccuracyRecord] = []
    try:
        with distributed.process_group(dist):
            opened = distributed.broadcast_from_main(
                open_run_dir(args, dist.record_fields()) if dist.is_main else None, dist)
            if isinstance(opened, str):            # rank 0 could not open it: every rank stops
                raise UsageError(opened)
            run_dir, machine, done = opened
            for name, preset, limits in planned:
                for seed in seeds:
                    data = first.pop(name) if seed == seeds[0] else load(name, limits, seed)
                    settings = TrainingRunSettings(args.preset, preset, seed=seed,
                                                   device=device, amp=not args.no_amp,
                                                   dist=dist)
                    for impl in impls:
                        probe = (tune.tuned_base_record(impl, data, settings, grid, status="ok")
                                 if grid else base_record(impl, data, settings, status="ok"))
                        if point_id(probe.kind, probe.point_fields()) in done:
                            if dist.is_main:
                                print(f"{data.task} / {impl.name} / seed {seed}: already in "
                                      f"{run_dir.path}; skipped", file=sys.stderr)
                            continue
                        try:
                            record = train_one(impl, data, settings, machine["hardware_id"],
                                               progress=not args.no_progress and dist.is_main,
                                               grid=grid)
                        except RankFailure as failure:
                            if dist.is_main:
                                run_dir.append(failure.record)
                            raise
                        if dist.is_main:
                            run_dir.append(record)
                        records.append(record)
                    del data
            if dist.is_main:
                run_dir.update_metadata(finished_at=now_iso())
                print_table([{**summary_row(r), "seed": r.seed} for r in records],
                            run_dir.path)
                run_dir.release()
                if len(seeds) > 1:
                    print_seed_summary(records)
    except RankFailure as failure:
        print(f"error: {failure}; a distributed run stops at a failure on any rank (the "
              f"launcher stops the others)", file=sys.stderr)
        return 1
    return 0 if all(r.status in ("ok", "unsupported") for r in records) else 1


def refuse_other_settings(path: Path, planned: list[tuple[str, Any]], *, amp: bool,
                          tuned: bool) -> None:
    """On --resume: a task recorded in the run with other training settings (a different --lr,
    --epochs, preset ...) is refused, before anything is written: the report pools the seeds of
    a (task, method) cell, and two configurations in one cell would be one wrong mean. With
    --tune the records hold the chosen setting, not the flags: not compared."""
    from harness.store.run_dir import RunDir

    run = RunDir(path)
    if tuned or not run.results_path.exists():
        return
    # as written to JSON (tuples become lists), so that equal settings compare equal
    # (the record's seq_len is the data's longest kept sequence; the preset's is preset_seq_len)
    wanted = json.loads(json.dumps({name: {**{k: v for k, v in preset.as_dict().items()
                                              if k != "seq_len"},
                                           "preset_seq_len": preset.seq_len, "amp": amp}
                                    for name, preset in planned}, default=str))
    for data in run.raw_records():
        task, config = data.get("task"), data.get("config")
        if task not in wanted or not isinstance(config, dict) or data.get("tuning"):
            continue
        differ = sorted(key for key, value in wanted[task].items()
                        if key in config and config[key] != value)
        if differ:
            shown = "; ".join(f"{key}: recorded {config[key]!r}, now {wanted[task][key]!r}"
                              for key in differ)
            raise UsageError(f"--resume {path}: {task} was recorded with other training "
                             f"settings ({shown}); resume with the same flags, or train these "
                             f"into another run (--out)")


def open_run_dir(args: argparse.Namespace,
                 processes: dict[str, Any]) -> tuple[RunDir, dict[str, Any], set[str]] | str:
    """(run directory, machine fingerprint, point ids already done) or, when the directory
    cannot be opened, the error message (so that a distributed run can stop on every rank)."""
    from harness.store.hardware import fingerprint
    from harness.store.run_metadata import run_metadata
    from harness.store.run_dir import RunDir, default_run_path

    machine = fingerprint()
    path = args.out or default_run_path(machine["hardware_tag"])
    try:
        metadata = run_metadata("accuracy", machine=machine, processes=processes)
        run_dir = RunDir.create(path, metadata.as_dict(), resume=args.resume)
    except UsageError as exc:
        return str(exc)
    return run_dir, machine, run_dir.done_point_ids() if args.resume else set()


def train_one(impl: Implementation, data: TaskData, settings: TrainingRunSettings,
              hardware_id: str, *, progress: bool, grid: TuneGrid | None = None
              ) -> AccuracyRecord:
    """One run_one (or, with a grid, one tune_one), with progress bars when asked."""
    from harness.accuracy.progress import RichProgress
    from harness.accuracy.training_run import run_one
    from harness.accuracy.tune import tune_one

    if grid is not None:
        return tune_one(impl, data, settings, grid, hardware_id=hardware_id,
                        progress=RichProgress if progress else None)
    if not progress:
        return run_one(impl, data, settings, hardware_id=hardware_id)
    label = f"{data.task}/{impl.name} seed {settings.seed}"
    with RichProgress(label) as bar:
        return run_one(impl, data, settings, hardware_id=hardware_id, progress=bar)


def print_table(rows: list[dict], path: Path) -> None:
    from harness.console import DataSafeConsole
    from rich.table import Table

    table = Table(title=f"accuracy (test at the best validation checkpoint) -> {path}")
    columns = ("task", "impl", "seed", "data", "status", "best_val_acc", "test_acc",
               "epochs_to_best", "train_time_s", "examples_per_s", "params", "message")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(_fmt(row[c]) for c in columns))
    DataSafeConsole(width=200).print(table)


def print_seed_summary(records: list[AccuracyRecord]) -> None:
    """Test accuracy over seeds per task x implementation: mean, sample std, n."""
    from harness.console import DataSafeConsole
    from rich.table import Table

    from harness.metrics.stats import mean_std

    groups: dict[tuple[str, str], list[float]] = {}
    for record in records:
        if record.status == "ok" and record.test_accuracy is not None:
            groups.setdefault((record.task, record.impl), []).append(record.test_accuracy)
    table = Table(title="test accuracy over the seeds of this command (%)")
    for column in ("task", "impl", "mean", "std", "n"):
        table.add_column(column)
    for (task, impl), values in groups.items():
        summary = mean_std([100 * v for v in values])
        table.add_row(task, impl, f"{summary.mean:.2f}",
                      "-" if summary.std is None else f"{summary.std:.2f}", str(summary.n))
    DataSafeConsole(width=200).print(table)


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if value < 100 else f"{value:.0f}"
    return str(value)
