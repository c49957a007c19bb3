"""Where a run's wall time went: timed samples, compilation, worker start-up, the rest of the
workers' time, and the parent. Kept by the runner as tasks come back; written to run.json
(``overhead``) and printed as the sweep's last line; ``benchmarks/harness_overhead.py`` reads it.

- samples: the sum of every timed sample of the points measured (the numbers the records hold);
- compilation: what torch.compile and JAX spent compiling in every task (probes, memory and
  timing passes), as the frameworks time it (harness.measure.compile_cache.compile_seconds);
- worker start-up: starting worker processes and passing tasks and results to and from them
  (a one-shot worker's whole life outside its task; a reused worker's start once);
- in workers, other: the rest of the tasks' time: probes and the correctness gate, building
  inputs, warm-up calls, the memory pass, output checks;
- parent: everything else (planning, the machine's peaks, writing records, pauses).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable


@dataclass
class Overhead:
    started: float = field(default_factory=time.perf_counter)
    samples_s: float = 0.0
    compile_s: float = 0.0
    worker_start_s: float = 0.0
    task_s: float = 0.0           # time inside workers' tasks (samples and compilation included)
    tasks: int = 0

    def add_task(self, wall_s: float, task_s: float | None, compile_s: float = 0.0) -> None:
        """A task's parent-side wall time, its time inside the worker (None: it died) and the
        part of that the frameworks spent compiling (probes, memory and timing passes)."""
        self.tasks += 1
        inside = wall_s if task_s is None else min(task_s, wall_s)
        self.task_s += inside
        self.worker_start_s += max(0.0, wall_s - inside)
        self.compile_s += min(max(0.0, compile_s), inside)

    def add_timing(self, samples: list[float] | None) -> None:
        self.samples_s += float(sum(samples or ()))

    def add_start(self, seconds: float) -> None:
        """Worker start-ups outside any task's wall time (the reused pool's)."""
        self.worker_start_s += seconds

    def summary(self, wall_s: float | None = None) -> "OverheadSummary":
        wall = time.perf_counter() - self.started if wall_s is None else wall_s
        other = max(0.0, self.task_s - self.samples_s - self.compile_s)
        parent = max(0.0, wall - self.task_s - self.worker_start_s)
        return OverheadSummary(wall_s=wall, samples_s=self.samples_s, compile_s=self.compile_s,
                               worker_start_s=self.worker_start_s, workers_other_s=other,
                               parent_s=parent, tasks=self.tasks)


@dataclass(frozen=True)
class OverheadSummary:
    wall_s: float
    samples_s: float
    compile_s: float
    worker_start_s: float
    workers_other_s: float
    parent_s: float
    tasks: int = 0
    workers_started: int | None = None
    isolation: str = ""

    @property
    def samples_share(self) -> float | None:
        """Samples' share of the wall time without compilation (the issue's yardstick)."""
        rest = self.wall_s - self.compile_s
        return self.samples_s / rest if rest > 0 else None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["samples_share_excluding_compilation"] = self.samples_share
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "OverheadSummary":
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})

    def line(self) -> str:
        def part(seconds: float) -> str:
            share = seconds / self.wall_s if self.wall_s > 0 else 0.0
            return f"{seconds:.1f} s ({share:.0%})"

        share = self.samples_share
        started = "" if self.workers_started is None else \
            f", {self.workers_started} worker(s) started"
        mode = f" ({self.isolation} isolation)" if self.isolation else ""
        return (f"time{mode}: {self.wall_s:.1f} s: samples {part(self.samples_s)}, "
                f"compilation {part(self.compile_s)}, worker start-up "
                f"{part(self.worker_start_s)}, in workers otherwise "
                f"{part(self.workers_other_s)}, parent {part(self.parent_s)}; samples "
                f"{'-' if share is None else f'{share:.0%}'} of the time without compilation"
                f"{started}")


# -- a run directory's figures (benchmarks/harness_overhead.py) -----------------------------------
@dataclass(frozen=True)
class ImplTime:
    """One implementation's share of a run, summed over its records (results.jsonl)."""
    impl: str
    points: int = 0
    ok: int = 0
    wall_s: float = 0.0        # the records' wall_s: the point's time in the parent
    samples_s: float = 0.0     # the sum of its timed samples
    compile_s: float = 0.0     # compile_time_s

    @property
    def samples_share(self) -> float | None:
        """Samples' share of the points' wall time without compilation."""
        rest = self.wall_s - self.compile_s
        return self.samples_s / rest if rest > 0 else None


def impl_times(records: Iterable[dict[str, Any]]) -> list[ImplTime]:
    """Per implementation (in order of first appearance): points, ok points, and the sums of
    wall_s, time_samples_s and compile_time_s over its speed records (raw JSON dicts; missing
    or null fields count as 0)."""
    sums: dict[str, dict[str, float]] = {}
    for data in records:
        if data.get("kind", "speed") != "speed":
            continue
        row = sums.setdefault(str(data.get("impl", "?")),
                              {"points": 0, "ok": 0, "wall_s": 0.0, "samples_s": 0.0,
                               "compile_s": 0.0})
        row["points"] += 1
        row["ok"] += data.get("status") == "ok"
        row["wall_s"] += float(data.get("wall_s") or 0.0)
        row["samples_s"] += float(sum(data.get("time_samples_s") or ()))
        row["compile_s"] += float(data.get("compile_time_s") or 0.0)
    return [ImplTime(impl, int(row.pop("points")), int(row.pop("ok")), **row)
            for impl, row in sums.items()]


def total_time(rows: Iterable[ImplTime]) -> ImplTime:
    rows = list(rows)
    return ImplTime("total", sum(r.points for r in rows), sum(r.ok for r in rows),
                    sum(r.wall_s for r in rows), sum(r.samples_s for r in rows),
                    sum(r.compile_s for r in rows))


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def impl_table(rows: list[ImplTime]) -> list[str]:
    """A plain-text table of impl_times, with a total row."""
    lines = [f"{'impl':20s} {'points':>6s} {'ok':>4s} {'wall s':>8s} {'samples s':>9s} "
             f"{'compile s':>9s} {'samples/(wall-compile)':>22s}"]
    for row in [*rows, total_time(rows)] if rows else []:
        lines.append(f"{row.impl:20s} {row.points:6d} {row.ok:4d} {row.wall_s:8.1f} "
                     f"{row.samples_s:9.1f} {row.compile_s:9.1f} {_share(row.samples_share):>22s}")
    return lines


def breakdown_lines(summary: OverheadSummary | None) -> list[str]:
    """run.json's ``overhead`` block, one part per line (seconds and share of the wall time)."""
    if summary is None:
        return ["no overhead block in run.json (a run written before the harness kept one)"]
    wall = summary.wall_s

    def part(name: str, seconds: float) -> str:
        share = seconds / wall if wall > 0 else 0.0
        return f"  {name:24s} {seconds:8.1f} s  {share:5.0%}"

    mode = summary.isolation or "?"
    started = "?" if summary.workers_started is None else str(summary.workers_started)
    return [f"run wall time {wall:.1f} s, isolation {mode}, {summary.tasks} worker task(s), "
            f"{started} worker(s) started",
            part("timed samples", summary.samples_s),
            part("compilation", summary.compile_s),
            part("worker start-up", summary.worker_start_s),
            part("in workers, otherwise", summary.workers_other_s),
            part("parent", summary.parent_s),
            f"  samples' share of the wall time without compilation: "
            f"{_share(summary.samples_share)}"]
