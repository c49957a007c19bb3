"""run.json's contents: one ``RunMetadata`` dataclass and one builder for sweeps, shards, merges
and LRA runs (the store adds ``schema_version``; later updates add finished_at, jobs, ...).

``command`` is always the argv list as typed (a string in LRA runs written before this module:
``command_text`` shows both).
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Sequence

from harness.store.run_dir import now_iso

if TYPE_CHECKING:
    from harness.grid.plan import SweepPlan

# written even when None (readers of older runs look for them)
ALWAYS = ("kind", "command", "started_at")


@dataclass
class RunMetadata:
    kind: str                                   # speed | accuracy | mixed (a merge of both)
    command: list[str] | None
    started_at: str
    machine: dict[str, Any] | None = None       # harness.store.hardware.fingerprint()
    settings: dict[str, Any] | None = None      # RunSettings.as_dict()
    grid: dict[str, Any] | None = None          # SweepPlan.description
    grids: list[Any] | None = None              # a merge of different grids
    points: int | None = None
    shard: dict[str, Any] | None = None         # this run is one shard of a grid
    executor: dict[str, Any] | None = None      # a sharded run: how its shards ran
    shards: list[dict[str, Any]] | None = None
    processes: dict[str, Any] | None = None     # LRA: world size and backend
    merged_at: str | None = None

    def as_dict(self, *, keep: Sequence[str] = ()) -> dict[str, Any]:
        """The fields that are set (and those in ALWAYS or ``keep`` even when None)."""
        return {k: v for k, v in asdict(self).items()
                if v is not None or k in ALWAYS or k in keep}


def run_metadata(kind: str, *, command: Sequence[str] | None = None,
                 sweep: SweepPlan | None = None, **fields: Any) -> RunMetadata:
    """The one builder: the command line (default: this process's argv, as a list), the start
    time, and for a sweep its settings, grid and number of points; ``fields`` the rest."""
    argv = list(sys.argv if command is None else command)
    if sweep is not None:
        fields = {"settings": sweep.settings.as_dict(), "grid": sweep.description,
                  "points": len(sweep.points), **fields}
    return RunMetadata(kind=kind, command=argv, started_at=now_iso(), **fields)


def shard_info(sweep: SweepPlan) -> dict[str, Any] | None:
    """run.json's ``shard`` of a run made with --shard I/N (None without)."""
    if sweep.shard is None:
        return None
    return {"index": sweep.shard.index, "count": sweep.shard.count,
            "grid_points": sweep.grid_points,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID")}


def command_text(command: object) -> str:
    """A run's command as typed: the argv list shell-quoted; a string (LRA runs written before
    the argv list) as it is, never joined character by character."""
    if isinstance(command, str):
        return command
    if isinstance(command, (list, tuple)):
        return shlex.join(str(arg) for arg in command)
    return ""
