"""Where a run's wall time went: timed samples, compilation, worker start-up, the rest of the
workers' time, and the parent. Kept by the runner as tasks come back; written to run.json
(``overhead``) and printed as the sweep's last line; ``benchmarks/harness_overhead.py`` reads it.

- samples: the sum of every timed sample of the points measured (the numbers the records hold);
- compilation: the first calls' compilation (``compile_time_s``: first call minus the median);
- worker start-up: starting worker processes and passing tasks and results to and from them
  (a one-shot worker's whole life outside its task; a reused worker's start once);
- in workers, other: the rest of the tasks' time: probes and the correctness gate, building
  inputs, warm-up calls, the memory pass, output checks;
- parent: everything else (planning, the machine's peaks, writing records, pauses).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Overhead:
    started: float = field(default_factory=time.perf_counter)
    samples_s: float = 0.0
    compile_s: float = 0.0
    worker_start_s: float = 0.0
    task_s: float = 0.0           # time inside workers' tasks (samples and compilation included)
    tasks: int = 0

    def add_task(self, wall_s: float, task_s: float | None) -> None:
        """A task's parent-side wall time and its time inside the worker (None: it died)."""
        self.tasks += 1
        inside = wall_s if task_s is None else min(task_s, wall_s)
        self.task_s += inside
        self.worker_start_s += max(0.0, wall_s - inside)

    def add_timing(self, samples: list[float] | None, compile_s: float | None) -> None:
        self.samples_s += float(sum(samples or ()))
        self.compile_s += float(compile_s or 0.0)

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
