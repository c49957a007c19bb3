"""Sweep executors: how a planned sweep runs, behind one protocol, chosen by name.

- ``in-process``: this process runs every point (harness.scale.inprocess)
- ``per-gpu``: one shard process per visible GPU, gathered into one run (harness.scale.local)
- ``slurm``: one Slurm array task per shard, through submitit (harness.scale.slurm)
- ``local`` (the default of ``--executor``): per-gpu when the points ask for plain ``cuda`` and
  several GPUs are visible, else in-process

An executor plans (each knows which devices it can check here and its default device) and runs
plans; it never sees argparse objects. Add a scheduler: a class with ``plan`` and ``run`` in a
module beside these, and one line in ``EXECUTORS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

from rich.console import Console

from harness.errors import UnknownNameError, UsageError
from harness.grid.plan import SweepPlan, SweepRequest
from harness.store.resume import plan_sweep
from harness.scale.inprocess import SweepResult, run_in_process
from harness.scale.options import SlurmOptions


@dataclass(frozen=True)
class ExecutorOptions:
    """What the command line tells an executor beyond the plan."""
    slurm: SlurmOptions = SlurmOptions()
    shards: int | None = None          # --shards (slurm): number of parts


class SweepExecutor(Protocol):
    name: str

    def plan(self, request: SweepRequest) -> SweepPlan: ...

    def run(self, sweep: SweepPlan, console: Console) -> SweepResult: ...


class InProcess:
    name = "in-process"

    def __init__(self, options: ExecutorOptions) -> None:
        self.options = options

    def plan(self, request: SweepRequest) -> SweepPlan:
        return plan_sweep(request)

    def run(self, sweep: SweepPlan, console: Console) -> SweepResult:
        return run_in_process(sweep, console)


class PerGpu(InProcess):
    name = "per-gpu"

    def run(self, sweep: SweepPlan, console: Console) -> SweepResult:
        from harness.scale import local

        if sweep.shard is not None:
            raise UsageError("--shard runs one part in this process; it does not split again")
        return local.run_sweep_per_gpu(sweep, local.gpus_for(sweep.points) or
                                       local.visible_gpus(), console)


class Local(InProcess):
    name = "local"

    def run(self, sweep: SweepPlan, console: Console) -> SweepResult:
        from harness.scale import local

        if sweep.shard is None:
            gpus = local.gpus_for(sweep.points)
            if len(gpus) > 1:
                return local.run_sweep_per_gpu(sweep, gpus, console)
        return run_in_process(sweep, console)


def _slurm(options: ExecutorOptions) -> SweepExecutor:
    from harness.scale.slurm import SlurmSweep

    return SlurmSweep(options.slurm, options.shards)


EXECUTORS: dict[str, Callable[[ExecutorOptions], SweepExecutor]] = {
    "local": Local,
    "in-process": InProcess,
    "per-gpu": PerGpu,
    "slurm": _slurm,
}


def make_executor(name: str, options: ExecutorOptions | None = None) -> SweepExecutor:
    if name not in EXECUTORS:
        raise UnknownNameError("executor", name, EXECUTORS)
    return EXECUTORS[name](options or ExecutorOptions())
