"""Joining run directories: ``run_bench.py merge`` and the executors' gathering of shards.

Records are copied as they are, each keeping its own ``hardware_id``; run.json of the result
lists every machine seen under ``machines`` (a cluster is rarely uniform). A point measured on
two machines is two results, both kept (the report shows each machine's). Two records of the
same point from the same machine agree when they are equal but for bookkeeping (when and how
long the worker ran): agreeing duplicates are kept once, disagreeing ones are refused, naming
the point, the machine and both runs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from harness.errors import UsageError
from harness.contract.records import field_problem, invalid_numbers
from harness.metrics import peaks as peaks_mod
from harness.store.run_metadata import run_metadata
from harness.store.run_dir import RunDir, now_iso, open_run

BOOKKEEPING = ("started_at", "wall_s", "extra")


def agree(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Same point, same outcome and measurements (bookkeeping fields aside)."""
    strip = lambda d: {k: v for k, v in d.items() if k not in BOOKKEEPING}  # noqa: E731
    return strip(a) == strip(b)


def outcome_text(data: dict[str, Any]) -> str:
    time_s = data.get("time_s")
    return data.get("status", "?") + (f" {time_s * 1e3:.4g} ms" if time_s else "")


def describe_record(data: dict[str, Any]) -> str:
    if data.get("kind") == "accuracy":
        return f"{data.get('impl')} on {data.get('task')} (seed {data.get('seed')})"
    return (f"{data.get('impl')} T={data.get('seq_len')} D={data.get('head_dim')} "
            f"{data.get('dtype')} {data.get('pass')} on {data.get('device')}")


def record_key(data: dict[str, Any]) -> str:
    """What one result is: a point on a machine (the same point measured on two machines is two
    results, not a conflict)."""
    return f"{data['point_id']}@{data.get('hardware_id') or ''}"


class ConflictError(UsageError):
    """Two runs recorded different results for the same point."""


@dataclass
class Gatherer:
    """Copies records into one run directory, once per point, refusing disagreements."""

    target: RunDir
    seen: dict[str, tuple[dict[str, Any], str]] = field(default_factory=dict)
    machines: dict[str, dict[str, Any]] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    identical_duplicates: int = 0
    peaks: dict[str, dict[str, Any]] = field(default_factory=dict)   # hardware_id -> peaks
    # hardware_id -> device -> peaks (every measurement of that device in the runs gathered)
    device_peaks: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    @classmethod
    def into(cls, target: RunDir) -> "Gatherer":
        """Start from what the target already holds (gathering again adds only new points)."""
        gatherer = cls(target)
        if target.results_path.exists():
            for data in target.raw_records():
                gatherer.seen[record_key(data)] = (data, str(target.path))
        meta = target.metadata() if target.run_path.exists() else {}
        gatherer.machines.update(meta.get("machines") or {})
        gatherer.sources.extend(meta.get("merged_from") or [])
        gatherer.peaks.update(meta.get("peaks_by_machine") or {})
        for hardware, measured in gatherer.peaks.items():
            gatherer.device_peaks[hardware] = {measured.get("device", "cpu"): measured}
        hardware = (meta.get("machine") or {}).get("hardware_id")
        if hardware in gatherer.device_peaks and meta.get("peaks_by_device"):
            gatherer.device_peaks[hardware] = dict(meta["peaks_by_device"])
        return gatherer

    @property
    def point_ids(self) -> set[str]:
        """The points gathered (on any machine)."""
        return {data["point_id"] for data, _ in self.seen.values()}

    def check(self, run: RunDir) -> None:
        """Raise ConflictError if run holds a record disagreeing with one already gathered."""
        pending: dict[str, tuple[dict[str, Any], str]] = {}
        for number, data in enumerate(run.raw_records(), 1):
            problem = ("no point_id" if not isinstance(data.get("point_id"), str) else "") or \
                field_problem(data) or invalid_numbers(data)
            if problem:
                raise UsageError(f"{run.results_path} record {number} ({describe_record(data)}): "
                                 f"{problem}; refusing to merge it (fix or remove that line)")
            key = record_key(data)
            known = self.seen.get(key) or pending.get(key)
            if known is not None and not agree(known[0], data):
                machine = data.get("hardware_id") or "an unrecorded machine"
                raise ConflictError(
                    f"conflicting records for {describe_record(data)} on {machine}: {known[1]} "
                    f"has {outcome_text(known[0])}, {run.path} has {outcome_text(data)} (two "
                    f"results for one point from the same machine); merge only one of them, "
                    f"or remove the stale record")
            pending.setdefault(key, (data, str(run.path)))

    def add(self, run: RunDir) -> int:
        """Copy run's records not yet gathered; the number copied."""
        self.check(run)
        copied = 0
        for data in run.raw_records():
            if record_key(data) in self.seen:
                self.identical_duplicates += 1
                continue
            self.target.append_raw(data)
            self.seen[record_key(data)] = (data, str(run.path))
            copied += 1
        meta = run.metadata()
        for machine in [meta.get("machine") or {}, *(meta.get("machines") or {}).values()]:
            if machine.get("hardware_id"):
                self.machines.setdefault(machine["hardware_id"], machine)
        hardware = (meta.get("machine") or {}).get("hardware_id")
        if hardware and hardware != "mixed":
            # every peaks measurement of a machine, each once: its records name them, and
            # the machine's roof is the best of them all
            found = peaks_mod.by_device(meta)
            devices = self.device_peaks.setdefault(hardware, {}) if found else {}
            for device, measured in found.items():
                devices[device] = peaks_mod.combine(devices.get(device), measured)
            if devices:
                self.peaks[hardware] = devices[sorted(devices)[0]]
        elif meta.get("peaks_by_machine"):   # a merged run merged again
            for machine_id, measured in meta["peaks_by_machine"].items():
                devices = self.device_peaks.setdefault(machine_id, {})
                device = measured.get("device", "cpu")
                devices[device] = peaks_mod.combine(devices.get(device), measured)
                self.peaks[machine_id] = devices[sorted(devices)[0]]
        if str(run.path) not in self.sources:
            self.sources.append(str(run.path))
        return copied

    def metadata(self) -> dict[str, Any]:
        """run.json fields describing what was gathered."""
        used = Counter(data.get("hardware_id", "") for data, _ in self.seen.values())
        ids = [i for i in used if i]
        if len(ids) == 1 and ids[0] in self.machines:
            machine = self.machines[ids[0]]
        else:
            machine = {"hardware_id": "mixed" if len(ids) > 1 else "",
                       "hardware_tag": f"mixed ({len(ids)} machines)" if len(ids) > 1
                       else "unknown hardware"}
        peaks = {}
        if len(ids) == 1 and self.device_peaks.get(ids[0]):
            devices = self.device_peaks[ids[0]]
            peaks = {"peaks": devices[sorted(devices)[0]]}
            if len(devices) > 1:
                peaks["peaks_by_device"] = devices
        return {"machine": machine, "machines": self.machines, "merged_from": self.sources,
                "records": len(self.seen), "records_by_hardware": dict(used),
                "peaks_by_machine": self.peaks, **peaks}


def whole_grid(grid: Any) -> Any:
    """A run's grid without its --shard argument: the shards of one sweep share one grid."""
    if not isinstance(grid, dict) or "shard" not in (grid.get("arguments") or {}):
        return grid
    arguments = {k: v for k, v in grid["arguments"].items() if k != "shard"}
    return {**grid, "arguments": arguments}


def merge_runs(paths: Iterable[str | Path], out: str | Path, *, command: Any = None
               ) -> Gatherer:
    """Join run directories into a new one at out (which must not exist or be empty)."""
    runs = [open_run(p) for p in paths]
    if not runs:
        raise UsageError("merge: give at least one run directory")
    metas = [run.metadata() for run in runs]
    kinds = {meta.get("kind", "speed") for meta in metas}
    grids: list[Any] = []                 # the distinct grids, in order (shards share one)
    for meta in metas:
        grid = whole_grid(meta.get("grid"))
        if grid not in grids:
            grids.append(grid)
    existed = Path(out).exists()
    if existed and Path(out).is_dir() and any(Path(out).iterdir()):
        raise UsageError(f"merge: --out {out} already exists and is not empty; merge writes a "
                         f"new run directory, so choose another --out")
    metadata = run_metadata(kinds.pop() if len(kinds) == 1 else "mixed", command=(),
                            grid=grids[0] if len(grids) == 1 else None,
                            grids=grids if len(grids) > 1 else None, merged_at=now_iso())
    metadata.command = list(command) if command is not None else None
    target = RunDir.create(Path(out), metadata.as_dict(keep=("grid", "grids")))
    gatherer = Gatherer(target)
    try:
        for run in runs:
            gatherer.add(run)
        target.update_metadata(**gatherer.metadata())
    except BaseException:   # refuse the whole merge: remove what this call wrote
        target.results_path.unlink(missing_ok=True)
        target.run_path.unlink(missing_ok=True)
        target.remove_lock_file()
        for leftover in target.path.glob("*.tmp"):
            leftover.unlink(missing_ok=True)
        if not existed and not any(target.path.iterdir()):
            target.path.rmdir()
        raise
    target.release()
    return gatherer
