"""A run made of shards: the parent run directory, its shard directories, gathering.

Layout: ``RUN/run.json`` (the whole grid, the executor, the shards), ``RUN/results.jsonl`` (every
shard's records, gathered as they appear), ``RUN/shards/shard-I-of-N/`` (each shard's own run
directory, written by the process or Slurm task that ran it, resumable on its own).
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from harness.measure.progress import print_run_summary
from harness.grid.plan import SweepPlan
from harness.contract.records import Point
from harness.store.run_metadata import run_metadata
from harness.store.merge import Gatherer
from harness.grid.sharding import ShardSpec, assign_shards, points_cost_s
from harness.store.run_dir import RunDir, now_iso


@dataclass(frozen=True)
class Shard:
    index: int                 # 1-based
    count: int
    point_ids: tuple[str, ...]
    expected_cost_s: float
    path: str                  # its run directory

    @property
    def spec(self) -> str:
        return str(ShardSpec(self.index, self.count))

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["points"] = len(data.pop("point_ids"))
        return data


def plan_shards(points: Sequence[Point], count: int, run_path: Path,
                family_of: Callable[[str], str]) -> list[Shard]:
    """The non-empty shards of points, each with its directory under run_path/shards."""
    shards = []
    for i, members in enumerate(assign_shards(points, count, family_of), start=1):
        if not members:
            continue
        path = run_path / "shards" / f"shard-{i:03d}-of-{count:03d}"
        shards.append(Shard(i, count, tuple(p.point_id for p in members),
                            points_cost_s(members, family_of), str(path)))
    return shards


def shard_command(shard: Shard, parent: Path, impl_modules: Sequence[str]) -> list[str]:
    """argv (after the Python executable) that runs one shard; resumes its directory if any."""
    modules = [arg for m in impl_modules for arg in ("--impl-module", m)]
    if (Path(shard.path) / "run.json").exists():
        tail = ["--resume", shard.path]
    else:
        tail = ["--grid-from", str(parent), "--shard", shard.spec, "--out", shard.path]
    return ["-m", "harness", *modules, "sweep", *tail, "--no-report", "--executor", "local"]


def python_command(shard: Shard, parent: Path, impl_modules: Sequence[str]) -> list[str]:

    return [sys.executable, *shard_command(shard, parent, impl_modules)]


def gather(run: RunDir, shards: Sequence[Shard]) -> Gatherer:
    """Copy every shard's new records into run; returns the gatherer (what is there now)."""
    gatherer = Gatherer.into(run)
    for shard in shards:
        shard_run = RunDir(Path(shard.path))
        if shard_run.run_path.exists() and shard_run.results_path.exists():
            gatherer.add(shard_run)
    run.update_metadata(**gatherer.metadata())
    return gatherer


def missing_points(shard: Shard, gathered: Gatherer) -> int:
    """Points of the shard with no record yet (0: the shard is complete)."""
    gathered_ids = gathered.point_ids
    return sum(pid not in gathered_ids for pid in shard.point_ids)


def open_sharded_run(sweep: SweepPlan, out: Path, count: int, executor: dict[str, Any],
                     machine: dict[str, Any], family_of: Callable[[str], str], *,
                     keep: Sequence[str] = ()) -> tuple[RunDir, list[Shard]]:
    """The parent run directory of a sharded sweep, and its shards.

    On --resume the shard count stored before is used (the same shards, whatever the number of
    GPUs or --shards now), and the stored run.json fields named in ``keep`` are carried over.
    """
    stored = RunDir(out).metadata() if sweep.resume else {}
    count = (stored.get("executor") or {}).get("shard_count", count)
    shards = plan_shards(sweep.points, count, out, family_of)
    metadata = run_metadata("speed", sweep=sweep, machine=machine,
                            executor={**executor, "shard_count": count},
                            shards=[s.as_dict() for s in shards])
    run = RunDir.create(out, {**metadata.as_dict(),
                              **{name: stored[name] for name in keep if name in stored}},
                        resume=sweep.resume)
    return run, shards


def incomplete(run: RunDir, shards: Sequence[Shard]) -> dict[Shard, int]:
    """Shards with points that have no record yet (after gathering), and how many."""
    gathered = gather(run, shards)
    missing = {shard: missing_points(shard, gathered) for shard in shards}
    return {shard: n for shard, n in missing.items() if n}


def finish(run: RunDir, shards: Sequence[Shard], console: Any, *, logs: Path, resume: str,
           **metadata: Any) -> int:
    """End of a sharded sweep: record which shards still miss points (and ``metadata``), print
    the run's summary; exit status 1, with how to continue, when a shard is incomplete."""
    left = {s.spec: n for s, n in incomplete(run, shards).items()}
    run.update_metadata(finished_at=now_iso(), incomplete_shards=left, **metadata)
    print_run_summary(run, console)
    if not left:
        return 0
    console.print(f"[red]incomplete shards[/] (points without a record): {left}; logs in "
                  f"{logs}; continue with: {resume}")
    return 1
