"""``--executor slurm``: a sweep as a Slurm job array, through submitit.

The grid is split into cost-balanced shards (harness.grid.sharding), one array task per shard, one
GPU per task by default. Each task runs ``python -m harness sweep --grid-from RUN --shard I/N``
into its own directory under RUN/shards (on the shared file system); this process watches the
tasks, gathers each shard's records into RUN as they appear, and resubmits a task that failed,
was cancelled or lost its node (up to --slurm-max-retries times). A preempted or timed-out task
is requeued by submitit itself (ShardTask.checkpoint) and resumes its shard. ``--resume RUN``
submits only the shards that still miss records, so it works across submissions and after this
process was stopped. Task states come from ``scontrol`` (``sacct`` when scontrol no longer
knows the job), so clusters without accounting work too.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from rich.console import Console

from harness.errors import UsageError
from harness.store.hardware import fingerprint
from harness.grid.plan import SweepPlan, SweepRequest, family_of
from harness.store.resume import plan_sweep
from harness.measure.progress import print_run_summary
from harness.scale.inprocess import SweepResult
from harness.scale.options import SlurmOptions, without_executor_options
from harness.scale.sharded import (
    Shard,
    finish,
    gather,
    incomplete,
    missing_points,
    open_sharded_run,
    python_command,
)
from harness.store.run_dir import RunDir, default_run_path, now_iso

MAX_DEFAULT_SHARDS = 32
FAILED_STATES = {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY",
                 "BOOT_FAIL", "DEADLINE", "REVOKED"}


class ShardTask:
    """What one array task runs: its shard, in a fresh Python, resuming what is already there.

    submitit calls ``checkpoint`` on preemption or time-out; returning a DelayedSubmission of
    the same task makes submitit requeue it, and the shard resumes from its directory.
    """

    def __call__(self, shard: Shard, parent: str, impl_modules: Sequence[str]) -> dict[str, Any]:
        command = python_command(shard, Path(parent), impl_modules)
        result = subprocess.run(command, capture_output=True, text=True)
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-5:])
            raise RuntimeError(f"shard {shard.spec} exited with status {result.returncode}: "
                               f"{tail}")
        return {"shard": shard.spec, "exit_status": 0}

    def checkpoint(self, shard: Shard, parent: str, impl_modules: Sequence[str]) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(ShardTask(), shard, parent, impl_modules)


@dataclass(frozen=True)
class JobInfo:
    state: str          # Slurm's state, e.g. RUNNING, COMPLETED, CANCELLED; UNKNOWN if forgotten
    restarts: int = 0   # requeues (preemption, time-out, node failure)

    @property
    def base(self) -> str:
        return self.state.split()[0].rstrip("+") if self.state else "UNKNOWN"


def job_info(job_id: str) -> JobInfo:
    """What Slurm says of a job or array task: scontrol, else sacct, else UNKNOWN."""
    try:
        out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True,
                             text=True, timeout=30)
        fields = dict(token.split("=", 1) for token in out.stdout.split() if "=" in token)
        if "JobState" in fields:
            return JobInfo(fields["JobState"], int(fields.get("Restarts", "0") or 0))
        out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "State", "-j", job_id],
                             capture_output=True, text=True, timeout=30)
        if out.returncode == 0 and out.stdout.strip():
            return JobInfo(out.stdout.split()[0])
    except (OSError, subprocess.TimeoutExpired, ValueError):
        pass
    return JobInfo("UNKNOWN")


@dataclass
class Attempt:
    shard: int
    job_id: str
    attempt: int
    state: str = "PENDING"
    restarts: int = 0        # requeued by Slurm/submitit after preemption or time-out
    message: str = ""
    submitted_at: str = field(default_factory=now_iso)


def failure_message(exc: BaseException) -> str:
    """The line of a task's exception that says what happened (ShardTask's own, if there)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    ours = [line for line in lines if "shard " in line and "exited with status" in line]
    return (ours or lines or [type(exc).__name__])[-1][:300]


def outcome(job: Any) -> tuple[str, JobInfo, str]:
    """('done' | 'failed' | 'active', Slurm's view, message) of a submitted task."""
    info = job_info(str(job.job_id))
    if job.paths.result_pickle.exists():   # task 0's; submitit writes it when the task ends
        from submitit.core.utils import pickle_load

        try:
            result, value = pickle_load(job.paths.result_pickle)
        except Exception as exc:  # half-written: look again at the next poll
            return "active", info, f"result file not readable yet ({exc})"
        if result == "success":
            return "done", info, ""
        return "failed", info, failure_message(RuntimeError(str(value)))
    if info.base in FAILED_STATES:
        return "failed", info, f"ended {info.state} without a result"
    if info.base == "COMPLETED":   # ended without a result file: give the file system a moment
        time.sleep(2)
        return ("done", info, "") if job.paths.result_pickle.exists() else \
            ("failed", info, "completed without a result file")
    if info.base == "UNKNOWN":
        return "failed", info, "Slurm no longer knows the task and it left no result"
    return "active", info, ""


def require_slurm() -> Any:
    """The submitit module, once Slurm's commands and submitit are known to be here."""
    try:
        import submitit
    except ImportError:
        raise UsageError("--executor slurm needs submitit: pip install submitit") from None
    if shutil.which("sbatch") is None:
        raise UsageError("--executor slurm: sbatch not found; run this on a Slurm login node "
                         "(with Slurm's commands on PATH)")
    return submitit


def make_executor(submitit: Any, options: SlurmOptions, out: Path) -> Any:
    """submitit's executor for this run: logs and pickles under OUT/slurm/<job id>."""
    executor = submitit.SlurmExecutor(folder=str(out / "slurm" / "%j"),
                                      max_num_timeout=max(options.max_retries, 1))
    executor.update_parameters(**options.submitit_parameters())
    return executor


def sbatch_failed(exc: Exception, run_path: Path) -> UsageError:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return UsageError(f"sbatch failed: {lines[-1] if lines else exc}; nothing was submitted "
                      f"(records so far are in {run_path})")


def final_state(status: str, info: JobInfo) -> str:
    """What an ended attempt is listed as: COMPLETED, Slurm's failure state, or FAILED."""
    if status == "done":
        return "COMPLETED"
    return info.base if info.base in FAILED_STATES else "FAILED"


class SlurmSweep:
    """The ``slurm`` sweep executor: plans without checking CUDA here (the login node needs no
    GPU; the tasks check), then one array task per shard."""
    name = "slurm"

    def __init__(self, options: SlurmOptions, shards: int | None = None) -> None:
        self.submitit = require_slurm()
        self.options, self.shards = options, shards

    def plan(self, request: SweepRequest) -> SweepPlan:
        sweep = plan_sweep(request, check_devices=False,
                     default_device="cuda" if self.options.gpus_per_task else "cpu")
        if sweep.shard is not None:
            raise UsageError("--shard and --executor slurm do not mix: the executor makes the "
                             "shards")
        return sweep

    def run(self, sweep: SweepPlan, console: Console) -> SweepResult:
        out = Path(sweep.out if sweep.out is not None else default_run_path("slurm"))
        return SweepResult(run_sweep(sweep, out, self.submitit, self.options, self.shards,
                                     console), out, complete=False)


def run_sweep(sweep: SweepPlan, out: Path, submitit: Any, options: SlurmOptions,
              shard_count: int | None, console: Console) -> int:
    count = shard_count if shard_count is not None else min(
        len({p.series_key() for p in sweep.points}), MAX_DEFAULT_SHARDS)
    if count < 1:
        raise UsageError(f"--shards: must be at least 1, got {count}")
    run, shards = open_sharded_run(sweep, out, count,
                                   {"kind": "slurm", "options": asdict(options)},
                                   fingerprint(), family_of, keep=("jobs",))
    previous = run.metadata().get("jobs") or []
    resume = f"python run_bench.py sweep --executor slurm --resume {run.path}"
    missing = incomplete(run, shards)
    todo = [s for s in shards if s in missing]
    console.print(f"[bold]attnbench[/] {len(sweep.points)} point(s) in {len(shards)} shard(s); "
                  f"{len(todo)} to run on Slurm -> {run.path}")
    if not todo:
        console.print("every shard is complete; nothing submitted")
        print_run_summary(run, console)
        return 0
    executor = make_executor(submitit, options, out)
    watcher = JobWatcher(run, shards, executor, options, sweep.settings.impl_modules, console,
                         attempts=previous)
    try:
        watcher.submit(todo)
        watcher.watch()
    except KeyboardInterrupt:
        console.print(f"[yellow]stopped watching[/]: submitted tasks go on; gather their "
                      f"records and resubmit what failed with: {resume}")
        return 130
    console.print(watcher.table())
    return finish(run, shards, console, logs=out / "slurm", resume=resume)


class JobWatcher:
    """Submits shards, follows their tasks, gathers records, resubmits failures."""

    def __init__(self, run: RunDir, shards: Sequence[Shard], executor: Any,
                 options: SlurmOptions, impl_modules: Sequence[str], console: Console, *,
                 attempts: list[dict[str, Any]] | None = None) -> None:
        self.run, self.shards, self.executor = run, list(shards), executor
        self.options, self.impl_modules, self.console = options, tuple(impl_modules), console
        self.by_index = {s.index: s for s in shards}
        self.history: list[Attempt] = [Attempt(**a) for a in attempts or []]
        self.active: dict[int, tuple[Any, Attempt]] = {}
        self.tries: dict[int, int] = {}

    def submit(self, shards: Sequence[Shard]) -> None:
        try:
            with self.executor.batch():
                jobs = [self.executor.submit(ShardTask(), s, str(self.run.path),
                                             self.impl_modules) for s in shards]
        except Exception as exc:  # sbatch refused: no Slurm here, bad partition or account...
            raise sbatch_failed(exc, self.run.path) from None
        for shard, job in zip(shards, jobs):
            self.tries[shard.index] = self.tries.get(shard.index, 0) + 1
            attempt = Attempt(shard.index, str(job.job_id), self.tries[shard.index])
            self.history.append(attempt)
            self.active[shard.index] = (job, attempt)
            self.console.print(f"submitted shard {shard.spec} as job {job.job_id} "
                               f"(attempt {attempt.attempt})", highlight=False)
        self._save()

    def watch(self) -> None:
        while self.active:
            time.sleep(self.options.poll_s)
            retry = []
            for index, (job, attempt) in list(self.active.items()):
                status, info, message = outcome(job)
                attempt.restarts = max(attempt.restarts, info.restarts)
                if status == "active":
                    attempt.state = info.state
                    continue
                attempt.state = final_state(status, info)
                attempt.message = message
                del self.active[index]
                gathered = gather(self.run, self.shards)
                missing = missing_points(self.by_index[index], gathered)
                self.console.print(f"shard {self.by_index[index].spec} job {attempt.job_id}: "
                                   f"{attempt.state}{f' ({message})' if message else ''}; "
                                   f"{missing} point(s) without a record", highlight=False)
                if missing and self.tries[index] <= self.options.max_retries:
                    retry.append(self.by_index[index])
            gather(self.run, self.shards)
            self._save()
            if retry:
                self.submit(retry)

    def _save(self) -> None:
        self.run.update_metadata(jobs=[asdict(a) for a in self.history])

    def table(self):
        from rich.table import Table

        table = Table(title="slurm tasks", title_justify="left")
        for column in ("shard", "job", "attempt", "requeued", "state", "message"):
            table.add_column(column)
        count = self.shards[0].count if self.shards else 0
        for a in self.history:
            table.add_row(f"{a.shard}/{count}", a.job_id, str(a.attempt), str(a.restarts),
                          a.state, a.message)
        return table


class DistributedTask:
    """One task of a multi-process Slurm job: torch.distributed's variables (RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR, MASTER_PORT) from Slurm's, then the command in a fresh Python."""

    def __call__(self, argv: Sequence[str]) -> dict[str, Any]:
        import submitit

        env = submitit.helpers.TorchDistributedEnvironment().export(
            set_cuda_visible_devices=False)
        result = subprocess.run([sys.executable, "-m", "harness", *argv])
        if result.returncode != 0:
            raise RuntimeError(f"rank {env.rank} of {env.world_size}: exited with status "
                               f"{result.returncode}")
        return {"rank": env.rank, "exit_status": 0}

    def checkpoint(self, argv: Sequence[str]) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(DistributedTask(), argv)


def lra_task_argv(argv: Sequence[str], out: Path) -> list[str]:
    """The lra command a task runs: no executor options, always --out RUN --resume (so a
    requeued or resubmitted job continues the run), no progress bar."""
    kept: list[str] = []
    items = without_executor_options(list(argv))
    i = 0
    while i < len(items):
        name = items[i].split("=", 1)[0]
        if name == "--out" or (name == "--resume" and "=" not in items[i]):
            has_value = "=" not in items[i] and i + 1 < len(items) and \
                not items[i + 1].startswith("-")
            i += 2 if has_value else 1
            continue
        if name in ("--resume", "--no-progress"):
            i += 1
            continue
        kept.append(items[i])
        i += 1
    return [*kept, "--out", str(out), "--resume", "--no-progress"]


def run_lra(options: SlurmOptions, command_argv: Sequence[str], target: str | Path | None,
            console: Console) -> int:
    """``lra --executor slurm``: one job of nodes x tasks processes (DDP), resubmitted on
    failure, resumed by requeue; waits for it and prints the records. ``command_argv`` is the
    lra command as given; ``target`` its run directory (--resume RUN_DIR or --out)."""
    submitit = require_slurm()
    if target is None:
        raise UsageError("lra --executor slurm needs --out RUN_DIR on a file system the nodes "
                         "share")
    out = Path(target).resolve()
    argv = lra_task_argv(command_argv, out)
    executor = make_executor(submitit, options, out)
    world = options.nodes * options.tasks_per_node
    history: list[Attempt] = []
    for attempt_number in range(1, options.max_retries + 2):
        try:
            job = executor.submit(DistributedTask(), argv)
        except Exception as exc:
            raise sbatch_failed(exc, out) from None
        attempt = Attempt(0, str(job.job_id), attempt_number)
        history.append(attempt)
        console.print(f"submitted lra as job {job.job_id}: {world} process(es) on "
                      f"{options.nodes} node(s) (attempt {attempt_number})", highlight=False)
        status = "active"
        while status == "active":
            time.sleep(options.poll_s)
            status, info, message = outcome(job)
            attempt.restarts = max(attempt.restarts, info.restarts)
            attempt.state = info.state
        attempt.state = final_state(status, info)
        attempt.message = message
        console.print(f"job {job.job_id}: {attempt.state}{f' ({message})' if message else ''}",
                      highlight=False)
        if status == "done":
            break
    run = RunDir(out)
    if run.run_path.exists():
        run.update_metadata(jobs=[asdict(a) for a in history],
                            executor={"kind": "slurm", "options": asdict(options)})
    records = run.records() if run.results_path.exists() else []
    for record in records:
        console.print(f"{record.task} / {record.impl}: {record.status}, best val "
                      f"{record.best_val_accuracy}, test {record.test_accuracy}, "
                      f"{record.extra.get('world_size')} process(es)", highlight=False)
    if history[-1].state != "COMPLETED":
        console.print(f"[red]the lra job did not complete[/]; logs in {out / 'slurm'}")
        return 1
    return 0 if all(r.status in ("ok", "unsupported") for r in records) else 1
