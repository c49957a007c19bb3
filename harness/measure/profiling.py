"""One point under a profiler: a Chrome trace (opens in Perfetto) and a per-op table.

torch methods run under ``torch.profiler`` (CPU, plus CUDA activity on a GPU); the trace holds
the ``aten::`` ops and the table is ``key_averages()``. JAX methods run under
``jax.profiler.trace``; its trace is decompressed to ``trace.json`` and the table is computed
from the trace's complete events (self time = duration minus the children on the same thread).
Each profiled call sits in a range named ``attnbench:<point id>:call<i>`` (an NVTX range too
on CUDA), so the calls can be found in the trace and in ``nsys``.
"""

from __future__ import annotations

import csv
import gzip
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from harness.contract.records import Point
from harness.contract.registry import Implementation, device_kind

TRACE_FILE = "trace.json"
OPS_FILE = "ops.csv"


@dataclass(frozen=True)
class OpRow:
    name: str
    calls: int
    self_time_us: float
    total_time_us: float
    share: float          # of the summed self time


def with_shares(rows: Iterable[tuple[str, int, float, float]]) -> list[OpRow]:
    """Rows sorted by self time, each with its share of the total self time."""
    items = [r for r in rows if r[2] > 0 or r[1] > 0]
    total = sum(r[2] for r in items) or 1.0
    out = [OpRow(name, calls, self_us, total_us, self_us / total)
           for name, calls, self_us, total_us in items]
    return sorted(out, key=lambda r: (-r.self_time_us, r.name))


def ops_from_trace(events: list[dict[str, Any]]) -> list[OpRow]:
    """Per-name calls, self and total time of the complete ('X') events of a Chrome trace.

    Self time = an event's duration minus the durations of the events directly nested in it
    on the same (pid, tid).
    """
    by_thread: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    for event in events:
        if event.get("ph") == "X" and "dur" in event and "ts" in event:
            by_thread.setdefault((event.get("pid"), event.get("tid")), []).append(event)
    stats: dict[str, list[float]] = {}
    for thread_events in by_thread.values():
        thread_events.sort(key=lambda e: (float(e["ts"]), -float(e["dur"])))
        stack: list[tuple[float, dict[str, Any], list[float]]] = []  # (end, event, [child time])
        finished: list[tuple[dict[str, Any], float]] = []
        for event in thread_events:
            start, dur = float(event["ts"]), float(event["dur"])
            while stack and stack[-1][0] <= start:
                end, done, child = stack.pop()
                finished.append((done, child[0]))
            if stack:
                stack[-1][2][0] += dur
            stack.append((start + dur, event, [0.0]))
        finished.extend((e, c[0]) for _, e, c in stack)
        for event, child in finished:
            entry = stats.setdefault(str(event.get("name", "")), [0, 0.0, 0.0])
            entry[0] += 1
            entry[1] += max(0.0, float(event["dur"]) - child)
            entry[2] += float(event["dur"])
    return with_shares((name, int(v[0]), v[1], v[2]) for name, v in stats.items())


def write_ops(rows: list[OpRow], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "calls", "self_time_us", "total_time_us", "share"])
        for r in rows:
            writer.writerow([r.name, r.calls, f"{r.self_time_us:.3f}", f"{r.total_time_us:.3f}",
                             f"{r.share:.6f}"])


def call_label(point: Point, index: int) -> str:
    return f"attnbench:{point.point_id}:call{index}"


def profile_torch(impl: Implementation, point: Point, out: Path, *, calls: int, warmup: int,
                  seed: int) -> list[OpRow]:
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    from harness.contract.frameworks import torch_fw

    cuda = device_kind(point.device) == "cuda"
    work = torch_fw.make_workload(impl, point, seed=seed)
    for _ in range(warmup):
        work.setup()
        work.block(work.run())
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for index in range(calls):
            work.setup()
            label = call_label(point, index)
            if cuda:
                torch.cuda.nvtx.range_push(label)
            with record_function(label):
                work.block(work.run())
            if cuda:
                torch.cuda.nvtx.range_pop()
    prof.export_chrome_trace(str(out / TRACE_FILE))
    rows = []
    for avg in prof.key_averages():
        if avg.key.startswith("attnbench:"):
            continue
        self_us = avg.self_device_time_total if cuda and avg.self_device_time_total else \
            avg.self_cpu_time_total
        total_us = avg.device_time_total if cuda and avg.device_time_total else \
            avg.cpu_time_total
        rows.append((avg.key, int(avg.count), float(self_us), float(total_us)))
    return with_shares(rows)


def profile_jax(impl: Implementation, point: Point, out: Path, *, calls: int, warmup: int,
                seed: int) -> list[OpRow]:
    import jax

    from harness.contract.frameworks import jax_fw

    work = jax_fw.make_workload(impl, point, seed=seed)
    for _ in range(max(1, warmup)):   # the first call compiles: never profiled
        work.setup()
        work.block(work.run())
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp):
            for index in range(calls):
                work.setup()
                with jax.profiler.TraceAnnotation(call_label(point, index)):
                    work.block(work.run())
        traces = sorted(Path(tmp).rglob("*.trace.json.gz"))
        if not traces:
            raise RuntimeError("jax.profiler wrote no trace")
        with gzip.open(traces[0], "rb") as src, open(out / TRACE_FILE, "wb") as dst:
            shutil.copyfileobj(src, dst)
    events = json.loads((out / TRACE_FILE).read_text()).get("traceEvents", [])
    return [r for r in ops_from_trace(events) if not r.name.startswith("attnbench:")]


def profile_point(impl: Implementation, point: Point, out: Path, *, calls: int = 3,
                  warmup: int = 2, seed: int = 0) -> list[OpRow]:
    """Profile ``calls`` calls of the point after ``warmup`` untraced ones; writes
    out/trace.json and out/ops.csv and returns the op rows."""
    out.mkdir(parents=True, exist_ok=True)
    if impl.framework == "jax":
        rows = profile_jax(impl, point, out, calls=calls, warmup=warmup, seed=seed)
    else:
        rows = profile_torch(impl, point, out, calls=calls, warmup=warmup, seed=seed)
    write_ops(rows, out / OPS_FILE)
    return rows
