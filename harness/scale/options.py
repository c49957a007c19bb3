"""The Slurm executor's command-line options (shared by ``sweep`` and ``lra``) as data."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from harness.errors import UsageError

OPTIONS_WITH_VALUES = ("--executor", "--shards", "--slurm-partition", "--slurm-account",
                       "--slurm-qos", "--slurm-time", "--slurm-gpus-per-task",
                       "--slurm-cpus-per-task", "--slurm-mem-gb", "--slurm-array-parallelism",
                       "--slurm-max-retries", "--slurm-setup", "--slurm-poll",
                       "--slurm-tasks", "--slurm-nodes")


def add_slurm_arguments(parser: argparse.ArgumentParser, *, distributed: bool = False) -> None:
    slurm = parser.add_argument_group("slurm executor (docs/scale-out.md)")
    slurm.add_argument("--slurm-partition", default=None)
    slurm.add_argument("--slurm-account", default=None)
    slurm.add_argument("--slurm-qos", default=None)
    slurm.add_argument("--slurm-time", type=int, default=60, metavar="MINUTES",
                       help="time limit per task (default 60)")
    slurm.add_argument("--slurm-gpus-per-task", type=int, default=1,
                       help="GPUs per task (default 1; 0 for CPU partitions)")
    slurm.add_argument("--slurm-cpus-per-task", type=int, default=4)
    slurm.add_argument("--slurm-mem-gb", type=int, default=None)
    slurm.add_argument("--slurm-array-parallelism", type=int, default=None,
                       help="most tasks running at once")
    slurm.add_argument("--slurm-max-retries", type=int, default=2,
                       help="resubmissions of a failed or cancelled task (default 2)")
    slurm.add_argument("--slurm-setup", action="append", default=None, metavar="LINE",
                       help="shell line run before each task, e.g. 'module load cuda' "
                            "(repeatable)")
    slurm.add_argument("--slurm-poll", type=float, default=10.0, metavar="SECONDS",
                       help="how often to look at the tasks (default 10)")
    if distributed:
        slurm.add_argument("--slurm-tasks", type=int, default=1,
                           help="processes per node, one GPU each: DDP over "
                                "nodes x tasks (default 1)")
        slurm.add_argument("--slurm-nodes", type=int, default=1, help="nodes (default 1)")


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_min: int = 60
    gpus_per_task: int = 1
    cpus_per_task: int = 4
    mem_gb: int | None = None
    array_parallelism: int | None = None
    max_retries: int = 2
    setup: tuple[str, ...] = ()
    poll_s: float = 10.0
    tasks_per_node: int = 1
    nodes: int = 1

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "SlurmOptions":
        options = cls(partition=args.slurm_partition, account=args.slurm_account,
                      qos=args.slurm_qos, time_min=args.slurm_time,
                      gpus_per_task=args.slurm_gpus_per_task,
                      cpus_per_task=args.slurm_cpus_per_task, mem_gb=args.slurm_mem_gb,
                      array_parallelism=args.slurm_array_parallelism,
                      max_retries=args.slurm_max_retries, setup=tuple(args.slurm_setup or ()),
                      poll_s=args.slurm_poll,
                      tasks_per_node=getattr(args, "slurm_tasks", 1),
                      nodes=getattr(args, "slurm_nodes", 1))
        for flag, value in (("time", options.time_min), ("cpus-per-task", options.cpus_per_task),
                            ("tasks", options.tasks_per_node), ("nodes", options.nodes)):
            if value < 1:
                raise UsageError(f"--slurm-{flag}: must be at least 1, got {value}")
        if options.gpus_per_task < 0 or options.max_retries < 0 or options.poll_s <= 0:
            raise UsageError("--slurm-gpus-per-task and --slurm-max-retries must be >= 0, "
                             "--slurm-poll > 0")
        return options

    def submitit_parameters(self) -> dict[str, Any]:
        """Keyword arguments of submitit.SlurmExecutor.update_parameters."""
        params: dict[str, Any] = {"job_name": "attnbench", "time": self.time_min,
                                  "cpus_per_task": self.cpus_per_task,
                                  "ntasks_per_node": self.tasks_per_node, "nodes": self.nodes,
                                  "signal_delay_s": 60}
        if self.gpus_per_task:
            params["gpus_per_task"] = self.gpus_per_task
        optional = {"partition": self.partition, "account": self.account, "qos": self.qos,
                    "array_parallelism": self.array_parallelism,
                    "mem": f"{self.mem_gb}G" if self.mem_gb else None,
                    "setup": list(self.setup) or None}
        params.update({k: v for k, v in optional.items() if v is not None})
        return params


def without_executor_options(argv: list[str]) -> list[str]:
    """argv with --executor and every --slurm-* option removed (what a task re-runs)."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in OPTIONS_WITH_VALUES:
            skip = "=" not in arg
            continue
        kept.append(arg)
    return kept
